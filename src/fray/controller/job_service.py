"""The job RPCs of the FrayController (SubmitJob, GetJob, ListJobs, StopJob, GetJobLogs,
ReportJobs), mixed into `service.ControllerService`.

Thin, like the rest of the service: messages in and out (`job_convert`), the rules in
`job_lifecycle` (through `ControllerState`). GetJob and GetJobLogs long-poll on the service's
"jobs changed" signal, fired when jobs change (and with new output): by the job RPCs, and by
other changes when the state notes that actors or jobs changed (`ControllerService._changed`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from connectrpc.request import RequestContext

from fray.controller import job_convert, long_poll
from fray.controller.long_poll import Signal
from fray.controller.records import JobRecord
from fray.controller.state import ControllerState
from fray.wire.pb import controller_pb2 as pb

_T = TypeVar("_T")


class JobRpcs:
    """The job RPCs; the service provides the state, the signal and the helpers below."""

    state: ControllerState
    _job_changes: Signal

    def _check_open(self) -> None:
        raise NotImplementedError

    def _mutated(self, *, finished: bool = True) -> None:
        raise NotImplementedError

    async def _durable(self) -> None:
        raise NotImplementedError

    async def _poll(
        self,
        wait_ms: int,
        ctx: RequestContext[Any, Any],
        check: Callable[[], _T | None],
        signal: long_poll.Waitable,
        cap_seconds: float | None = None,
    ) -> _T | None:
        raise NotImplementedError

    def _job_pb(self, job: JobRecord) -> pb.Job:
        return job_convert.job_to_pb(job, self.state.job_pending_reason(job))

    async def submit_job(
        self, request: pb.SubmitJobRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SubmitJobResponse:
        self._check_open()
        spec = job_convert.job_spec_from_pb(request.job)
        try:
            job, _ = self.state.submit_job(spec)
        finally:
            self._mutated(finished=False)
            await self._durable()  # also before already_exists: the id's owner is saved
        return pb.SubmitJobResponse(job=self._job_pb(job))

    async def get_job(
        self, request: pb.GetJobRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetJobResponse:
        job = self.state.get_job(request.job_id)
        if request.wait_ms and not job.state.final:
            await self._poll(
                request.wait_ms,
                ctx,
                lambda: True if job.state.final else None,
                self._job_changes,
            )
        await self._durable()  # answer with a state that is saved
        return pb.GetJobResponse(job=self._job_pb(job))

    async def list_jobs(
        self, request: pb.ListJobsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListJobsResponse:
        jobs = self.state.list_jobs(job_convert.job_state_from_pb(request.state))
        await self._durable()
        return pb.ListJobsResponse(jobs=[self._job_pb(j) for j in jobs])

    async def stop_job(
        self, request: pb.StopJobRequest, ctx: RequestContext[Any, Any]
    ) -> pb.StopJobResponse:
        job = self.state.stop_job(request.job_id)
        self._mutated(finished=False)
        await self._durable()
        return pb.StopJobResponse(job=self._job_pb(job))

    async def get_job_logs(
        self, request: pb.GetJobLogsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetJobLogsResponse:
        job_id, index, offset = request.job_id, request.replica, request.offset

        def check() -> tuple[bytes, int, int, bool] | None:
            data, next_offset, dropped, finished = self.state.read_job_logs(job_id, index, offset)
            return (data, next_offset, dropped, finished) if data or finished else None

        found = check()
        if found is None and request.wait_ms:
            found = await self._poll(request.wait_ms, ctx, check, self._job_changes)
        data, next_offset, dropped, finished = found or self.state.read_job_logs(
            job_id, index, offset
        )
        return pb.GetJobLogsResponse(
            data=data, next_offset=next_offset, finished=finished, dropped_bytes=dropped
        )

    async def report_jobs(
        self, request: pb.ReportJobsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ReportJobsResponse:
        updates = [job_convert.update_from_pb(u) for u in request.updates]
        stops = self.state.report_jobs(request.worker_id, updates)
        self._mutated(finished=False)
        await self._durable()
        return pb.ReportJobsResponse(stop_job_replicas=stops)
