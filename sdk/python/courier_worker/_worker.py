"""The worker: registration, the lease, the claim loop, runs on a thread
pool (plain functions) or an event loop (`async def`), and a clean stop."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from ._context import (
    AsyncContext,
    Cancelled,
    Context,
    Run,
    TaskError,
    _Lost,
    _Rerun,
    _Suspended,
    _TimedOut,
)
from ._http import Api, ApiError

log = logging.getLogger("courier_worker")


class Worker:
    """Serves task kinds to a courier deployment through one web node."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        token: Optional[str] = None,
        queues: Optional[List[str]] = None,
        capacity: int = 16,
        name: Optional[str] = None,
        poll_ms: int = 30000,
        pollers: int = 2,
    ) -> None:
        self.api = Api(url, token)
        self.queues = list(queues or ["default"])
        self.capacity = capacity
        self.name = name or f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
        self.name = "".join(c if c.isalnum() or c in "_.-" else "-" for c in self.name)[:64]
        self.poll_ms = poll_ms
        # Claims in flight at once, each for the slots free when it began
        # (as Temporal's SDKs run several pollers): one claim after another
        # bounded a worker of no-op tasks to one claim's round trip.
        self.pollers = max(1, pollers)
        self._reserved = 0  # slots promised to claims in flight
        self._registering = threading.Lock()
        self.kinds: Dict[str, Callable[..., Any]] = {}
        self.id: Optional[str] = None
        self._renew_every = 2.0
        self._lease = 6.0
        self._lease_ok_at = 0.0  # monotonic time the last good renewal was sent
        self._runs: Dict[str, Run] = {}
        self._lock = threading.Lock()
        self._slot = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # -- registration of kinds -------------------------------------------------
    def task(self, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Registers `fn(ctx, input)` (a plain function or `async def`) as `kind`."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.kinds[kind] = fn
            return fn

        return deco

    # -- the protocol -------------------------------------------------------
    def _register(self) -> None:
        body = {
            "name": self.name,
            "language": "python",
            "kinds": sorted(self.kinds),
            "queues": self.queues,
            "capacity": self.capacity,
            "host": socket.gethostname() or "unknown",
            "pid": os.getpid(),
        }
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status, ans = self.api.call("POST", "/workers", body)
            except OSError as e:
                log.warning("registering: %s; retrying", e)
                self._stop.wait(1.0)
                continue
            if status != 201:
                raise ApiError(status, ans)
            self.id = ans["id"]
            self._renew_every = ans["renew_ms"] / 1000.0
            self._lease = ans["lease_ms"] / 1000.0
            self._lease_ok_at = sent
            log.info("registered as %s (kinds %s, queues %s)", self.id, sorted(self.kinds), self.queues)
            return

    def _lease_lapsed(self) -> bool:
        return time.monotonic() - self._lease_ok_at > self._lease

    def write(self, run: Run, op: str, body: Dict[str, Any]) -> Any:
        """One fenced write about `run`'s task; a lost task unwinds the run."""
        path = f"/workers/{self.id}/tasks/{run.id}/{op}"
        delay = 0.1
        while True:
            if run.lost.is_set() or self._lease_lapsed():
                run.lost.set()
                raise _Lost()
            try:
                status, ans = self.api.call("POST", path, body)
            except OSError as e:
                # The web node restarting: try again while the lease holds.
                log.warning("task %s: %s failed (%s); retrying", run.id, op, e)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if status in (200, 201, 204):
                return ans if ans is not None else {}
            if status in (404, 409, 410):
                # Fenced, this worker gone, or the task gone (retention).
                run.lost.set()
                raise _Lost()
            if status in (500, 503):
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if status == 422:
                msg = (ans or {}).get("error", {}).get("message", str(ans)) if isinstance(ans, dict) else str(ans)
                raise TaskError(msg)
            raise ApiError(status, ans)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._renew_every):
            self._renew_once()

    def _renew_once(self) -> None:
        wid = self.id
        with self._lock:
            running = [{"task_id": r.id, "epoch": r.epoch} for r in self._runs.values()]
        sent = time.monotonic()
        try:
            status, ans = self.api.call("POST", f"/workers/{wid}/renew", {"running": running}, timeout=5)
        except OSError as e:
            log.warning("renewing the lease failed: %s", e)
            self._check_lease()
            return
        if status == 200:
            self._lease_ok_at = sent
            with self._lock:
                for tid in ans.get("cancel") or []:
                    r = self._runs.get(tid)
                    if r is not None:
                        r.cancelled.set()
                for tid in ans.get("lost") or []:
                    r = self._runs.get(tid)
                    if r is not None:
                        r.lost.set()
        elif status in (404, 410):
            # 410: declared dead or stopped; 404: its row is gone.
            log.warning("this worker was declared dead: stopping its runs and registering again")
            self._lose_all()
            self._register_again(wid)
        else:
            log.warning("renewing the lease: HTTP %s %s", status, ans)
            self._check_lease()

    def _check_lease(self) -> None:
        if self._lease_lapsed():
            log.warning("the lease lapsed: stopping every run")
            self._lose_all()

    def _lose_all(self) -> None:
        with self._lock:
            for r in self._runs.values():
                r.lost.set()

    # -- runs ---------------------------------------------------------------------
    def _execute(self, run: Run) -> None:
        """Runs the task from the top until it ends, suspends or is lost."""
        fn = self.kinds[run.task["kind"]]
        try:
            while True:
                ctx = Context(run, self)
                try:
                    if inspect.iscoroutinefunction(fn):
                        assert self._loop is not None
                        fut = asyncio.run_coroutine_threadsafe(fn(AsyncContext(ctx), ctx.input), self._loop)
                        out = fut.result()
                    else:
                        out = fn(ctx, ctx.input)
                except _Rerun:
                    continue
                except _Suspended:
                    log.debug("task %s suspended", run.id)
                    return
                except _Lost:
                    log.warning("task %s: this worker lost it; run dropped", run.id)
                    return
                except _TimedOut:
                    self._finish(run, {"outcome": "failed", "code": "timeout",
                                       "error": f"timeout: attempt {ctx.attempt} ran past its deadline"})
                    return
                except Cancelled:
                    self._finish(run, {"outcome": "cancelled"})
                    return
                except TaskError as e:
                    self._finish(run, {"outcome": "failed", "error": str(e) or "failed"})
                    return
                except Exception as e:  # noqa: BLE001 - any error fails the attempt
                    log.warning("task %s raised: %s", run.id, "".join(traceback.format_exception_only(type(e), e)).strip())
                    self._finish(run, {"outcome": "failed", "error": f"{type(e).__name__}: {e}"})
                    return
                if run.deadline is not None and time.time() > run.deadline.timestamp():
                    self._finish(run, {"outcome": "failed", "code": "timeout",
                                       "error": f"timeout: attempt {ctx.attempt} ran past its deadline"})
                    return
                self._finish(run, {"outcome": "succeeded", "output": out})
                return
        finally:
            with self._lock:
                self._runs.pop(run.id, None)
                self._slot.notify_all()

    def _finish(self, run: Run, body: Dict[str, Any]) -> None:
        body["epoch"] = run.epoch
        try:
            t = self.write(run, "finish", body)
            log.info("task %s %s", run.id, t.get("state"))
        except _Lost:
            log.warning("task %s: lost before its end was recorded; result dropped", run.id)
        except (TaskError, ApiError) as e:
            # An output the server refuses: fail the attempt saying why.
            self.write(run, "finish", {"epoch": run.epoch, "outcome": "failed", "error": f"courier refused the result: {e}"})

    def _start(self, claimed: Dict[str, Any]) -> None:
        run = Run(claimed)
        with self._lock:
            self._runs[run.id] = run
        log.debug("claimed task %s (%s), epoch %s", run.id, run.task["kind"], run.epoch)
        assert self._pool is not None
        self._pool.submit(self._execute, run)

    # -- the loop -------------------------------------------------------------
    def stop(self) -> None:
        """Asks `run` to return: running tasks are handed back."""
        self._stop.set()
        with self._lock:
            self._slot.notify_all()

    def run(self) -> None:
        """Blocks; SIGTERM or SIGINT hands running tasks back and returns."""
        if not self.kinds:
            raise ValueError("no task kind registered: use @worker.task(kind)")
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self._register()
        if self._stop.is_set():
            return
        self._pool = ThreadPoolExecutor(self.capacity, thread_name_prefix="courier-task")
        if any(inspect.iscoroutinefunction(f) for f in self.kinds.values()):
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="courier-async", daemon=True).start()
        renew = threading.Thread(target=self._renew_loop, name="courier-renew", daemon=True)
        renew.start()
        claims = [
            threading.Thread(target=self._claim_loop, name=f"courier-claim-{i}", daemon=True)
            for i in range(self.pollers)
        ]
        for c in claims:
            c.start()
        while not self._stop.wait(0.2):
            pass
        self._shutdown(claims)

    def _claim_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            with self._lock:
                while len(self._runs) + self._reserved >= self.capacity and not self._stop.is_set():
                    self._slot.wait(1.0)
                free = self.capacity - len(self._runs) - self._reserved
                self._reserved += free
            try:
                backoff = self._claim(free, backoff)
            finally:
                with self._lock:
                    self._reserved -= free
                    self._slot.notify_all()

    def _claim(self, free: int, backoff: float) -> float:
        """One claim for `free` slots; gives the backoff for the next."""
        if self._stop.is_set():
            return backoff
        wid = self.id
        if self._lease_lapsed():
            self._register_again(wid)
            return backoff
        try:
            status, ans = self.api.call(
                "POST", f"/workers/{wid}/claim", {"max": free, "wait_ms": self.poll_ms},
                timeout=self.poll_ms / 1000.0 + 15,
            )
        except OSError as e:
            log.warning("claiming failed: %s; retrying", e)
            self._stop.wait(backoff)
            return min(backoff * 2, 2.0)
        if status == 200:
            for c in ans.get("tasks") or []:
                if self._stop.is_set() or wid != self.id:
                    self._release(Run(c), wid)
                else:
                    self._start(c)
        elif status in (404, 410):
            if not self._stop.is_set():
                self._register_again(wid)
        elif status != 204:
            log.warning("claiming: HTTP %s %s", status, ans)
            self._stop.wait(1.0)
        return 0.1

    def _register_again(self, wid: Optional[str]) -> None:
        """The worker `wid` lost its lease or was declared dead: its runs
        are dropped and it registers anew, once, whichever poller saw it."""
        with self._registering:
            if wid != self.id or self._stop.is_set():
                return  # another poller did it already
            self._lose_all()
            self._register()

    def _release(self, run: Run, wid: Optional[str]) -> None:
        try:
            self.api.call("POST", f"/workers/{wid}/tasks/{run.id}/release", {"epoch": run.epoch}, timeout=5)
        except OSError as e:
            log.warning("handing task %s back failed: %s", run.id, e)

    def _shutdown(self, claims: List[threading.Thread]) -> None:
        log.info("stopping: handing running tasks back")
        with self._lock:
            runs = list(self._runs.values())
        for r in runs:
            r.lost.set()
            self._release(r, self.id)
        try:
            self.api.call("DELETE", f"/workers/{self.id}", timeout=5)
        except OSError as e:
            log.warning("deregistering failed: %s", e)
        for c in claims:
            c.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        log.info("stopped")
