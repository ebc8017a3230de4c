"""courier-worker: run courier task kinds in Python.

    from courier_worker import Worker, TaskError

    w = Worker(url="http://127.0.0.1:8080", queues=["default"], capacity=16)

    @w.task("py.hello")
    def hello(ctx, input):
        return {"hello": ctx.step("greet", lambda: input["name"])}

    w.run()
"""

from ._context import AsyncContext, Cancelled, Child, Context, TaskError
from ._http import ApiError
from ._worker import Worker

__all__ = ["Worker", "Context", "AsyncContext", "Child", "TaskError", "Cancelled", "ApiError"]
__version__ = "0.1.0"
