"""Replay semantics of the context, against a fake transport (no server)."""

import datetime as dt

import pytest

from courier_worker import Cancelled, TaskError
from courier_worker._context import (
    Context,
    Run,
    _Lost,
    _Rerun,
    _Suspended,
    _TimedOut,
    format_time,
    parse_time,
    utcnow,
)


class Fake:
    def __init__(self, suspend_answer=None):
        self.writes = []
        self.suspend_answer = suspend_answer or {"suspended": True}
        self.spawned = 0

    def write(self, run, op, body):
        self.writes.append((op, body))
        if op == "suspend":
            return self.suspend_answer
        if op == "spawn":
            return {"id": f"child-{body['seq']}", "kind": body["kind"], "state": "pending"}
        return {}


def claimed(**kw):
    c = {"task": {"id": "t1", "kind": "py.k", "input": {"a": 1}, "attempts": 1}, "epoch": 7,
         "journal": [], "events": [], "children": []}
    c.update(kw)
    return c


def test_a_step_runs_once_and_replays_from_the_journal():
    run, t = Run(claimed()), Fake()
    calls = []
    ctx = Context(run, t)
    assert ctx.step("a", lambda: calls.append(1) or 41) == 41
    assert t.writes[0][0] == "steps" and t.writes[0][1]["output"] == 41 and t.writes[0][1]["epoch"] == 7
    ctx2 = Context(run, t)  # a replay from the top
    assert ctx2.step("a", lambda: calls.append(1) or 0) == 41
    assert calls == [1]
    # a claim that carries the journal
    run3 = Run(claimed(journal=[{"name": "a", "state": "succeeded", "output": {"x": 2}}]))
    assert Context(run3, t).step("a", lambda: 1 / 0) == {"x": 2}


def test_step_names_are_unique_in_a_run_and_failures_are_journaled():
    ctx, t = Context(Run(claimed()), Fake()), None
    ctx.step("a", lambda: 1)
    with pytest.raises(TaskError):
        ctx.step("a", lambda: 1)
    f = Fake()
    ctx = Context(Run(claimed()), f)

    def boom():
        raise TaskError("nope")

    with pytest.raises(TaskError):
        ctx.step("b", boom)
    assert f.writes[0][1]["state"] == "failed" and f.writes[0][1]["error"] == "nope"


def test_sleep_journals_its_due_time_and_suspends_until_it():
    run, f = Run(claimed()), Fake()
    with pytest.raises(_Suspended):
        Context(run, f).sleep(60)
    step = f.writes[0][1]
    assert step["name"] == "courier.sleep.0"
    assert f.writes[1][0] == "suspend" and f.writes[1][1]["until"] == step["output"]
    # replayed once due: returns
    run.journal["courier.sleep.0"]["output"] = format_time(utcnow() - dt.timedelta(seconds=1))
    Context(run, f).sleep(60)


def test_events_are_taken_once_per_run_oldest_first():
    run = Run(claimed(events=[{"seq": 1, "name": "go", "payload": 1}, {"seq": 3, "name": "go", "payload": 3},
                              {"seq": 2, "name": "x", "payload": 2}]))
    f = Fake()
    ctx = Context(run, f)
    assert ctx.wait_event("go") == 1
    assert ctx.wait_event("go") == 3
    with pytest.raises(_Suspended):
        ctx.wait_event("go")
    assert f.writes[-1] == ("suspend", {"event": "go", "seen_seq": 3, "epoch": 7})
    assert Context(run, f).wait_event("go") == 1  # a new run sees them again


def test_wait_event_with_a_timeout_gives_none_past_its_deadline():
    past = format_time(utcnow() - dt.timedelta(seconds=1))
    run = Run(claimed(journal=[{"name": "courier.deadline.0", "state": "succeeded", "output": past}]))
    assert Context(run, Fake()).wait_event("go", timeout=5) is None


def test_a_woken_suspension_reruns_with_what_came():
    run = Run(claimed())
    f = Fake({"suspended": False, "events": [{"seq": 4, "name": "go", "payload": "p"}], "children": []})
    with pytest.raises(_Rerun):
        Context(run, f).wait_event("go")
    assert Context(run, Fake()).wait_event("go") == "p"


def test_spawns_are_numbered_and_results_suspend_until_final():
    run, f = Run(claimed()), Fake()
    ctx = Context(run, f)
    a, b = ctx.spawn("rust.kind", {"x": 1}, queue="q"), ctx.spawn("py.k", None)
    assert [w[1]["seq"] for w in f.writes] == [0, 1]
    assert f.writes[0][1]["queue"] == "q"
    with pytest.raises(_Suspended):
        a.result()
    assert f.writes[-1][1]["children"] == [a.id]
    run.children[a.id] = {"id": a.id, "kind": "rust.kind", "state": "succeeded", "output": 5}
    run.children[b.id] = {"id": b.id, "kind": "py.k", "state": "failed", "error": "bad"}
    ctx = Context(run, f)
    a, b = ctx.spawn("rust.kind", {"x": 1}), ctx.spawn("py.k", None)
    assert a.result() == 5
    with pytest.raises(TaskError, match="bad"):
        b.result()


def test_cancel_lost_and_deadline_unwind_at_the_next_call():
    run = Run(claimed())
    run.cancelled.set()
    with pytest.raises(Cancelled):
        Context(run, Fake()).step("a", lambda: 1)
    run = Run(claimed())
    run.lost.set()
    with pytest.raises(_Lost):
        Context(run, Fake()).progress(1)
    run = Run(claimed(deadline=format_time(utcnow() - dt.timedelta(seconds=1))))
    with pytest.raises(_TimedOut):
        Context(run, Fake()).step("a", lambda: 1)
    assert issubclass(Cancelled, BaseException) and not issubclass(Cancelled, Exception)


def test_times_as_courier_writes_them():
    t = parse_time("2026-12-07T20:51:31.296208123Z")
    assert t.microsecond == 296208 and t.tzinfo is not None
    assert parse_time(format_time(t)) == t
    assert parse_time("2026-12-07T20:51:31Z").second == 31
