#!/usr/bin/env python3
"""A Python worker beside courier's Rust executor, in one run (issue 26, point 4).

One release `courier serve --demo` on a fresh SQLite file (its Rust executor
runs the demo kinds) and one Python worker process (`courier_worker`, capacity
16 threads) that runs `py.noop` and `py.steps`, both on queue `default`:

- throughput: 2,000 no-op tasks created through the batch endpoint, then
  drained (the queue's pending + running at 0): `py.noop` on the Python worker
  beside `demo.echo` on the Rust executor, rounds alternated;
- latency: 300 sequential sync waits (`POST /api/v1/tasks` with `wait_ms`),
  p50, `py.noop` beside `demo.echo`;
- one `ctx.step`: sync waits of `py.steps` with 1 and with 101 steps, the
  difference of the medians over 100.

Prints every round and the medians with their spread. Celery's figure is
taken from its own suite run in the same hour (`benches/latency.sh` leaves it
in target/celery/results).

    python3 benches/python-worker.py BIN [ROUNDS]    e.g. target/release/courier 3
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 2000

WORKER = """
import os, sys
from courier_worker import Worker
w = Worker(url=sys.argv[1], queues=["default"], capacity=16)

@w.task("py.noop")
def noop(ctx, input):
    return input

@w.task("py.steps")
def steps(ctx, input):
    for i in range(input["n"]):
        ctx.step(f"s{i}", lambda: i)
    return input["n"]

w.run()
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(api, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def left(api):
    q = [q for q in call(api, "GET", "/queues")["queues"] if q["name"] == "default"]
    return (q[0]["pending"] + q[0]["running"]) if q else 0


def drain(api, kind):
    t0 = time.perf_counter()
    for start in range(0, N, 1000):
        call(api, "POST", "/tasks/batch",
             {"tasks": [{"kind": kind, "input": i} for i in range(start, start + 1000)]})
    while left(api) > 0:
        time.sleep(0.02)
    return N / (time.perf_counter() - t0)


def sync_p50(api, kind, input, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        r = call(api, "POST", "/tasks", {"kind": kind, "input": input, "wait_ms": 30000})
        assert r["state"] == "succeeded", r
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def main():
    venv = os.path.join(ROOT, "target", "pybench")
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", os.path.join(ROOT, "sdk", "python")], check=True)
    tmp = tempfile.mkdtemp()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    server = subprocess.Popen([BIN, "serve", "--demo", "--db", f"sqlite://{tmp}/b.db", "--listen", f"127.0.0.1:{port}"],
                              env={**os.environ, "COURIER_LOG": "error"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()
                break
            except OSError:
                time.sleep(0.1)
        script = os.path.join(tmp, "worker.py")
        open(script, "w").write(WORKER)
        worker = subprocess.Popen([os.path.join(venv, "bin", "python"), script, f"http://127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if any(k.get("kind", k) == "py.noop" if isinstance(k, dict) else k == "py.noop"
                   for k in call(api, "GET", "/kinds").get("kinds", [])):
                break
            time.sleep(0.1)
        # warm-up
        sync_p50(api, "py.noop", 1, 20)
        sync_p50(api, "demo.echo", 1, 20)
        rows = {k: [] for k in ("py_tps", "rust_tps", "py_p50", "rust_p50", "step_us")}
        for r in range(1, ROUNDS + 1):
            py = drain(api, "py.noop")
            rust = drain(api, "demo.echo")
            pyl = sync_p50(api, "py.noop", 1, 300)
            rustl = sync_p50(api, "demo.echo", 1, 300)
            one = sync_p50(api, "py.steps", {"n": 1}, 20)
            many = sync_p50(api, "py.steps", {"n": 101}, 20)
            step = (many - one) / 100 * 1000
            for k, v in zip(rows, (py, rust, pyl, rustl, step)):
                rows[k].append(v)
            print(f"round {r}: no-op tasks/s Python {py:.0f}, Rust {rust:.0f} ({py / rust:.2f}x); "
                  f"sync-wait p50 Python {pyl:.2f} ms, Rust {rustl:.2f} ms ({pyl / rustl:.2f}x); "
                  f"one ctx.step {step:.0f} us", flush=True)
        for k, v in rows.items():
            print(f"{k}: median {statistics.median(v):.2f}, spread {min(v):.2f}-{max(v):.2f}, rounds {[round(x, 2) for x in v]}")
        ratios = [p / r for p, r in zip(rows["py_tps"], rows["rust_tps"])]
        print(f"Python / Rust throughput, per round: median {statistics.median(ratios):.2f}x, spread {min(ratios):.2f}-{max(ratios):.2f}")
        lat = [p / r for p, r in zip(rows["py_p50"], rows["rust_p50"])]
        print(f"Python / Rust sync-wait p50, per round: median {statistics.median(lat):.2f}x, spread {min(lat):.2f}-{max(lat):.2f}")
    finally:
        if worker:
            worker.terminate()
            worker.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
