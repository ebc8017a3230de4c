"""Task kinds the integration tests run in worker processes."""

import os
import time

from courier_worker import TaskError, Worker

w = Worker(url=os.environ.get("COURIER_URL", "http://127.0.0.1:8080"), capacity=8, poll_ms=10000)


@w.task("py.echo")
def echo(ctx, input):
    return input


@w.task("py.flow")
def flow(ctx, input):
    ip = ctx.step("allocate", lambda: "10.0.0.%d" % input["n"])
    child = ctx.spawn("demo.echo", {"ip": ip})
    ctx.sleep(0.3)
    boot = ctx.wait_event("booted", timeout=30)
    return {"ip": ip, "dns": child.result(), "boot": boot}


@w.task("py.steps")
def steps(ctx, input):
    for i in range(input["n"]):
        def work(i=i):
            time.sleep(input["ms"] / 1000.0)
            with open(input["log"], "a") as f:
                f.write(f"step {i}\n")
            return i
        ctx.step(f"s{i}", work)
    return {"steps": input["n"]}


@w.task("py.flaky")
def flaky(ctx, input):
    if ctx.attempt <= input["fail_times"]:
        raise TaskError(f"flaky attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@w.task("py.spin")
def spin(ctx, input):
    for i in range(1000):
        ctx.progress(i)
        time.sleep(0.05)
    return "never"


@w.task("py.slow")
def slow(ctx, input):
    time.sleep(input["s"])
    ctx.progress(1)
    return "late"


@w.task("py.async")
async def asynchronous(ctx, input):
    v = await ctx.step("a", lambda: input["x"] * 2)
    child = await ctx.spawn("demo.echo", {"v": v})
    return {"v": v, "child": await ctx.result(child)}


@w.task("py.interval")
def interval(ctx, input):
    """Writes when it starts and ends (a queue limit's test)."""
    with open(input["log"], "a") as f:
        f.write(f"start {time.time():.6f}\n")
    time.sleep(input["ms"] / 1000.0)
    with open(input["log"], "a") as f:
        f.write(f"end {time.time():.6f}\n")
    return {"ms": input["ms"]}
