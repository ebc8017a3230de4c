"""Helper of benches/python-worker.sh (issue 26, point 4). Standard library
only, apart from what each part imports itself.

As a worker module (`python -m courier_worker … python_worker_bench:w`, with
sdk/python and benches/ on PYTHONPATH) it serves:

  py.noop    a plain `def` that returns None
  py.steps   {"k": K}: K `ctx.step`s with no-op bodies, then returns K

As a command (`python3 benches/python_worker_bench.py CMD …`) it drives one
measurement and prints one JSON line on stdout; progress goes to stderr.
Every wait has a deadline (`--timeout`) and every HTTP call a socket timeout:
a stuck part fails with a message instead of hanging.

  up URL                      wait until GET /healthz answers 200
  kinds URL KIND…             wait until GET /api/v1/kinds lists every KIND
  throughput URL KIND N       N tasks through POST /api/v1/tasks/batch (1,000 a
                              request), timed from the first create until the
                              queue's `succeeded` count (GET /api/v1/stats, kept
                              as counters: as cheap with 5,000 tasks as with 5)
                              has grown by N
  latency URL KIND N          N sequential POST /api/v1/tasks with wait_ms after
                              --warmup ones, on one keep-alive connection;
                              p50/p90/p99 of create → result
  celery DIR N                Celery's own harness (the peer benchmark copied
                              to DIR, run with DIR/.venv/bin/python): one
                              prefork worker (c=2, rpc backend, as its suites
                              start it), then its `measure throughput
                              --variant persistent+acks_late` (bench.noop_late,
                              a task with acks_late=True)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse


def log(*a: object) -> None:
    print("[pyw]", *a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# the worker's kinds (imported by `python -m courier_worker`)
# ----------------------------------------------------------------------------
try:
    from courier_worker import Worker
except ImportError:  # the driver commands do not need the SDK
    Worker = None  # type: ignore[assignment,misc]

if Worker is not None:
    w = Worker(
        url=os.environ.get("COURIER_URL", "http://127.0.0.1:8080"),
        queues=[q for q in os.environ.get("PYW_QUEUES", "py").split(",") if q],
        capacity=int(os.environ.get("PYW_CAPACITY", "16")),
        pollers=int(os.environ.get("PYW_POLLERS", "2")),
        poll_ms=int(os.environ.get("PYW_POLL_MS", "30000")),
    )

    @w.task("py.noop")
    def noop(ctx, input):  # noqa: A002 - the SDK's signature
        return None

    @w.task("py.steps")
    def steps(ctx, input):  # noqa: A002
        k = int((input or {}).get("k", 0))
        for i in range(k):
            ctx.step(f"s{i}", lambda: None)
        return k


# ----------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------
class Client:
    """One keep-alive connection to a web node (reopened after an error)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        u = urllib.parse.urlsplit(url)
        self.netloc = u.netloc
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: object = None, timeout: float | None = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.netloc, timeout=timeout or self.timeout)
            elif timeout is not None:
                self.conn.timeout = timeout
                if self.conn.sock is not None:
                    self.conn.sock.settimeout(timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed meanwhile: once more.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            except Exception:
                self.conn.close()
                self.conn = None
                raise
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
            return resp.status, parsed
        raise AssertionError("unreachable")


def die(msg: str) -> None:
    log("ERROR:", msg)
    sys.exit(1)


# ----------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------
def cmd_up(a: argparse.Namespace) -> None:
    c = Client(a.url, timeout=2)
    t0 = time.monotonic()
    last = t0
    err: object = None
    while time.monotonic() - t0 < a.timeout:
        try:
            st, body = c.call("GET", "/healthz")
            if st == 200:
                log(f"server {a.url} up after {time.monotonic() - t0:.1f} s")
                return
            err = f"HTTP {st} {body}"
        except OSError as e:
            err = e
        if time.monotonic() - last >= 3:
            log(f"waiting for {a.url}/healthz ({time.monotonic() - t0:.0f}/{a.timeout:.0f} s): {err}")
            last = time.monotonic()
        time.sleep(0.1)
    die(f"no server at {a.url} after {a.timeout:.0f} s: {err}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmd_kinds(a: argparse.Namespace) -> None:
    c = Client(a.url, timeout=5)
    t0 = time.monotonic()
    last = t0
    have: list = []
    while time.monotonic() - t0 < a.timeout:
        if a.pid and not alive(a.pid):
            die(f"the worker (pid {a.pid}) exited before its kinds {a.kinds} were known; see its log")
        try:
            st, body = c.call("GET", "/api/v1/kinds")
            if st == 200:
                have = body.get("kinds") or []
                if all(k in have for k in a.kinds):
                    log(f"kinds {a.kinds} known after {time.monotonic() - t0:.1f} s")
                    return
        except OSError as e:
            have = [f"error: {e}"]
        if time.monotonic() - last >= 3:
            log(f"waiting for kinds {a.kinds} ({time.monotonic() - t0:.0f}/{a.timeout:.0f} s); known: {have}")
            last = time.monotonic()
        time.sleep(0.2)
    die(f"kinds {a.kinds} not known after {a.timeout:.0f} s (known: {have}); did the worker start? see its log")


def queue_counts(c: Client, queue: str) -> dict:
    st, body = c.call("GET", "/api/v1/stats?minutes=1")
    if st != 200:
        die(f"GET /api/v1/stats: HTTP {st} {body}")
    for q in body.get("queues") or []:
        if q.get("queue") == queue:
            return q["states"]
    return {}


def cmd_throughput(a: argparse.Namespace) -> None:
    c = Client(a.url, timeout=60)
    poll = Client(a.url, timeout=10)
    inp = json.loads(a.input)
    base = queue_counts(poll, a.queue)
    base_ok, base_bad = base.get("succeeded", 0), base.get("failed", 0) + base.get("cancelled", 0)
    extra = {"queue": a.queue} if a.queue != "default" else {}
    t0 = time.perf_counter()
    made = 0
    while made < a.n:
        k = min(1000, a.n - made)
        body = {"tasks": [dict(kind=a.kind, input=inp, **extra) for _ in range(k)]}
        st, ans = c.call("POST", "/api/v1/tasks/batch", body)
        if st != 201:
            die(f"POST /api/v1/tasks/batch: HTTP {st} {str(ans)[:300]}")
        made += k
    t_created = time.perf_counter() - t0
    last = time.perf_counter()
    while True:
        s = queue_counts(poll, a.queue)
        done = s.get("succeeded", 0) - base_ok
        bad = s.get("failed", 0) + s.get("cancelled", 0) - base_bad
        now = time.perf_counter()
        if bad > 0:
            die(f"{a.kind}: {bad} tasks failed or were cancelled")
        if done >= a.n:
            break
        if now - t0 > a.timeout:
            die(f"{a.kind}: only {done}/{a.n} succeeded after {a.timeout:.0f} s (counts {s})")
        if now - last >= 2:
            log(f"{a.kind}: {done}/{a.n} succeeded after {now - t0:.1f} s")
            last = now
        time.sleep(a.poll)
    dt = time.perf_counter() - t0
    print(json.dumps({"kind": a.kind, "n": a.n, "created_s": round(t_created, 3), "s": round(dt, 3),
                      "per_s": round(a.n / dt, 1)}), flush=True)


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    k = max(0, -(-len(xs) * p // 100) - 1)  # nearest rank
    return xs[int(k)]


def cmd_latency(a: argparse.Namespace) -> None:
    c = Client(a.url, timeout=a.wait_ms / 1000 + 10)
    inp = json.loads(a.input)
    body = {"kind": a.kind, "input": inp, "wait_ms": a.wait_ms}
    if a.queue != "default":
        body["queue"] = a.queue
    samples = []
    t_start = time.monotonic()
    last = t_start
    for i in range(a.warmup + a.n):
        t0 = time.perf_counter()
        st, ans = c.call("POST", "/api/v1/tasks", body)
        dt = time.perf_counter() - t0
        if st != 200 or not isinstance(ans, dict) or ans.get("state") != "succeeded":
            state = ans.get("state") if isinstance(ans, dict) else ans
            die(f"{a.kind}: request {i}: HTTP {st}, state {state} (not finished within wait_ms={a.wait_ms})")
        if i >= a.warmup:
            samples.append(dt * 1000)
        now = time.monotonic()
        if now - last >= 3:
            log(f"{a.kind}: {i + 1}/{a.warmup + a.n} sync-wait requests ({len(samples)} measured)")
            last = now
        if now - t_start > a.timeout:
            die(f"{a.kind}: {i + 1}/{a.warmup + a.n} requests done after {a.timeout:.0f} s")
    print(json.dumps({"kind": a.kind, "n": a.n, "p50_ms": round(pct(samples, 50), 3),
                      "p90_ms": round(pct(samples, 90), 3), "p99_ms": round(pct(samples, 99), 3),
                      "mean_ms": round(statistics.fmean(samples), 3)}), flush=True)


def cmd_celery(a: argparse.Namespace) -> None:
    """Run inside DIR/.venv: bench.py's Worker and its `measure` client."""
    here = os.path.abspath(a.dir)
    sys.path.insert(0, here)
    os.chdir(here)
    import bench  # the peer harness, unchanged

    # SIGTERM (the shell script's cleanup) unwinds through `finally`, so the
    # Celery worker this starts is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tasks = bench.import_tasks("rpc")
    log("celery: purging queue celerybench")
    tasks.app.control.purge()
    logdir = os.path.join(bench.RUN_DIR, "logs")
    wk = bench.Worker("pyw-prefork", "prefork", a.concurrency, bench.worker_env("rpc"),
                      os.path.join(logdir, "pyw-prefork.log"))
    proc = None
    try:
        wk.start()
        ready = wk.wait_ready(tasks.app, timeout=a.ready_timeout)
        log(f"celery: prefork c={a.concurrency} worker ready after {ready:.1f} s; "
            f"measuring {a.n} bench.noop_late (acks_late) tasks, rpc backend")
        cmd = [sys.executable, os.path.join(here, "bench.py"), "measure", "--backend", "rpc",
               "throughput", "--n", str(a.n), "--variant", "persistent+acks_late"]
        proc = subprocess.Popen(cmd, cwd=here, env=bench.worker_env("rpc"), stdout=subprocess.PIPE)
        t0 = time.monotonic()
        last = t0
        while proc.poll() is None:
            now = time.monotonic()
            if now - t0 > a.timeout:
                proc.kill()
                proc.wait()
                die(f"celery: measure did not end within {a.timeout:.0f} s")
            if now - last >= 5:
                log(f"celery: measuring, {now - t0:.0f} s")
                last = now
            time.sleep(0.2)
        out = proc.stdout.read().decode() if proc.stdout else ""
        if proc.returncode != 0:
            die(f"celery: measure rc={proc.returncode}: {out[-300:]}")
        res = json.loads(out.strip().splitlines()[-1])
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        log("celery: stopping the worker")
        wk.stop(timeout=20)
    print(json.dumps({"n": res["n"], "completed": res["completed"], "s": res["total_s"],
                      "per_s": res["tasks_per_s"], "publish_per_s": res["publish_per_s"]}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("kinds")
    p.add_argument("url")
    p.add_argument("kinds", nargs="+")
    p.add_argument("--pid", type=int, default=0, help="the worker's pid: fail at once when it exits")
    p.add_argument("--timeout", type=float, default=30)
    p = sub.add_parser("throughput")
    p.add_argument("url")
    p.add_argument("kind")
    p.add_argument("n", type=int)
    p.add_argument("--queue", default="default")
    p.add_argument("--input", default="null")
    p.add_argument("--poll", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=600)
    p = sub.add_parser("latency")
    p.add_argument("url")
    p.add_argument("kind")
    p.add_argument("n", type=int)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--queue", default="default")
    p.add_argument("--input", default="null")
    p.add_argument("--wait-ms", type=int, default=30000)
    p.add_argument("--timeout", type=float, default=600)
    p = sub.add_parser("celery")
    p.add_argument("dir")
    p.add_argument("n", type=int)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--ready-timeout", type=float, default=60)
    p.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    {"up": cmd_up, "kinds": cmd_kinds, "throughput": cmd_throughput, "latency": cmd_latency,
     "celery": cmd_celery}[a.cmd](a)


if __name__ == "__main__":
    main()
