"""The worker's membership at the controller: registering (again), heartbeats, unregistering.

The controller drops a worker it has not heard from for its heartbeat timeout (and gives its
tasks to others); the heartbeat, sent every `interval` seconds (the controller says how often
when the worker registers), says that the worker lives, whether it drains, and how many direct
tasks it runs, and brings back cancellations of leased tasks.
"""

from __future__ import annotations

import logging

from connectrpc.errors import ConnectError

from fray.errors import ControllerUnavailableError
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)


class Registration:
    """This worker as the controller knows it."""

    def __init__(self, client: ControllerClient, request: pb.RegisterWorkerRequest) -> None:
        self._client = client
        self._request = request  # who we are: id, address, resources, slots, prefetch
        self.worker_id = request.worker_id
        self.interval = 1.0  # heartbeat interval, seconds (the controller's, once registered)

    def register(self) -> None:
        """Register (again: the controller forgot us). Raises what the controller raised."""
        response = self._client.call(self._client.rpc.register_worker, self._request)
        self.interval = response.heartbeat_interval_ms / 1000

    def beat(self, *, draining: bool, direct_running: int) -> list[str]:
        """Send one heartbeat; returns the ids of leased tasks to cancel (none if it failed)."""
        request = pb.HeartbeatRequest(
            worker_id=self.worker_id, draining=draining, direct_running=direct_running
        )
        try:
            response = self._client.call(
                self._client.rpc.heartbeat,
                request,
                retry_timeout=self.interval,
                quiet=True,  # the lease loop already says when the controller is away
            )
        except Exception as exc:
            logger.debug("heartbeat failed: %s", exc)
            return []
        return list(response.cancel_task_ids)

    def unregister(self) -> None:
        """Leave: the controller puts every task this worker still holds back in the queue."""
        try:
            response = self._client.call(
                self._client.rpc.unregister_worker,
                pb.UnregisterWorkerRequest(worker_id=self.worker_id),
                retry_timeout=5,
            )
            logger.info(
                "worker %s unregistered; %d tasks handed back",
                self.worker_id,
                len(response.requeued_task_ids),
            )
        except (ConnectError, ControllerUnavailableError) as exc:
            logger.warning("could not unregister worker %s: %s", self.worker_id, exc)
