"""A freed chunk-sized array stays in the heap for reuse (glibc only): with
``keep_freed_memory`` a 32 MB array is not given a mapping of its own, as glibc gives it
by default (and returns to the kernel on free, to be page-faulted back in next time)."""

import ctypes
import subprocess
import sys

import pytest

MEASURE = """
import ctypes, sys
import numpy as np
from rulelab.core import malloc as heap

class MallInfo(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo.restype = MallInfo
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
before = libc.mallinfo().hblkhd
a = np.ones(1 << 22)
print(libc.mallinfo().hblkhd - before)
"""


def mapped_bytes_of_a_32_mb_array(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", MEASURE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_chunk_sized_array_lives_in_the_heap_once_freed_memory_is_kept():
    try:
        ctypes.CDLL("libc.so.6").mallinfo
    except (OSError, AttributeError):
        pytest.skip("not glibc's malloc")
    assert mapped_bytes_of_a_32_mb_array("default") >= 32 << 20  # glibc's default: a mapping of its own
    assert mapped_bytes_of_a_32_mb_array("keep") == 0
