"""Threads: whichsound parallelises over stems and candidates itself, so BLAS runs one thread per call."""

from __future__ import annotations

import functools


def one_blas_thread(fn):
    """Run `fn` with the BLAS library (numpy's OpenBLAS) limited to one thread, then restore it.

    The fits' tall, narrow complex products (band frames x stem channels) gain nothing from BLAS threads
    while whichsound's own threads run fits and scans on every core; when the cores are also busy with
    other work, OpenBLAS's spinning threads slow such a product down (measured on 2 cores with two other
    busy processes: 6-7 ms with one thread, 7-50 ms with its default two; bench_index's warm locate there
    1.85-2.11 s against 1.90-2.33 s; on an idle machine no difference).
    """

    @functools.wraps(fn)
    def limited(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return limited
