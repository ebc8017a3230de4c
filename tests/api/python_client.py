"""The API through a client generated from its own document.

Run by tests/api/python_client.sh, which serves `courier serve --demo`,
fetches /api/v1/openapi.json and generates a client from it with
openapi-python-client. This program checks that every operation of the
document is in the generated client, then runs the README's four flows and
a batch through that client, and prints `python client: N passed, M failed`.

    python python_client.py BASE_URL DOCUMENT CLIENT_DIR

CLIENT_DIR is the generated package (imported as `courier_client`).
"""

import json
import pathlib
import re
import sys
import time
import traceback
from uuid import UUID

BASE, DOC, CLIENT = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
sys.path.insert(0, str(CLIENT.parent))

passed, failed = 0, 0


def check(name):
    """Runs the decorated function as one check and counts it."""

    def run(f):
        global passed, failed
        try:
            f()
        except Exception:  # noqa: BLE001 (every failure is counted and shown)
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name}")
        return f

    return run


def expect(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def wait_until(what, f, timeout=20.0):
    """Polls `f` every 50 ms until it returns something truthy; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = f()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# Every operation of the document, as (method, path), against those the
# generated modules send: each module of api/<tag>/ sends one request, its
# `"method"` and `"url"` (a path template, formatted with the parameters).
@check("every operation of the document is in the generated client")
def operations():
    doc = json.loads(DOC.read_text())
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    want = {
        (m, path)
        for path, item in doc["paths"].items()
        for m in item
        if m in methods
    }
    got = set()
    for module in sorted((CLIENT / "api").glob("*/*.py")):
        src = module.read_text()
        m = re.search(r'"method":\s*"(\w+)"', src)
        u = re.search(r'"url":\s*f?"([^"]+)"', src)
        if m and u:
            got.add((m.group(1), u.group(1)))
    missing = sorted(want - got)
    if missing:
        raise AssertionError(
            f"{len(missing)} of {len(want)} operations missing from the generated client: "
            + ", ".join(f"{m.upper()} {p}" for m, p in missing)
        )
    print(f"     {len(want)} operations, all generated")


try:
    from courier_client import Client
    from courier_client.api.events import send_event
    from courier_client.api.tasks import cancel_task, create_task, get_task, list_children
    from courier_client.models import CreateTask, SendEvent, TaskState
    from courier_client.models.kind import Kind
except Exception:  # noqa: BLE001
    failed += 1
    print("FAIL the generated client imports")
    traceback.print_exc(file=sys.stdout)
    print(f"python client: {passed} passed, {failed} failed")
    sys.exit(1)

client = Client(base_url=BASE, raise_on_unexpected_status=True, timeout=30.0)


def kind(name):
    # An enum when the document listed the deployment's kinds, else a string.
    try:
        return Kind(name)
    except (TypeError, ValueError):
        return name


def task(id):
    r = get_task.sync_detailed(id, client=client)
    expect(f"GET task {id}", r.status_code, 200)
    return r.parsed


def until_state(id, state):
    return wait_until(f"task {id} to be {state.value}", lambda: (t := task(id)).state == state and t)


@check("flows 1 + 2: create a task and wait for it (wait_ms)")
def create_and_wait():
    r = create_task.sync_detailed(
        client=client,
        body=CreateTask(kind=kind("demo.echo"), input_={"hello": "world"}, wait_ms=5000),
    )
    expect("status", r.status_code, 200)
    expect("state", r.parsed.state, TaskState.SUCCEEDED)
    expect("output", r.parsed.output, {"hello": "world"})


@check("flow 3: a task waits for an event; the event is its output")
def event():
    r = create_task.sync_detailed(
        client=client, body=CreateTask(kind=kind("demo.await_event"), input_={"name": "booted"})
    )
    expect("create status", r.status_code, 201)
    id = r.parsed.id
    e = send_event.sync_detailed(
        id, client=client, body=SendEvent(name="booted", payload={"ip": "10.0.0.5"})
    )
    expect("event status", e.status_code, 202)
    t = until_state(id, TaskState.SUCCEEDED)
    expect("output", t.output, {"ip": "10.0.0.5"})


@check("flow 3: a long task is cancelled")
def cancel():
    r = create_task.sync_detailed(
        client=client, body=CreateTask(kind=kind("demo.sleep"), input_={"ms": 600000})
    )
    expect("create status", r.status_code, 201)
    id = r.parsed.id
    c = cancel_task.sync_detailed(id, client=client)
    expect("cancel status", c.status_code, 202)
    until_state(id, TaskState.CANCELLED)


@check("flow 4: sub-tasks on the pool, reported back to the parent")
def fanout():
    r = create_task.sync_detailed(
        client=client,
        body=CreateTask(
            kind=kind("demo.fanout"),
            input_={"n": 5, "kind": "demo.echo", "input": 1},
            wait_ms=10000,
        ),
    )
    expect("status", r.status_code, 200)
    expect("state", r.parsed.state, TaskState.SUCCEEDED)
    expect("output", r.parsed.output, {"children": 5, "outputs": [1, 1, 1, 1, 1]})
    children = list_children.sync_detailed(r.parsed.id, client=client)
    expect("children status", children.status_code, 200)
    expect(
        "children",
        [(c.kind, c.state, c.parent_id) for c in children.parsed.tasks],
        [("demo.echo", TaskState.SUCCEEDED, r.parsed.id)] * 5,
    )


@check("a batch: two tasks created in one request, in order")
def batch():
    # Imported here: a client without the batch still runs the flows above.
    from courier_client.api.tasks import create_tasks
    from courier_client.models import BatchEntry, CreateBatch

    r = create_tasks.sync_detailed(
        client=client,
        body=CreateBatch(
            tasks=[
                BatchEntry(kind=kind("demo.echo"), input_=1),
                BatchEntry(kind=kind("demo.sleep"), input_={"ms": 100}, timeout_ms=50),
            ]
        ),
    )
    expect("status", r.status_code, 201)
    tasks = r.parsed.tasks
    expect("kinds", [t.kind for t in tasks], ["demo.echo", "demo.sleep"])
    assert all(isinstance(t.id, UUID) for t in tasks), tasks
    echo = until_state(tasks[0].id, TaskState.SUCCEEDED)
    expect("echo's output", echo.output, 1)
    sleep = until_state(tasks[1].id, TaskState.FAILED)
    expect("the sleep's error code", [e.code for e in sleep.errors], ["timeout"])


print(f"python client: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
