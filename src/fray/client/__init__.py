"""The client side of fray's service: ``FrayContext``, the ``JobContext`` for a controller.

Tasks:
- ``context``: ``FrayContext``, the API, wiring the pieces below together;
- ``futures``: ``FrayFuture`` and ``TaskOptions``;
- ``tasks``: the table of unfinished tasks and the controller's identity (restarts);
- ``routing``: where a task goes (direct or queued: always queued when it asks for resources
  or labels), cancelling and helping it;
- ``submitter``: the thread queuing tasks at the controller in batches (SubmitTasks);
- ``collector``: the thread resolving queued tasks (WatchFinished), and recovery;
- ``no_workers``: the warnings for tasks waiting at a controller that has no worker, or for
  work that no worker offers what it asks for (``unplaceable``);
- ``direct``: the direct path, tasks sent straight to a worker's free slot.

Actors:
- ``actors``: actor handles, creating and killing actors;
- ``actor_calls``: a handle's queue of calls and who sends them;
- ``actor_send``: sending a batch of calls to the actor's worker;
- ``actor_place``: where an actor is (asking the controller);
- ``kicker``: the thread that has lone calls sent that nobody waits for.

Shared: ``connections`` (worker clients, the link handles use, reading Connect errors);
``output``: printing what tasks and actor calls printed (``log_to_driver``); ``task_logs``:
``fray logs``.

Imports ``fray.wire``, ``fray.errors`` and the ``fray.job`` protocol; never the controller or
the worker. Within the package, imports run one way: ``context`` at the top, ``connections``,
``futures`` and ``kicker`` at the bottom.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("FrayContext", "FrayFuture"):
        from fray.client import context

        return getattr(context, name)
    raise AttributeError(f"module 'fray.client' has no attribute {name!r}")
