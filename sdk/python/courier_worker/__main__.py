"""`python -m courier_worker --url URL [--token T] [--queues a,b] [--capacity N] module:attribute`"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ._worker import Worker


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(prog="python -m courier_worker", description="Run the courier Worker named by module:attribute.")
    p.add_argument("target", help="module:attribute of a courier_worker.Worker")
    p.add_argument("--url", default=os.environ.get("COURIER_URL"), help="the web node (default $COURIER_URL)")
    p.add_argument("--token", default=os.environ.get("COURIER_API_TOKEN"), help="bearer token (default $COURIER_API_TOKEN)")
    p.add_argument("--queues", default=None, help="comma-separated queues (overrides the Worker's)")
    p.add_argument("--capacity", type=int, default=None, help="tasks run at once (overrides the Worker's)")
    p.add_argument("--name", default=None, help="the worker's name")
    p.add_argument("--log-level", default=os.environ.get("COURIER_LOG", "INFO"))
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module, _, attr = a.target.partition(":")
    if not attr:
        p.error("target must be module:attribute")
    sys.path.insert(0, os.getcwd())
    w = getattr(importlib.import_module(module), attr)
    if not isinstance(w, Worker):
        p.error(f"{a.target} is not a courier_worker.Worker")
    if a.url:
        from ._http import Api

        w.api = Api(a.url, a.token if a.token is not None else w.api.token)
    elif a.token:
        w.api.token = a.token
    if a.queues:
        w.queues = [q.strip() for q in a.queues.split(",") if q.strip()]
    if a.capacity:
        w.capacity = a.capacity
    if a.name:
        w.name = a.name
    w.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
