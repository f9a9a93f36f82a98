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
X86_64_LINUX = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def test_the_routine_runs_on_x86_64_linux() -> None:
    # (Elsewhere the module falls back to memmove, and the copy tests below still hold.)
    assert stream_copy.AVAILABLE is X86_64_LINUX


@pytest.mark.skipif(
    not (shutil.which("as") and shutil.which("objcopy")), reason="no GNU binutils to assemble"
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
