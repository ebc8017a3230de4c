"""The worker protocol's HTTP calls (standard library only)."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any, Optional, Tuple


class ApiError(Exception):
    """An answer the worker cannot go on from (not 2xx, 404, 409 or 410)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Api:
    """Calls one web node's `/api/v1`."""

    def __init__(self, url: str, token: Optional[str] = None) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"url {url!r}: expected http://HOST:PORT")
        self.scheme = u.scheme
        self.netloc = u.netloc
        self.prefix = u.path.rstrip("/") + "/api/v1"
        self.token = token

    def call(
        self, method: str, path: str, body: Any = None, timeout: float = 30.0
    ) -> Tuple[int, Any]:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.netloc, timeout=timeout)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
        return resp.status, parsed
