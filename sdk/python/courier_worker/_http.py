"""The worker protocol's HTTP calls (standard library only)."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any, Optional, Tuple

# A kept-alive connection the server closed while it sat idle: the request
# never reached the server, so it is sent once more on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class ApiError(Exception):
    """An answer the worker cannot go on from (not 2xx, 404, 409 or 410)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Api:
    """Calls one web node's `/api/v1`, over one kept-alive connection per
    thread (a new TCP connection a call cost the worker and the server more
    than the call itself: a no-op task is a claim's share and a finish)."""

    def __init__(self, url: str, token: Optional[str] = None) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"url {url!r}: expected http://HOST:PORT")
        self.scheme = u.scheme
        self.netloc = u.netloc
        self.prefix = u.path.rstrip("/") + "/api/v1"
        self.token = token
        self._local = threading.local()

    def _connection(self, timeout: float) -> Tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it was used before."""
        conn: Optional[http.client.HTTPConnection] = getattr(self._local, "conn", None)
        reused = conn is not None
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.netloc, timeout=timeout)
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, reused

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Closes this thread's connection (others close with their threads)."""
        self._drop()

    def call(
        self, method: str, path: str, body: Any = None, timeout: float = 30.0
    ) -> Tuple[int, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        while True:
            conn, reused = self._connection(timeout)
            try:
                conn.request(method, self.prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except _STALE:
                self._drop()
                if reused:
                    continue
                raise
            except (OSError, http.client.HTTPException):
                self._drop()
                raise
            if resp.will_close:
                self._drop()
            break
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
        return resp.status, parsed
