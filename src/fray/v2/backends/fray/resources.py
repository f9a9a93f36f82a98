"""How a fray.v2 ``ResourceSpec`` becomes what fray's controller places by (pure functions).

A fray worker offers capacities (numbers) and labels (strings); work asks for
:class:`fray.wire.pb.controller_pb2.Requirements` (``resources`` and ``labels``), held on its
worker for its whole life. Per job replica and per pool worker:

==================  =======================================================================
``cpu``             ``cpus``
``memory``          ``memory`` (bytes; 0: not requested)
``disk``            ``disk`` (bytes; 0: not requested)
``device_type``     ``"gpu"``: ``gpus=device_count`` and the label ``gpu_type=variant``
                    unless the variant is ``"auto"``; ``"tpu"``: ``tpus=device_count`` and the
                    label ``tpu=variant``
``regions``         the label ``region="r1|r2"`` (a worker in any of them fits; empty: any)
``preemptible``     ignored: fray workers have no preemptible kind
``replicas``        not a requirement: a job starts that many replicas, each holding all this
==================  =======================================================================
"""

from __future__ import annotations

from fray.v2.types import ResourceSpec
from fray.wire.pb import controller_pb2 as pb

__all__ = ["fray_requirements", "resources_and_labels"]


def resources_and_labels(spec: ResourceSpec) -> tuple[dict[str, float], dict[str, str]]:
    """The capacities and labels one replica (or pool worker) of ``spec`` asks for."""
    resources: dict[str, float] = {}
    labels: dict[str, str] = {}
    if spec.cpu > 0:
        resources["cpus"] = float(spec.cpu)
    if spec.memory_bytes:
        resources["memory"] = float(spec.memory_bytes)
    if spec.disk_bytes:
        resources["disk"] = float(spec.disk_bytes)
    variant = spec.device_variant or ""
    if spec.device_type == "gpu":
        resources["gpus"] = float(spec.device_count)
        if variant != "auto":
            labels["gpu_type"] = variant
    elif spec.device_type == "tpu":
        resources["tpus"] = float(spec.device_count)
        labels["tpu"] = variant
    if spec.regions:
        labels["region"] = "|".join(spec.regions)
    return resources, labels


def fray_requirements(spec: ResourceSpec) -> pb.Requirements:
    """``spec`` as the wire's ``Requirements``."""
    resources, labels = resources_and_labels(spec)
    return pb.Requirements(resources=resources, labels=labels)
