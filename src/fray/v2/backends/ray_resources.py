"""How fray.v2 specs become Ray options (pure functions: this module does not import Ray).

``ResourceSpec`` -> ``ray.remote`` options, per replica / pool worker / job task:

==================  =======================================================================
``cpu``             ``num_cpus`` (held for the life of the job task or pool worker)
``memory``          ``memory`` in bytes (Ray's logical memory resource; 0: not requested)
``disk``            not mapped: Ray has no disk resource
``device_type``     ``"gpu"``: ``num_gpus=device_count``, and ``accelerator_type=variant``
                    unless the variant is ``"auto"``; ``"tpu"``: ``resources={"TPU":
                    device_count}`` and ``accelerator_type="TPU-<GENERATION>"`` (e.g.
                    ``"v4-8"`` -> ``"TPU-V4"``, ``"v5e-4"`` -> ``"TPU-V5LITEPOD"``)
``preemptible``     ``False`` adds ``{"ray.io/market-type": "!spot"}`` to ``label_selector``
``regions``         adds ``{"ray.io/availability-region": "in(r1,r2)"}`` to ``label_selector``
``replicas``        not an option: the backend starts one Ray actor per pool worker, and
                    one Ray job per job replica
==================  =======================================================================

For a job (Ray's Jobs API) the same request becomes ``JobSubmissionClient.submit_job``'s
``entrypoint_*`` arguments (:func:`ray_job_options`): ``num_cpus`` -> ``entrypoint_num_cpus``,
``num_gpus`` -> ``entrypoint_num_gpus``, ``memory`` -> ``entrypoint_memory``,
``resources`` -> ``entrypoint_resources``, ``label_selector`` ->
``entrypoint_label_selector``; the accelerator type becomes the resource Ray itself uses
for it, ``{"accelerator_type:<TYPE>": 0.001}`` in ``entrypoint_resources``.

``EnvironmentSpec`` -> ``runtime_env``: ``env_vars`` -> ``env_vars``, ``workspace`` ->
``working_dir``, ``pip_packages`` -> ``pip``; ``extras`` (uv extras) have no Ray
equivalent and are ignored with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from fray.v2.types import EnvironmentSpec, ResourceSpec

__all__ = [
    "MARKET_TYPE_LABEL",
    "REGION_LABEL",
    "ray_job_options",
    "ray_resource_options",
    "ray_runtime_env",
]

logger = logging.getLogger(__name__)

MARKET_TYPE_LABEL = "ray.io/market-type"
REGION_LABEL = "ray.io/availability-region"
_TPU_ACCELERATOR = {
    "v2": "TPU-V2",
    "v3": "TPU-V3",
    "v4": "TPU-V4",
    "v5p": "TPU-V5P",
    "v5litepod": "TPU-V5LITEPOD",
    "v5e": "TPU-V5LITEPOD",
    "v6e": "TPU-V6E",
}


def ray_resource_options(spec: ResourceSpec) -> dict[str, Any]:
    """The ``ray.remote`` options asking for one replica's worth of ``spec``."""
    options: dict[str, Any] = {"num_cpus": spec.cpu}
    if spec.memory_bytes:
        options["memory"] = spec.memory_bytes
    variant = spec.device_variant or ""
    if spec.device_type == "gpu":
        options["num_gpus"] = spec.device_count
        if variant != "auto":
            options["accelerator_type"] = variant
    elif spec.device_type == "tpu":
        options["resources"] = {"TPU": spec.device_count}
        options["accelerator_type"] = _TPU_ACCELERATOR[variant.split("-", 1)[0]]
    labels: dict[str, str] = {}
    if not spec.preemptible:
        labels[MARKET_TYPE_LABEL] = "!spot"
    if spec.regions:
        labels[REGION_LABEL] = f"in({','.join(spec.regions)})"
    if labels:
        options["label_selector"] = labels
    return options


def ray_job_options(spec: ResourceSpec) -> dict[str, Any]:
    """The ``submit_job`` ``entrypoint_*`` arguments asking for one replica's worth of ``spec``."""
    options = ray_resource_options(spec)
    job: dict[str, Any] = {"entrypoint_num_cpus": options["num_cpus"]}
    if "num_gpus" in options:
        job["entrypoint_num_gpus"] = options["num_gpus"]
    if "memory" in options:
        job["entrypoint_memory"] = options["memory"]
    resources = dict(options.get("resources", {}))
    if "accelerator_type" in options:
        resources[f"accelerator_type:{options['accelerator_type']}"] = 0.001
    if resources:
        job["entrypoint_resources"] = resources
    if "label_selector" in options:
        job["entrypoint_label_selector"] = options["label_selector"]
    return job


def ray_runtime_env(environment: EnvironmentSpec | None) -> dict[str, Any]:
    """The ``runtime_env`` for ``environment`` (empty when there is nothing to set)."""
    if environment is None:
        return {}
    runtime_env: dict[str, Any] = {}
    if environment.env_vars:
        runtime_env["env_vars"] = dict(environment.env_vars)
    if environment.workspace:
        runtime_env["working_dir"] = environment.workspace
    if environment.pip_packages:
        runtime_env["pip"] = list(environment.pip_packages)
    if environment.extras:
        logger.warning("the Ray backend ignores extras %s", list(environment.extras))
    return runtime_env
