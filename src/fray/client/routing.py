"""Where a task goes, and how its future reaches it again.

`TaskRouter.send` tracks a new task in the table and offers it to the direct path (a worker's
free slot) unless tasks are already waiting to be queued (a backlog is served better by the
controller's batches), it has `max_retries` (user-error retries stay with the controller) or it
has requirements (resources, labels: only the controller knows where they fit now); otherwise,
or when the direct path has no free slot, it queues it at the controller.

It is also what futures call back (`TaskControl`): `cancel` stops a task on the direct path,
waiting to be queued, or at the controller (it may be moving from the first to the others),
and `help` makes a direct call from the thread that waits for it.
"""

from __future__ import annotations

from collections.abc import Callable

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.client.direct import DirectPath
from fray.client.futures import FrayFuture
from fray.client.submitter import Submitter
from fray.client.tasks import FutureTable
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb


class TaskRouter:
    """Sends tasks the direct path or the controller's queue; cancels and helps them.

    `on_own_thread()` says whether the calling thread is one of the context's (submitter,
    collector): those must neither wait for the submitter nor make direct calls.
    """

    def __init__(
        self,
        table: FutureTable,
        submitter: Submitter,
        direct: DirectPath | None,
        controller: ControllerClient,
        on_own_thread: Callable[[], bool],
    ) -> None:
        self._table = table
        self._submitter = submitter
        self._direct = direct
        self._controller = controller
        self._on_own_thread = on_own_thread

    def send(self, spec: pb.TaskSpec, future: FrayFuture) -> None:
        """Track a new task and send it on its way (FrayError once the context is closed)."""
        if not self._table.add(future):
            return  # cancelled while its arguments were being waited for
        direct = self._direct
        if (
            direct is None
            or self._submitter.has_backlog()
            or spec.max_retries
            or spec.HasField("requirements")  # placed by the controller
            or not direct.try_send(spec, future)
        ):
            self._submitter.queue(spec, future)
        elif future.cancelled():  # cancelled before the direct path knew it: stop it there
            direct.cancel(spec.task_id)

    def flush(self) -> None:
        """Wait until every task queued so far has been accepted (or refused) by the controller."""
        if self._on_own_thread():
            return  # a done-callback on our own thread: waiting would wait for itself
        self._submitter.flush()

    # ------------------------------------------------------------------ TaskControl

    def help(self, future: FrayFuture) -> None:
        if self._direct is not None and not self._on_own_thread():
            self._direct.help(future.task_id)

    def cancel(self, future: FrayFuture) -> None:
        """Stop a (locally cancelled) task wherever it is."""
        sent_direct = self._direct is not None and self._direct.cancel(future.task_id)
        if self._submitter.take(future):  # it was waiting to be queued: it never will be
            self._table.forget(future.task_id)
            return
        self.flush()
        if sent_direct and not future.controller_id:
            self._table.forget(future.task_id)
            return
        controller = self._controller
        try:
            controller.call(
                controller.rpc.cancel_tasks, pb.CancelTasksRequest(task_ids=[future.task_id])
            )
        except ConnectError as exc:
            if exc.code != Code.NOT_FOUND:  # not found: it never reached the controller
                raise
        self._table.forget(future.task_id)
