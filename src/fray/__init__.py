"""fray: run plain Python functions on a thread pool, on Ray, or on fray's own controller/workers.

Public API:
- ``fray.job``: ``create_job_ctx(...)`` and the ``JobContext`` API (put/get/run/wait/create_actor);
- ``fray.v2``: the cluster API (jobs, worker pools, named actors), on local, Ray backends;
- ``fray.errors``: the exceptions fray raises;
- the ``fray`` command (``fray.cli``): ``fray controller``, ``fray worker``, ``fray status``,
  ``fray demo``.

fray's own service, one package per process: ``fray.controller``, ``fray.worker``,
``fray.client`` (``FrayContext``), and ``fray.wire``, what they share on the wire.
``fray.local_cluster`` starts a controller and workers on loopback. ``docs/design.md`` has the map.
"""

__version__ = "0.1.0"
