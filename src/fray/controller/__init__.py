"""The fray controller process: the task queue, the worker registry, objects and actors.

The state machine (plain single-threaded Python, no I/O):

- ``state``: ``ControllerState``, the one object the service calls (a façade over the rest);
- ``transitions``: the legal moves of tasks and actors, and what every move updates;
- ``task_lifecycle``, ``actor_lifecycle``: the rules deciding when tasks and actors move;
- ``tasks``, ``workers``, ``objects``, ``finished_log``, ``actors``: the registries;
- ``records``: the records, states and request errors they share;
- ``changes``: what changed since the state was last saved (marked by the registries).

Durable state (``fray controller --state``):

- ``journal``: saves the marked changes with group commit, before the RPCs answer;
- ``store``: the SQLite database (and files beside it for big values); ``rows``: records as
  rows and back;
- ``recovery``: a restart: the saved state put back and reconciled with the workers.

Serving it:

- ``convert``: records to and from protobuf messages;
- ``long_poll``: the signals and wait loop behind the long-polling RPCs;
- ``task_logs``: what tasks printed (GetTaskLogs), bounded, in memory only (not durable);
- ``service``: ``ControllerService``, the ``fray.v1.FrayController`` Connect service over the
  state;
- ``server``: ``ControllerServer``, which serves it with uvicorn (``fray controller``);
- ``dashboard``: ``GET /`` (the dashboard page, ``dashboard.html``), its data
  (``/api/dashboard``), ``/metrics`` and ``/healthz``; ``metrics``: what ``/metrics`` counts.

Imports ``fray.wire`` only; nothing here imports the worker or the client.
"""
