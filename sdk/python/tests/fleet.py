"""A Python worker of a kind the Rust executor of `courier serve --demo`
runs too (a mixed fleet serving one queue): `demo.steps`, as the demo
defines it (N durable steps of M ms each, each appending `step I` to the
file `log`)."""

import os
import time

from courier_worker import Worker

w = Worker(url=os.environ.get("COURIER_URL", "http://127.0.0.1:8080"), capacity=8, poll_ms=10000)


@w.task("demo.steps")
def steps(ctx, input):
    for i in range(input["n"]):
        def work(i=i):
            time.sleep(input["ms"] / 1000.0)
            if input.get("log"):
                with open(input["log"], "a") as f:
                    f.write(f"step {i}\n")
            return i
        ctx.step(f"step-{i}", work)
    return {"steps": input["n"]}
