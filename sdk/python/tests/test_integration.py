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
    def __init__(self, db, tmp):
        self.db = db
        self.proc = subprocess.Popen(
            [BIN, "serve", "--db", db, "--listen", "127.0.0.1:0", "--demo", "--heartbeat-ms", "200",
             "--dead-after-ms", "1500"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "server.log"), "ab"), text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://\S+", line)
        assert m, f"no address in {line!r}"
        self.url = m.group(0)

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
            time.sleep(0.05)
        raise AssertionError(f"task {id} never {state}: {t}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_worker(server, tmp, name):
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(os.path.join(tmp, f"{name}.log"), "ab")
    return subprocess.Popen([sys.executable, "-m", "courier_worker", "--url", server.url, "--name", name,
                             "--log-level", "DEBUG", "kinds:w"], env=env, stdout=log, stderr=log, cwd=HERE)


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, tmp_path):
    if request.param == "sqlite":
        db = f"sqlite://{tmp_path}/courier.db"
        schema = None
    else:
        schema = "courier_py_" + uuid.uuid4().hex
        subprocess.run(["psql", PG, "-qc", f"CREATE SCHEMA {schema}"], check=True)
        db = PG + ("&" if "?" in PG else "?") + f"options=-c%20search_path%3D{schema}"
    s = Server(db, str(tmp_path))
    yield s
    s.stop()
    if schema:
        subprocess.run(["psql", PG, "-qc", f"DROP SCHEMA {schema} CASCADE"], check=False)


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
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


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
