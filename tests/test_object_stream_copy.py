"""The non-temporal copy routine of fray.wire.objects.stream_copy: it runs where it should, its
machine code is the assembly beside it, and it copies every byte it is asked to and no other,
whatever the alignment."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fray.wire.objects import memory, stream_copy
from fray.wire.objects.stream_copy import GROUP, STREAM_MIN

SOURCE = Path(stream_copy.__file__).with_name("stream_copy_x86_64.S")
X86_64_LINUX = (
    sys.platform == "linux"
    and platform.machine() in ("x86_64", "AMD64")
    and ctypes.sizeof(ctypes.c_void_p) == 8
    and sys.implementation.name == "cpython"
)


def test_the_routine_runs_on_x86_64_linux() -> None:
    # (Elsewhere the module falls back to memmove, and the copy tests below still hold.)
    if stream_copy.refused:
        pytest.skip(f"this host refuses executable pages: {stream_copy.refused}")
    assert stream_copy.AVAILABLE is X86_64_LINUX


@pytest.mark.skipif(
    not (X86_64_LINUX and shutil.which("as") and shutil.which("objcopy")),
    reason="no x86-64 GNU binutils to assemble with",
)
def test_the_machine_code_is_the_assembly_beside_it(tmp_path: Path) -> None:
    obj, binary = tmp_path / "sc.o", tmp_path / "sc.bin"
    subprocess.run(["as", "-o", str(obj), str(SOURCE)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True)
    assert binary.read_bytes().hex() == stream_copy._X86_64_CODE


def _copied(size: int, dst_offset: int, src_offset: int) -> tuple[bytes, bytes]:
    """(what the destination buffer holds after the copy, what it should hold): the copy
    lands at `dst_offset` in a buffer with guard bytes on both sides."""
    guard = 4096
    source = bytearray(os.urandom(size + src_offset))
    destination = bytearray(b"\xa5" * (guard + dst_offset + size + guard))
    want = bytearray(destination)
    want[guard + dst_offset : guard + dst_offset + size] = source[src_offset:]
    dst = (ctypes.c_char * len(destination)).from_buffer(destination)
    src = (ctypes.c_char * len(source)).from_buffer(source)
    stream_copy.stream_copy(
        ctypes.addressof(dst) + guard + dst_offset, ctypes.addressof(src) + src_offset, size
    )
    del dst, src  # (release the exports)
    return bytes(destination), bytes(want)


@pytest.mark.parametrize(
    "size",
    [
        0,
        100,
        STREAM_MIN - 1,
        STREAM_MIN,
        STREAM_MIN + 1,
        STREAM_MIN + GROUP - 1,
        5 * GROUP * 64 + 12345,
    ],
)
@pytest.mark.parametrize(("dst_offset", "src_offset"), [(0, 0), (1, 0), (0, 7), (63, 33), (16, 0)])
def test_every_byte_and_no_other(size: int, dst_offset: int, src_offset: int) -> None:
    got, want = _copied(size, dst_offset, src_offset)
    assert got == want


def test_a_large_parallel_copy_is_exact() -> None:
    size = memory.PARALLEL_MIN * 2 + 4097  # split over threads, each piece through the routine
    source = memoryview(os.urandom(size))
    destination = bytearray(size)
    memory.copy(memoryview(destination), source)
    assert destination == source


def test_overlapping_ranges_are_copied_as_memmove_does() -> None:
    size = STREAM_MIN * 2
    buffer = bytearray(os.urandom(size + GROUP))
    want = bytearray(buffer)
    want[GROUP:] = buffer[:size]
    raw = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    stream_copy.stream_copy(ctypes.addressof(raw) + GROUP, ctypes.addressof(raw), size)
    del raw
    assert buffer == want


@pytest.mark.skipif(not stream_copy.AVAILABLE, reason="no routine on this host (memmove)")
def test_the_routine_copies_nothing_for_no_groups() -> None:
    destination, source = bytearray(b"\xa5" * GROUP), bytearray(os.urandom(GROUP))
    dst = (ctypes.c_char * GROUP).from_buffer(destination)
    src = (ctypes.c_char * GROUP).from_buffer(source)
    stream_copy._routine(ctypes.addressof(dst), ctypes.addressof(src), 0)
    assert destination == b"\xa5" * GROUP
    stream_copy._routine(ctypes.addressof(dst), ctypes.addressof(src), 1)  # (malloc: 16-aligned)
    del dst, src
    assert destination == source
