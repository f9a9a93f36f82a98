"""Unit tests of fray.v2's value types, cluster specs and the Ray resource mapping.

None of these start a backend (the Ray mapping module does not import Ray).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from fray.v2 import (
    Cluster,
    Entrypoint,
    EnvironmentSpec,
    JobStatus,
    ResourceSpec,
    create_cluster,
    current_cluster,
    use_cluster,
)
from fray.v2.backends.local import LocalProcessCluster
from fray.v2.backends.ray_resources import ray_resource_options, ray_runtime_env
from fray.v2.factory import SPEC_FORMS, parse_cluster_spec
from fray.v2.types import tpu_chips_per_host

GIB = 1024**3
MIB = 1024**2


# --- JobStatus ------------------------------------------------------------------------------


def test_job_status_values_and_finished() -> None:
    assert [s.value for s in JobStatus] == ["pending", "running", "succeeded", "failed", "killed"]
    assert JobStatus("failed") is JobStatus.FAILED
    assert JobStatus.RUNNING == "running"
    finished = {s for s in JobStatus if s.is_finished()}
    assert finished == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.KILLED}


# --- sizes and ResourceSpec -----------------------------------------------------------------


# Sizes are read by fray.common.sizes.parse_bytes: its semantics are tested in test_common.py.


def test_resource_spec_defaults_and_normalisation() -> None:
    spec = ResourceSpec()
    assert (spec.cpu, spec.memory, spec.disk, spec.replicas) == (1.0, 0, 0, 1)
    assert spec.device_type == "cpu" and spec.device_count == 0 and spec.preemptible
    spec = ResourceSpec(cpu=4, memory="8g", disk="512m", regions=["us-central1"])
    assert spec.memory == spec.memory_bytes == 8 * GIB
    assert spec.disk == spec.disk_bytes == 512 * MIB
    assert spec.regions == ("us-central1",)
    assert ResourceSpec(memory=1024).memory == 1024
    assert ResourceSpec(memory="1g") == ResourceSpec(memory=GIB)


def test_resource_spec_memory_error_names_the_value() -> None:
    with pytest.raises(ValueError, match="'lots'"):
        ResourceSpec(memory="lots")
    with pytest.raises(ValueError, match="'12q'"):
        ResourceSpec(disk="12q")
    with pytest.raises(ValueError, match="cannot be negative"):
        ResourceSpec(memory=-1)


def test_resource_spec_sizes_are_powers_of_1024() -> None:
    assert ResourceSpec(memory="8gi").memory == ResourceSpec(memory="8GB").memory == 8 * GIB
    assert ResourceSpec(disk="1p").disk == 1024**5
    assert ResourceSpec(memory="1e3k").memory == 1000 * 1024


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cpu": -1},
        {"replicas": 0},
        {"device_type": "npu"},
        {"device_type": "gpu", "device_variant": "H100", "device_count": 0},
        {"device_type": "gpu", "device_count": 1},
        {"device_type": "tpu", "device_variant": "v9-8", "device_count": 4},
        {"device_count": 2},
        {"regions": "us-east1"},
    ],
)
def test_resource_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ResourceSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variant", "chips"),
    [("v4-8", 4), ("v4-32", 4), ("v5p-8", 4), ("v5litepod-4", 4), ("v5litepod-16", 4)]
    + [("v6e-8", 8), ("v6e-1", 1), ("v2-8", 4), ("v5e-256", 4)],
)
def test_tpu_chips_per_host(variant: str, chips: int) -> None:
    assert tpu_chips_per_host(variant) == chips


def test_with_tpu_gpu_cpu() -> None:
    tpu = ResourceSpec.with_tpu("v4-8")
    assert (tpu.device_type, tpu.device_variant, tpu.device_count, tpu.replicas) == (
        "tpu",
        "v4-8",
        4,
        1,
    )
    assert ResourceSpec.with_tpu("v5litepod-16", replicas=4, memory="64g").replicas == 4
    with pytest.raises(ValueError, match="unknown TPU variant"):
        ResourceSpec.with_tpu("tpu-please")
    gpu = ResourceSpec.with_gpu()
    assert (gpu.device_type, gpu.device_variant, gpu.device_count) == ("gpu", "auto", 1)
    assert ResourceSpec.with_gpu("H100", count=8, cpu=32).device_count == 8
    cpu = ResourceSpec.with_cpu(cpu=8, memory="16g")
    assert (cpu.cpu, cpu.memory, cpu.device_type) == (8, 16 * GIB, "cpu")


def test_environment_spec() -> None:
    env = EnvironmentSpec(workspace="/src", pip_packages=["numpy"], env_vars={"A": "1"})
    assert env.pip_packages == ("numpy",) and env.extras == ()
    assert env.env_vars == {"A": "1"}
    assert EnvironmentSpec().env_vars == {}
    with pytest.raises(ValueError):
        EnvironmentSpec(env_vars={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        EnvironmentSpec(pip_packages="numpy")


def test_entrypoint() -> None:
    entry = Entrypoint.from_callable(divmod, args=[7], kwargs={"x": 1})
    assert entry.callable is divmod and entry.args == (7,) and entry.kwargs == {"x": 1}
    assert Entrypoint.from_callable(print).args == ()
    with pytest.raises(TypeError):
        Entrypoint(callable=42)  # type: ignore[arg-type]


# --- cluster specs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("", ("local", {})),
        ("local", ("local", {})),
        ("local?namespace=team", ("local", {"namespace": "team"})),
        ("ray", ("ray", {})),
        ("ray?namespace=exp1", ("ray", {"namespace": "exp1"})),
        (
            "ray?namespace=a&address=10.0.0.1:6379",
            ("ray", {"namespace": "a", "address": "10.0.0.1:6379"}),
        ),
    ],
)
def test_parse_cluster_spec(spec: str, parsed: tuple[str, dict[str, str]]) -> None:
    assert parse_cluster_spec(spec) == parsed


@pytest.mark.parametrize(
    "spec",
    [
        "kubernetes",
        "rayy",
        "ray?",
        "ray?namespace",
        "ray?namespace=",
        "ray?colour=blue",
        "ray?namespace=a&namespace=b",
        "local?address=x:1",
    ],
)
def test_bad_specs_name_the_accepted_forms(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        create_cluster(spec)
    message = str(info.value)
    assert repr(spec) in message
    for form in SPEC_FORMS:
        assert form in message


def test_iris_spec_needs_the_iris_package() -> None:
    assert importlib.util.find_spec("iris") is None  # not installed here
    with pytest.raises(ValueError, match="needs Marin's 'iris' package"):
        create_cluster("iris?address=http://controller:10000")
    with pytest.raises(ValueError, match="iris"):
        create_cluster("iris")


def test_current_cluster_defaults_to_local_and_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAY_CLUSTER_SPEC", raising=False)
    cluster = current_cluster()
    assert isinstance(cluster, LocalProcessCluster) and isinstance(cluster, Cluster)
    assert current_cluster() is cluster
    monkeypatch.setenv("FRAY_CLUSTER_SPEC", "local?namespace=from-env")
    assert current_cluster().namespace == "from-env"
    monkeypatch.setenv("FRAY_CLUSTER_SPEC", "nonsense")
    with pytest.raises(ValueError, match="accepted forms"):
        current_cluster()


def test_use_cluster_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAY_CLUSTER_SPEC", "nonsense")  # never read while overridden
    with LocalProcessCluster() as mine:
        with use_cluster(mine):
            assert current_cluster() is mine
        with pytest.raises(ValueError):
            current_cluster()


def test_old_names_keep_working() -> None:
    import fray.v2.actor
    import fray.v2.backends.local
    import fray.v2.job
    from fray import errors

    assert fray.v2.backends.local.LocalCluster is LocalProcessCluster
    assert fray.v2.JobFailedError is fray.v2.job.JobFailedError is errors.JobFailedError
    assert fray.v2.UnknownJobError is errors.UnknownJobError
    assert fray.v2.NoActorError is fray.v2.actor.NoActorError is errors.NoActorError
    for name in fray.v2.__all__:
        assert getattr(fray.v2, name) is not None
    assert issubclass(errors.UnknownJobError, KeyError)
    assert issubclass(errors.JobFailedError, RuntimeError)
    assert issubclass(errors.NoActorError, LookupError)


def test_import_does_not_import_ray() -> None:
    code = (
        "import sys, fray.v2\n"
        "from fray.v2 import create_cluster\n"
        "create_cluster('local').worker_pool(1, fray.v2.ResourceSpec()).shutdown()\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "ok"


# --- the Ray mapping ------------------------------------------------------------------------


def test_ray_options_for_cpu_and_memory() -> None:
    assert ray_resource_options(ResourceSpec()) == {"num_cpus": 1.0}
    assert ray_resource_options(ResourceSpec(cpu=4, memory="2g", disk="100g")) == {
        "num_cpus": 4,
        "memory": 2 * GIB,
    }


def test_ray_options_for_accelerators() -> None:
    assert ray_resource_options(ResourceSpec.with_gpu(count=2)) == {"num_cpus": 1.0, "num_gpus": 2}
    assert ray_resource_options(ResourceSpec.with_gpu("H100", count=8, cpu=16)) == {
        "num_cpus": 16,
        "num_gpus": 8,
        "accelerator_type": "H100",
    }
    assert ray_resource_options(ResourceSpec.with_tpu("v4-8", cpu=8)) == {
        "num_cpus": 8,
        "resources": {"TPU": 4},
        "accelerator_type": "TPU-V4",
    }
    assert ray_resource_options(ResourceSpec.with_tpu("v5e-4"))["accelerator_type"] == (
        "TPU-V5LITEPOD"
    )


def test_ray_options_for_placement_labels() -> None:
    options = ray_resource_options(ResourceSpec(preemptible=False, regions=["us-east1", "eu-w4"]))
    assert options["label_selector"] == {
        "ray.io/market-type": "!spot",
        "ray.io/availability-region": "in(us-east1,eu-w4)",
    }


def test_ray_runtime_env() -> None:
    assert ray_runtime_env(None) == {}
    assert ray_runtime_env(EnvironmentSpec()) == {}
    env = EnvironmentSpec(workspace="/w", pip_packages=["a==1"], env_vars={"K": "v"}, extras=["x"])
    assert ray_runtime_env(env) == {"env_vars": {"K": "v"}, "working_dir": "/w", "pip": ["a==1"]}


def test_resource_spec_and_binary_entrypoints_refuse_what_cannot_be_placed() -> None:
    with pytest.raises(ValueError, match="finite"):
        ResourceSpec(cpu=float("nan"))
    for regions in ([""], ["a|b"]):
        with pytest.raises(ValueError, match="region"):
            ResourceSpec(regions=regions)
    with pytest.raises(TypeError, match="strings"):
        Entrypoint.from_binary("sh", ["-c", None])  # type: ignore[list-item]


def test_a_tpu_labelled_worker_offers_its_hosts_chips() -> None:
    from fray.wire.pb import controller_pb2 as pb
    from fray.worker.resources import offered_resources

    offer = offered_resources(pb.Resources(labels={"tpu": "v5litepod-4"}))
    assert offer.capacities["tpus"] == ResourceSpec.with_tpu("v5litepod-4").device_count == 4
    assert "tpus" not in offered_resources(pb.Resources(labels={"tpu": "nonsense"})).capacities
