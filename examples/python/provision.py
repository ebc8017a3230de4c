"""A provisioning workflow in Python that calls Rust kinds.

    courier serve --demo &                       # Rust kinds: demo.provision.dns, ...
    pip install ./sdk/python
    python -m courier_worker --url http://127.0.0.1:8080 examples.python.provision:w
    # or: cd examples/python && python -m courier_worker --url http://127.0.0.1:8080 provision:w
    curl -s localhost:8080/api/v1/tasks -H 'content-type: application/json' \\
         -d '{"kind": "py.provision", "input": {"host": "web-7"}}'
    curl -s localhost:8080/api/v1/tasks/ID/events -H 'content-type: application/json' \\
         -d '{"name": "booted", "payload": {"uptime_s": 3}}'
"""

import hashlib
import os

from courier_worker import TaskError, Worker

w = Worker(url=os.environ.get("COURIER_URL", "http://127.0.0.1:8080"), queues=["default"], capacity=16)


def allocate(host: str) -> str:
    """Picks an address (a real one would ask an IPAM); journaled, so it runs once."""
    n = int(hashlib.sha256(host.encode()).hexdigest(), 16) % 250 + 2
    return f"10.0.0.{n}"


@w.task("py.provision")
def provision(ctx, input):
    host = input.get("host")
    if not host:
        raise TaskError("input.host is required")
    ip = ctx.step("allocate", lambda: allocate(host))
    # Rust kinds of `courier serve --demo`, in parallel.
    dns = ctx.spawn("demo.provision.dns", {"host": host, "ip": ip})
    dhcp = ctx.spawn("demo.provision.dhcp", {"host": host, "ip": ip})
    cert = ctx.spawn("demo.provision.certificate", {"host": host})
    ctx.progress({"stage": "network"})
    results = ctx.join_all([dns, dhcp, cert])
    ctx.sleep(1.0)  # a durable timer: let DNS propagate
    ctx.progress({"stage": "waiting for boot"})
    boot = ctx.wait_event("booted", timeout=1800)
    if boot is None:
        raise TaskError(f"{host} did not boot within 30 minutes")
    return {"host": host, "ip": ip, "network": results, "boot": boot}


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    w.run()
