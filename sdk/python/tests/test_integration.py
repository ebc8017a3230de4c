"""Python workers against a real `courier serve` (the debug binary), on SQLite
and PostgreSQL. Skipped when COURIER_BIN is not set (tests/python/run.sh
sets it)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

BIN = os.environ.get("COURIER_BIN")
PG = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
HERE = os.path.dirname(os.path.abspath(__file__))

pytestmark = pytest.mark.skipif(not BIN, reason="COURIER_BIN not set")


class Server:
    def __init__(self, db, tmp, *args):
        self.db = db
        self.tmp = tmp
        self.args = list(args)
        self.proc, self.url = self._start("127.0.0.1:0")

    def _start(self, listen):
        """Starts `courier serve` on `listen`; its process and its URL."""
        end = time.time() + 15
        while True:
            proc = subprocess.Popen(
                [BIN, "serve", "--db", self.db, "--listen", listen, "--demo", "--heartbeat-ms", "200",
                 "--dead-after-ms", "1500", *self.args],
                stdout=subprocess.PIPE, stderr=open(os.path.join(self.tmp, "server.log"), "ab"), text=True)
            line = proc.stdout.readline()
            m = re.search(r"http://\S+", line)
            if m:
                return proc, m.group(0)
            # The port of a process just gone may not be free yet.
            proc.wait()
            assert time.time() < end, f"no address in {line!r}"
            time.sleep(0.2)

    def restart(self, sig, down=0.0):
        """Stops the process with `sig` and starts it again on the same
        port and database, `down` seconds later."""
        self.proc.send_signal(sig)
        self.proc.wait(20)
        time.sleep(down)
        self.proc, url = self._start(self.url.removeprefix("http://"))
        assert url == self.url, (url, self.url)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/api/v1" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def create(self, kind, input=None, **opts):
        s, t = self.call("POST", "/tasks", {"kind": kind, "input": input, **opts})
        assert s in (200, 201, 202), t
        return t

    def task(self, id):
        return self.call("GET", f"/tasks/{id}")[1]

    def until(self, id, state, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            t = self.task(id)
            if t["state"] == state:
                return t
            if t["state"] in ("succeeded", "failed", "cancelled"):
                break  # final: it never will be
            time.sleep(0.05)
        raise AssertionError(f"task {id} never {state}: {t}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_worker(server, tmp, name, target="kinds:w", *args):
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(os.path.join(tmp, f"{name}.log"), "ab")
    return subprocess.Popen([sys.executable, "-m", "courier_worker", "--url", server.url, "--name", name,
                             "--log-level", "DEBUG", *args, target], env=env, stdout=log, stderr=log, cwd=HERE)


def alive_workers(server, *names, timeout=20):
    """Waits until a worker of each name is alive; their rows by name."""
    end = time.time() + timeout
    while time.time() < end:
        _, ex = server.call("GET", "/executors")
        found = {e["name"]: e for e in ex["executors"] if e.get("name") in names and e["state"] == "alive"}
        if len(found) == len(names):
            return found
        time.sleep(0.1)
    raise AssertionError(f"workers {names} never alive: {ex}")


def stop_worker(p):
    if p.poll() is None:
        p.send_signal(signal.SIGCONT)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    """A fresh database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/courier.db"
        return
    schema = "courier_py_" + uuid.uuid4().hex
    subprocess.run(["psql", PG, "-qc", f"CREATE SCHEMA {schema}"], check=True)
    yield PG + ("&" if "?" in PG else "?") + f"options=-c%20search_path%3D{schema}"
    subprocess.run(["psql", PG, "-qc", f"DROP SCHEMA {schema} CASCADE"], check=False)


@pytest.fixture
def server(db, tmp_path):
    s = Server(db, str(tmp_path))
    yield s
    s.stop()


@pytest.fixture
def worker(server, tmp_path):
    p = start_worker(server, str(tmp_path), "py-a")
    end = time.time() + 20
    while time.time() < end:
        s, kinds = server.call("GET", "/kinds")
        if "py.flow" in json.dumps(kinds):
            break
        time.sleep(0.1)
    yield p
    stop_worker(p)


def test_flows_steps_timer_event_and_a_rust_child(server, worker):
    t = server.create("py.flow", {"n": 7})
    server.until(t["id"], "suspended")
    time.sleep(0.5)
    s, _ = server.call("POST", f"/tasks/{t['id']}/events", {"name": "booted", "payload": {"up": True}})
    assert s == 202
    done = server.until(t["id"], "succeeded")
    assert done["output"] == {"ip": "10.0.0.7", "dns": {"ip": "10.0.0.7"}, "boot": {"up": True}}
    # a synchronous request (flow 2) and an async def kind
    s, t = server.call("POST", "/tasks", {"kind": "py.async", "input": {"x": 4}, "wait_ms": 20000})
    assert s == 200 and t["output"] == {"v": 8, "child": {"v": 8}}, t
    _, ex = server.call("GET", "/executors")
    assert any(e.get("language") == "python" and e.get("name") == "py-a" for e in ex["executors"])


def test_retries_and_cancel(server, worker):
    t = server.create("py.flaky", {"fail_times": 2}, max_attempts=3, backoff_ms=10)
    done = server.until(t["id"], "succeeded")
    assert done["output"] == {"attempt": 3} and len(done["errors"]) == 2
    t = server.create("py.flaky", {"fail_times": 5}, max_attempts=2, backoff_ms=10)
    assert server.until(t["id"], "failed")["error"] == "flaky attempt 2"
    t = server.create("py.spin")
    server.until(t["id"], "running")
    server.call("POST", f"/tasks/{t['id']}/cancel", {})
    server.until(t["id"], "cancelled")


def test_timeouts(server, worker):
    t = server.create("py.slow", {"s": 1.5}, timeout_ms=500)
    done = server.until(t["id"], "failed")
    assert done["errors"][0]["code"] == "timeout", done


def test_a_rust_task_spawns_python_kinds(server, worker):
    s, t = server.call("POST", "/tasks", {"kind": "demo.fanout", "input": {"n": 3, "kind": "py.echo", "input": {"k": 1}},
                                          "wait_ms": 20000})
    assert s == 200 and t["output"] == {"children": 3, "outputs": [{"k": 1}] * 3}, t


def test_kill_9_mid_steps_another_worker_takes_over(server, worker, tmp_path):
    log = tmp_path / "steps.log"
    t = server.create("py.steps", {"n": 8, "ms": 250, "log": str(log)})
    end = time.time() + 20
    while time.time() < end and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = log.read_text().splitlines()
    b = start_worker(server, str(tmp_path), "py-b")
    try:
        done = server.until(t["id"], "succeeded", timeout=40)
        assert done["output"] == {"steps": 8}
        lines = log.read_text().splitlines()
        for i in range(8):
            n = lines.count(f"step {i}")
            # completed before the kill: once; the one in flight at most twice
            assert n == 1 or (n == 2 and f"step {i}" not in before), (i, lines)
    finally:
        b.send_signal(signal.SIGTERM)
        b.wait(10)


def test_sigstop_past_the_lease_is_fenced(server, worker, tmp_path):
    log = tmp_path / "steps.log"
    t = server.create("py.steps", {"n": 6, "ms": 300, "log": str(log)})
    server.until(t["id"], "running")
    time.sleep(0.4)
    worker.send_signal(signal.SIGSTOP)
    b = start_worker(server, str(tmp_path), "py-b")
    try:
        done = server.until(t["id"], "succeeded", timeout=40)
        worker.send_signal(signal.SIGCONT)
        time.sleep(2)
        # the woken worker wrote nothing more: the task is as b left it
        assert server.task(t["id"])["executor_id"] == done["executor_id"]
        assert server.task(t["id"])["state"] == "succeeded"
    finally:
        worker.send_signal(signal.SIGCONT)
        b.send_signal(signal.SIGTERM)
        b.wait(10)


def test_a_mixed_fleet_serves_one_queue(db, tmp_path):
    """The Rust executor of `courier serve --demo` and a Python worker both
    run `demo.steps` from the queue `default`: both do work, and every task
    runs once (each step's line written once)."""
    server = Server(db, str(tmp_path), "--capacity", "2", "--demo-log-dir", str(tmp_path))
    p = start_worker(server, str(tmp_path), "py-fleet", "fleet:w")
    try:
        alive_workers(server, "py-fleet")
        logs = [tmp_path / f"fleet-{i}.log" for i in range(12)]
        ids = [server.create("demo.steps", {"n": 2, "ms": 150, "log": str(log)})["id"] for log in logs]
        done = [server.until(id, "succeeded", timeout=40) for id in ids]
        for t, log in zip(done, logs):
            assert t["output"] == {"steps": 2}, t
            assert log.read_text().splitlines() == ["step 0", "step 1"], (t["id"], log.read_text())
        _, ex = server.call("GET", "/executors")
        python = {e["id"] for e in ex["executors"] if e.get("language") == "python"}
        rust = {e["id"] for e in ex["executors"] if e.get("language") is None}
        ran = [t["executor_id"] for t in done]
        assert any(e in python for e in ran) and any(e in rust for e in ran), (ran, python, rust)
    finally:
        stop_worker(p)
        server.stop()


def test_a_queue_limit_holds_for_python_kinds(server, tmp_path):
    """`concurrency` 1 on a queue served by two Python workers (capacity 8
    each): its tasks run one at a time, never two at once."""
    s, q = server.call("PUT", "/queues/solo", {"concurrency": 1})
    assert s == 200 and q["concurrency"] == 1, q
    ws = [start_worker(server, str(tmp_path), f"py-solo-{i}", "kinds:w", "--queues", "solo") for i in range(2)]
    try:
        alive_workers(server, "py-solo-0", "py-solo-1")
        log = tmp_path / "intervals.log"
        ids = [server.create("py.interval", {"log": str(log), "ms": 250}, queue="solo")["id"] for _ in range(4)]
        for id in ids:
            server.until(id, "succeeded", timeout=30)
        lines = [l.split() for l in log.read_text().splitlines()]
        assert [w for w, _ in lines] == ["start", "end"] * 4, lines
        times = [float(t) for _, t in lines]
        assert times == sorted(times), lines
    finally:
        for p in ws:
            stop_worker(p)


def test_a_schedule_of_a_python_kind(server, worker):
    """A schedule (DESIGN, Schedules) of a Python kind, every second: its
    slots make tasks the worker runs."""
    s, sch = server.call("PUT", "/schedules/py-tick", {"cron": "* * * * * *", "kind": "py.echo", "input": {"tick": 1}})
    assert s == 201, sch
    end = time.time() + 20
    while time.time() < end:
        _, page = server.call("GET", "/tasks?schedule=py-tick&state=succeeded&fields=all")
        if len(page["tasks"]) >= 2:
            break
        time.sleep(0.2)
    assert len(page["tasks"]) >= 2, page
    for t in page["tasks"]:
        assert t["kind"] == "py.echo" and t["schedule"] == "py-tick" and t["output"] == {"tick": 1}, t
    assert server.call("DELETE", "/schedules/py-tick")[0] == 204


def test_the_web_node_restarts_under_a_running_task(server, worker, tmp_path, db):
    """The `courier serve` a worker talks to is stopped mid-task and started
    again on the same port and database: the running task still finishes,
    at most its step in flight runs twice, and the tasks waiting meanwhile
    all run. Both ways over the two runs: on SQLite a SIGKILL and 2.5 s
    down (past the worker's lease and `--dead-after-ms`: the worker drops
    its run and registers again, the task is taken over and replayed); on
    PostgreSQL a SIGTERM and a restart at once (the worker keeps its lease
    and its run, retrying its writes)."""
    sig, down = (signal.SIGKILL, 2.5) if db.startswith("sqlite") else (signal.SIGTERM, 0.0)
    log = tmp_path / "steps.log"
    t = server.create("py.steps", {"n": 8, "ms": 200, "log": str(log)})
    end = time.time() + 20
    while time.time() < end and (not log.exists() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.05)
    waiting = [server.create("py.echo", {"i": i}, delay_ms=300)["id"] for i in range(3)]
    server.restart(sig, down)
    after = server.create("py.echo", {"after": True})["id"]
    done = server.until(t["id"], "succeeded", timeout=40)
    assert done["output"] == {"steps": 8}
    lines = log.read_text().splitlines()
    counts = [lines.count(f"step {i}") for i in range(8)]
    assert all(n in (1, 2) for n in counts) and counts.count(2) <= 1, lines
    for id in waiting + [after]:
        server.until(id, "succeeded", timeout=20)
    assert worker.poll() is None, "the worker exited"
