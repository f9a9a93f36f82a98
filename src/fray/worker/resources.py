"""What a worker offers (`pb.Resources`): its capacities, with the machine's as defaults.

Capacities are numbers (`cpus`, `memory` in bytes, `gpus`, ...), labels are strings. A worker
always offers `cpus` (default: `os.cpu_count()`), `memory` (default: the machine's physical
memory) and `disk` (default: the size of the file system holding its temp dir), and mirrors
the first two; a `tpu=VARIANT` label (`v5litepod-4`) offers that host's chips as `tpus` unless
given in the old `cpus` and `memory_bytes` fields. Slots (`--concurrency`)
are separate: how many tasks run at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from fray.common.accelerators import tpu_chips_per_host
from fray.wire.pb import controller_pb2 as pb

__all__ = ["disk_size", "offered_resources", "physical_memory"]


def physical_memory() -> int:
    """The machine's physical memory in bytes (0 when the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def disk_size() -> int:
    """The size in bytes of the file system holding the temp dir (0 when unknown)."""
    try:
        return shutil.disk_usage(tempfile.gettempdir()).total
    except OSError:
        return 0


def offered_resources(resources: pb.Resources | None) -> pb.Resources:
    """`resources` with `cpus`, `memory` and `disk` capacities filled in when missing (from the old
    `cpus`/`memory_bytes` fields if set, else the machine's), and the mirrors set."""
    offer = pb.Resources()
    if resources is not None:
        offer.CopyFrom(resources)
    capacities = offer.capacities
    if "cpus" not in capacities:
        capacities["cpus"] = offer.cpus if offer.cpus > 0 else float(os.cpu_count() or 1)
    if "memory" not in capacities:
        memory = offer.memory_bytes if offer.memory_bytes > 0 else physical_memory()
        if memory > 0:
            capacities["memory"] = float(memory)
    if "tpus" not in capacities and "tpu" in offer.labels:
        with contextlib.suppress(ValueError):  # an unknown variant is just a label
            capacities["tpus"] = float(tpu_chips_per_host(offer.labels["tpu"]))
    if "disk" not in capacities and (disk := disk_size()) > 0:
        capacities["disk"] = float(disk)
    offer.cpus = capacities["cpus"]
    offer.memory_bytes = int(capacities.get("memory", 0))
    return offer
