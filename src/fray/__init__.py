"""fray: run plain Python functions on a thread pool, on Ray, or on fray's own controller/workers.

- `fray.job`: `create_job_ctx(...)` and the `JobContext` API (put/get/run/wait/create_actor);
- `fray.job.rpc`: the controller, the workers and `FrayContext`;
- the `fray` command: `fray controller`, `fray worker`, `fray status`, `fray demo`.
"""

__version__ = "0.1.0"
