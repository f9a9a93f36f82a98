"""Tests of what is particular to fray.v2's Ray backend, on the session's shared Ray instance.

Jobs are Ray Jobs API jobs; a job can reach the same cluster through ``current_cluster()``;
ResourceSpec becomes Ray resources the scheduler enforces.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

from fray.v2 import (
    ActorServer,
    Entrypoint,
    JobStatus,
    ResourceSpec,
    create_cluster,
    current_cluster,
)
from fray.v2.backends.ray_resources import ray_job_options

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def ray_cluster(ray_session: Any) -> Iterator[Any]:
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield create_cluster(f"ray?namespace=test-{uuid.uuid4().hex[:8]}")


class Greeter:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name} (from pid {os.getpid()})"


def serve_greeter(greeting: str) -> None:
    """A job that serves an actor on the cluster it finds through FRAY_CLUSTER_SPEC."""
    server = ActorServer(current_cluster())
    server.register("greeter", Greeter(greeting))
    server.serve()


def test_a_job_serves_an_actor_the_driver_finds(ray_cluster: Any) -> None:
    job = ray_cluster.submit(
        Entrypoint.from_callable(serve_greeter, args=("hello",)), "server", ResourceSpec(cpu=0.25)
    )
    pool = ray_cluster.resolver().lookup("greeter")
    try:
        pool.wait_for_size(1, timeout=90)
    except TimeoutError:
        print(job.logs())  # why the job did not get there
        raise
    answer = pool.call().greet("fray")
    assert answer.startswith("hello, fray (from pid ")
    assert int(answer.rsplit(" ", 1)[1].rstrip(")")) != os.getpid()
    job.terminate()
    assert job.status() == JobStatus.KILLED
    deadline = time.monotonic() + 30
    while pool.size:  # the actor belonged to the job's driver and died with it
        assert time.monotonic() < deadline, "the job's actor outlived the job"
        time.sleep(0.1)


def hold(seconds: float) -> None:
    time.sleep(seconds)


def test_job_resources_are_held_while_it_runs(ray_cluster: Any, ray_session: Any) -> None:
    ray = ray_session

    def free_cpus() -> float:
        return float(ray.available_resources().get("CPU", 0.0))

    def settle(predicate: Any) -> float:
        deadline = time.monotonic() + 20
        while not predicate(value := free_cpus()):
            assert time.monotonic() < deadline, f"free CPUs stuck at {value}"
            time.sleep(0.1)
        return value

    total = float(ray.cluster_resources()["CPU"])
    settle(lambda v: v >= 1.5)
    job = ray_cluster.submit(
        Entrypoint.from_callable(hold, args=(60,)), "holder", ResourceSpec(cpu=1.5)
    )
    settle(lambda v: v <= total - 1.5 + 1e-6)  # Ray holds the job's entrypoint CPUs
    job.terminate()
    settle(lambda v: v >= 1.5)  # and lets them go when the job ends


def test_an_unschedulable_job_stays_pending(ray_cluster: Any) -> None:
    job = ray_cluster.submit(
        Entrypoint.from_callable(hold, args=(1,)), "gpu-job", ResourceSpec.with_gpu("H100")
    )
    with pytest.raises(TimeoutError):
        job.wait(timeout=1.0)
    assert job.status() == JobStatus.PENDING
    assert job.logs() == ""
    job.terminate()
    assert job.status() == JobStatus.KILLED


def actor_id_and_pid() -> tuple[str | None, int]:
    import ray

    return ray.get_runtime_context().get_actor_id(), os.getpid()


def test_pool_workers_are_ray_actors(ray_cluster: Any) -> None:
    with ray_cluster.worker_pool(2, ResourceSpec(cpu=0.25)) as pool:
        futures = [pool.submit(actor_id_and_pid) for _ in range(6)]
        assert all(type(f) is cf.Future for f in futures)
        results = [f.result(timeout=60) for f in futures]
    actor_ids = {actor_id for actor_id, _ in results}
    assert None not in actor_ids and len(actor_ids) == 2  # spread over both workers
    assert os.getpid() not in {pid for _, pid in results}


def test_resource_spec_becomes_job_entrypoint_options() -> None:
    assert ray_job_options(ResourceSpec(cpu=2, memory="1g")) == {
        "entrypoint_num_cpus": 2,
        "entrypoint_memory": 1024**3,
    }
    gpu = ray_job_options(ResourceSpec.with_gpu("H100", count=2))
    assert gpu["entrypoint_num_gpus"] == 2
    assert gpu["entrypoint_resources"] == {"accelerator_type:H100": 0.001}
    tpu = ray_job_options(ResourceSpec.with_tpu("v4-8"))
    assert tpu["entrypoint_resources"]["accelerator_type:TPU-V4"] == 0.001
    assert "TPU" in tpu["entrypoint_resources"]
