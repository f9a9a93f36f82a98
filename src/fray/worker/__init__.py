"""The fray worker process: leases tasks, runs them in executor processes, hosts actors.

- ``worker``: ``Worker``, the process's main object; it composes the pieces below;
- ``registration``: register, heartbeat, unregister;
- ``leasing``: the LeaseTasks long poll, adaptive prefetch and the held leases;
- ``task_queue``: tasks waiting for a slot; ``slots``: a thread + executor process per slot;
- ``direct_calls``: tasks clients sent straight to a free slot (the direct path);
- ``reporter``: batched ReportResults (results, and the leased tasks a slot started: the
  controller's ASSIGNED -> RUNNING); ``objects``: the ``ctx.put`` object cache (objects
  freed at the controller are dropped, as each LeaseTasks answer says);
- ``results``: the error results the worker makes itself (lost executor, handed back);
- ``actor_host``: the actors this worker hosts, each in a process of its own;
- ``jobs``: job replicas (``JobLaunch``), each a process of its own, tailed and reported
  (``ReportJobs``); ``resources``: what the worker offers (defaults: the machine's cpus, memory);
- ``service``: the ``fray.v1.FrayWorker`` Connect service (direct tasks, actor calls, /healthz,
  /metrics); ``metrics``: what the worker's /metrics counts;
- ``executor``: what runs inside an executor or actor process (kept light: a forkserver child);
  ``capture``: its per-task capture of stdout, stderr and logging (bounded).

Imports ``fray.wire`` and ``fray.common`` (executors hand nested work to ``fray.job``'s default
context); never the controller or the client.
"""
