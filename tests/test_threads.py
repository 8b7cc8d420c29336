"""one_blas_thread: BLAS runs one thread inside whichsound's entry points and gets its threads back after."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from whichsound.threads import one_blas_thread


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_blas_limited_inside_and_restored_after():
    np.ones((4, 4)) @ np.ones((4, 4))  # numpy's BLAS is loaded
    if not _blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can control")
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        if all(t == 1 for t in before):
            pytest.skip("BLAS runs one thread here anyway: nothing to limit")
        seen = one_blas_thread(_blas_threads)()
        assert seen == [1] * len(before)
        assert _blas_threads() == before


def test_wrapped_function_keeps_its_result_name_and_errors():
    @one_blas_thread
    def add(a, b=1):
        """Adds."""
        if a < 0:
            raise ValueError("negative")
        return a + b

    assert add(2, b=3) == 5
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    with pytest.raises(ValueError, match="negative"):
        add(-1)


class _Seen(Exception):
    pass


def test_locate_runs_with_one_blas_thread(monkeypatch, tmp_path):
    import whichsound.locate as loc

    np.ones((4, 4)) @ np.ones((4, 4))
    if not _blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can control")

    def spy(*args, **kwargs):
        raise _Seen(_blas_threads())

    monkeypatch.setattr(loc, "read_clip", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        if all(t == 1 for t in before):
            pytest.skip("BLAS runs one thread here anyway: nothing to limit")
        with pytest.raises(_Seen) as seen:
            loc.locate(tmp_path / "clip.wav", [str(tmp_path)])
        assert seen.value.args[0] == [1] * len(before)
        assert _blas_threads() == before  # restored after an error too
