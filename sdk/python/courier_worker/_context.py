"""A task's context and its replay: the journal by step name, the inbox,
sub-tasks, durable timers, and the unwinding of a run at a suspension."""

from __future__ import annotations

import asyncio
import datetime as _dt
import inspect
import threading
from typing import Any, Callable, Dict, List, Optional, Protocol


class TaskError(Exception):
    """Fails the attempt with this message (retried by `max_attempts`)."""


class Cancelled(BaseException):
    """The task's cancellation was requested: raised inside the task at its
    next `ctx` call. A BaseException, so `except Exception` lets it pass."""


class _Unwind(BaseException):
    """Ends a run without an outcome of its own (internal)."""


class _Suspended(_Unwind):
    """The task was suspended: the run is over, the task waits in the store."""


class _Rerun(_Unwind):
    """What the run waits for came as it suspended: run it again from the top."""


class _Lost(_Unwind):
    """The worker no longer holds the task (fenced, lease lapsed): drop the run."""


class _TimedOut(_Unwind):
    """The attempt ran past its deadline."""


class Transport(Protocol):
    """What a run needs of its worker: one fenced write (see `_worker`)."""

    def write(self, run: "Run", op: str, body: Dict[str, Any]) -> Any: ...


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def parse_time(s: str) -> _dt.datetime:
    """RFC 3339 (as courier writes it: `Z`, up to 9 fraction digits)."""
    s = s.strip().replace("z", "Z")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    if "." in s:
        head, rest = s.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, tz = rest[:i], rest[i:]
        s = f"{head}.{(frac + '000000')[:6]}{tz}"
    t = _dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t


def format_time(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Run:
    """One claim of one task: what its replays share (the journal, the inbox,
    final sub-tasks) and what the worker tells it (cancel, lost)."""

    def __init__(self, claimed: Dict[str, Any]) -> None:
        task = claimed["task"]
        self.task: Dict[str, Any] = task
        self.id: str = task["id"]
        self.epoch: int = claimed["epoch"]
        self.journal: Dict[str, Dict[str, Any]] = {s["name"]: s for s in claimed.get("journal") or []}
        self.events: List[Dict[str, Any]] = list(claimed.get("events") or [])
        self.children: Dict[str, Dict[str, Any]] = {c["id"]: c for c in claimed.get("children") or []}
        d = claimed.get("deadline")
        self.deadline: Optional[_dt.datetime] = parse_time(d) if d else None
        self.cancelled = threading.Event()
        if task.get("cancel_requested"):
            self.cancelled.set()
        self.lost = threading.Event()

    def absorb(self, events: List[Dict[str, Any]], children: List[Dict[str, Any]]) -> None:
        """The inbox and final sub-tasks as a woken suspension gave them."""
        seen = {e["seq"] for e in self.events}
        self.events.extend(e for e in events if e["seq"] not in seen)
        self.events.sort(key=lambda e: e["seq"])
        for c in children:
            self.children[c["id"]] = c

    def max_seq(self) -> int:
        return max((e["seq"] for e in self.events), default=0)


class Child:
    """A sub-task spawned by this run."""

    def __init__(self, ctx: "Context", task: Dict[str, Any]) -> None:
        self._ctx = ctx
        self.id: str = task["id"]
        self.kind: str = task["kind"]

    def result(self) -> Any:
        """The sub-task's output; suspends this task until it ends. A failed
        or cancelled sub-task raises `TaskError`."""
        return self._ctx._child_result(self.id)


FINAL = ("succeeded", "failed", "cancelled")


class Context:
    """What a task's code uses: `ctx.step`, `ctx.sleep`, `ctx.wait_event`,
    `ctx.spawn`, `ctx.progress`. Each run (a replay from the top) gets a new
    one."""

    def __init__(self, run: Run, transport: Transport) -> None:
        self._run = run
        self._t = transport
        self._steps_used: set = set()
        self._next_spawn = 0
        self._next_timer = 0
        self._taken: set = set()

    # -- what the task is -------------------------------------------------
    @property
    def id(self) -> str:
        return self._run.id

    @property
    def kind(self) -> str:
        return self._run.task["kind"]

    @property
    def input(self) -> Any:
        return self._run.task.get("input")

    @property
    def attempt(self) -> int:
        return int(self._run.task.get("attempts") or 1)

    @property
    def is_cancelled(self) -> bool:
        return self._run.cancelled.is_set()

    # -- internals ----------------------------------------------------------
    def _check(self) -> None:
        r = self._run
        if r.lost.is_set():
            raise _Lost()
        if r.cancelled.is_set():
            raise Cancelled()
        if r.deadline is not None and utcnow() >= r.deadline:
            raise _TimedOut()

    def _write(self, op: str, body: Dict[str, Any]) -> Any:
        body = dict(body)
        body["epoch"] = self._run.epoch
        return self._t.write(self._run, op, body)

    def _suspend(self, **wait: Any) -> None:
        wait["seen_seq"] = self._run.max_seq()
        if self._run.deadline is not None:
            wait["deadline"] = format_time(self._run.deadline)
        answer = self._write("suspend", wait)
        if answer.get("suspended"):
            raise _Suspended()
        self._run.absorb(answer.get("events") or [], answer.get("children") or [])
        raise _Rerun()

    # -- the API of task code --------------------------------------------------
    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Runs `fn` once and journals its JSON result; a replay returns the
        journaled result instead. Step names are unique within a run."""
        self._check()
        if not name or len(name.encode()) > 200:
            raise TaskError(f"step name {name!r}: must be 1 to 200 bytes")
        if name in self._steps_used:
            raise TaskError(
                f"step name {name!r} is used twice in this run: each step needs a name of its own"
            )
        self._steps_used.add(name)
        done = self._run.journal.get(name)
        if done is not None and done.get("state") == "succeeded":
            return done.get("output")
        started = format_time(utcnow())
        try:
            out = fn()
        except TaskError as e:
            self._write("steps", {"name": name, "state": "failed", "error": str(e), "started_at": started})
            raise
        self._write("steps", {"name": name, "state": "succeeded", "output": out, "started_at": started})
        self._run.journal[name] = {"name": name, "state": "succeeded", "output": out}
        return out

    def _due(self, prefix: str, seconds: float) -> _dt.datetime:
        n = self._next_timer
        self._next_timer += 1
        due = self.step(
            f"{prefix}.{n}", lambda: format_time(utcnow() + _dt.timedelta(seconds=seconds))
        )
        return parse_time(due)

    def sleep(self, seconds: float) -> None:
        """A durable sleep: the task is `suspended` on a timer kept in the
        database (no thread held), and replays past it when it is due."""
        due = self._due("courier.sleep", seconds)
        self._check()
        if utcnow() >= due:
            return
        self._suspend(until=format_time(due))

    def wait_event(self, name: str, timeout: Optional[float] = None) -> Any:
        """The payload of the next event `name` (each event once per run);
        with `timeout` (seconds), `None` when it passes first."""
        deadline = self._due("courier.deadline", timeout) if timeout is not None else None
        self._check()
        for e in self._run.events:
            if e["name"] == name and e["seq"] not in self._taken:
                self._taken.add(e["seq"])
                return e.get("payload")
        if deadline is not None and utcnow() >= deadline:
            return None
        wait: Dict[str, Any] = {"event": name}
        if deadline is not None:
            wait["until"] = format_time(deadline)
        self._suspend(**wait)

    def spawn(self, kind: str, input: Any = None, **options: Any) -> Child:
        """Spawns a sub-task of any kind (Rust or not); queue options as
        keywords (`queue`, `priority`, `delay_ms`, `max_attempts`, ...)."""
        self._check()
        seq = self._next_spawn
        self._next_spawn += 1
        body = {"seq": seq, "kind": kind, "input": input}
        body.update({k: v for k, v in options.items() if v is not None})
        task = self._write("spawn", body)
        if task.get("state") in FINAL:
            self._run.children[task["id"]] = task
        return Child(self, task)

    def _child_result(self, child_id: str) -> Any:
        self._check()
        t = self._run.children.get(child_id)
        if t is None:
            self._suspend(children=[child_id])
            raise AssertionError("unreachable")  # pragma: no cover
        if t["state"] == "succeeded":
            return t.get("output")
        if t["state"] == "failed":
            raise TaskError(f"sub-task {t['id']} ({t['kind']}) failed: {t.get('error') or ''}")
        raise TaskError(f"sub-task {t['id']} ({t['kind']}) was cancelled")

    def join_all(self, children: List[Child]) -> List[Any]:
        """Every child's output, in order; suspends once for all of them."""
        self._check()
        open_ = [c.id for c in children if c.id not in self._run.children]
        if open_:
            self._suspend(children=open_)
        return [c.result() for c in children]

    def progress(self, value: Any) -> None:
        """Records a progress value (shown with the task)."""
        self._check()
        self._write("progress", {"value": value})


class AsyncContext:
    """The context of an `async def` task: the same calls, awaited (the HTTP
    writes run off the event loop)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    async def step(self, name: str, fn: Callable[[], Any]) -> Any:
        c = self._ctx
        c._check()
        if name in c._steps_used or not name:
            return c.step(name, fn)  # raises the same error
        done = c._run.journal.get(name)
        if done is not None and done.get("state") == "succeeded":
            c._steps_used.add(name)
            return done.get("output")
        try:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
        except TaskError as e:
            err = e

            def fail() -> Any:
                raise err

            return await asyncio.to_thread(c.step, name, fail)
        value = result
        return await asyncio.to_thread(c.step, name, lambda: value)

    async def sleep(self, seconds: float) -> None:
        await asyncio.to_thread(self._ctx.sleep, seconds)

    async def wait_event(self, name: str, timeout: Optional[float] = None) -> Any:
        return await asyncio.to_thread(self._ctx.wait_event, name, timeout)

    async def spawn(self, kind: str, input: Any = None, **options: Any) -> Child:
        return await asyncio.to_thread(self._ctx.spawn, kind, input, **options)

    async def result(self, child: Child) -> Any:
        return await asyncio.to_thread(child.result)

    async def progress(self, value: Any) -> None:
        await asyncio.to_thread(self._ctx.progress, value)
