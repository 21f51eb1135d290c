"""The run's process settings: start-up objects frozen once per process, and glibc told to
keep freed arrays in its heap."""

import gc
import subprocess
import sys
import weakref

import pytest

from segmentation import process

pytestmark = pytest.mark.unit


class Node:
    pass


def test_start_up_objects_are_frozen_once_and_later_objects_are_not():
    process.prepare_for_run()
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the imports of pandas, scikit-learn and Prefect at least
    # A cycle made after the first call: a second freeze would keep it from being collected.
    cycle = Node()
    cycle.self = cycle
    alive = weakref.ref(cycle)
    del cycle
    process.prepare_for_run()
    assert gc.get_freeze_count() == frozen
    gc.collect()
    assert alive() is None


# How glibc serves a 64 MB array, read with mallinfo2(): hblkhd counts bytes in separate
# mmap()ed blocks (handed back to the kernel when freed), fordblks the free bytes kept in
# the heap for the next allocation.
MALLOC_PROBE = """
import ctypes, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "prepared":
    from segmentation import process
    process.prepare_for_run()
before = libc.mallinfo2()
array = np.ones(8_000_000)
during = libc.mallinfo2()
del array
after = libc.mallinfo2()
print(during.hblkhd - before.hblkhd, after.fordblks - before.fordblks)
"""


def _malloc_probe(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", MALLOC_PROBE, mode], capture_output=True, text=True, check=True).stdout
    mapped, kept = map(int, out.split())
    return mapped, kept


def test_freed_arrays_stay_in_the_heap_after_prepare_for_run():
    size = 8_000_000 * 8
    mapped, kept = _malloc_probe("default")
    assert mapped >= size and kept < size // 2  # glibc's default: its own mapping, unmapped when freed
    mapped, kept = _malloc_probe("prepared")
    assert mapped == 0 and kept > 0.9 * size  # from the heap, and kept there for the next chunk
