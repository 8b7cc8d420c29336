"""memory.keep_freed_memory: freed arrays are reused without faulting their pages in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
import numpy as np
from whichsound.memory import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory() is True
def faults_of_one_array():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(64 * 2**20 // 8)  # 64 MB, above glibc's largest mmap threshold (32 MB)
    del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_array()
print(faults_of_one_array())
"""


def _second_array_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_array_is_reused_without_new_page_faults():
    pages = 64 * 2**20 // 4096
    # Off: glibc maps every 64 MB array afresh and faults it in again: its 16 384 pages, or with
    # transparent huge pages its 32 huge ones and their tables (544 faults measured on the CI machine),
    # hence either bound. On: the heap keeps the first one's pages, and the second costs a few faults at
    # most (the interpreter's own small allocations; 0 measured).
    off = _second_array_faults("off")
    on = _second_array_faults("on")
    assert off > pages // 2 or off > 20 * max(on, 1), (off, on)
    assert on < pages // 20, (off, on)


def test_second_call_answers_as_the_first():
    code = "from whichsound.memory import keep_freed_memory as k; print(k(), k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == out[1]
    assert out[0] == str(sys.platform.startswith("linux"))  # glibc on every Linux this runs on
