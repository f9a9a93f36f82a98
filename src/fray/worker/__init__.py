"""The fray worker process: leases tasks, runs them in executor processes, hosts actors.

- ``worker``: ``Worker``, the process's main object (lease loop, slots, reports, heartbeats);
- ``service``: the ``fray.v1.FrayWorker`` Connect service (direct tasks, actor calls, /healthz);
- ``executor``: what runs inside an executor or actor process (kept light: a forkserver child);
- ``actor_host``: the actors this worker hosts, each in a process of its own.

Imports ``fray.wire`` only (executors hand nested work to ``fray.job``'s default context).
"""
