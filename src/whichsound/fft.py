"""Real FFTs (rfft, irfft, next_fast_len) as scipy.fft computes them, without scipy.fft's import cost.

scipy.fft's transforms live in one extension module (pocketfft), but importing the package costs about
0.14 s per process (it loads scipy.special and the array-API layer, which walks numpy's lazily loaded
submodules): a ninth of a warm `locate`'s second. The extension alone loads in a few milliseconds, so it
is loaded by itself and called as scipy.fft's own wrappers call it (same plans, same results bit for bit,
the GIL released while it runs). If it cannot be found or does not answer a known transform exactly,
scipy.fft itself serves.
"""

from __future__ import annotations

import os

import numpy as np

_CPUS = os.cpu_count() or 1


def _load_pocketfft():
    """scipy's pocketfft extension module loaded alone, or None (then scipy.fft serves)."""
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("scipy")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / "fft" / "_pocketfft"
        name = "scipy.fft._pocketfft.pypocketfft"
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        found = [p for p in folder.glob("pypocketfft*") if p.name.endswith(suffixes)]
        if len(found) != 1:
            return None
        loader = importlib.machinery.ExtensionFileLoader(name, str(found[0]))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
        loader.exec_module(module)
        x = np.array([1.0, 2.0, 0.0, -1.0], dtype=np.float32)
        X = module.r2c(x, (0,), True, 0, None, 1)
        want = np.array([2, 1 - 3j, 0], dtype=np.complex64)
        if X.dtype != np.complex64 or not np.array_equal(X, want):
            return None
        back = module.c2r(X, (0,), 4, False, 2, None, 1)
        if back.dtype != np.float32 or not np.allclose(back, x, atol=1e-6):
            return None
        if module.good_size(1001, True) != 1024:
            return None
        return module
    except Exception:  # any surprise in a private layout: the public package serves
        return None


_POCKETFFT = _load_pocketfft()


def _workers(workers: int | None) -> int:
    """scipy.fft's `workers`: None is one thread, -1 all cores, -2 all but one."""
    if workers is None:
        return 1
    if workers < 0:
        return max(1, workers + 1 + _CPUS)
    return workers


def _as_float(x) -> np.ndarray:
    """`x` as a real floating array (float16 -> float32, integers -> float64), as scipy.fft takes it."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        return x.astype(np.float32)
    if x.dtype.kind not in "fc":
        return x.astype(np.float64)
    if not x.dtype.isnative or not x.flags.aligned:
        return np.array(x, dtype=x.dtype.newbyteorder("="))
    return x


def _sized(x: np.ndarray, n: int, axis: int) -> np.ndarray:
    """`x` cut or zero-padded to `n` along `axis`."""
    have = x.shape[axis]
    if have == n:
        return x
    if have > n:
        return x[(slice(None),) * axis + (slice(0, n),)]
    width = [(0, 0)] * x.ndim
    width[axis] = (0, n - have)
    return np.pad(x, width)


def rfft(x, n: int | None = None, axis: int = -1, workers: int | None = None) -> np.ndarray:
    """scipy.fft.rfft(x, n, axis, workers=workers): float32 in, complex64 out."""
    if _POCKETFFT is None:
        from scipy import fft

        return fft.rfft(x, n, axis=axis, workers=workers)
    x = _as_float(x)
    if x.dtype.kind == "c":
        raise TypeError("x must be a real sequence")
    axis %= x.ndim
    if n is not None:
        if n < 1:
            raise ValueError(f"invalid number of data points ({n}) specified")
        x = _sized(x, n, axis)
    return _POCKETFFT.r2c(x, (axis,), True, 0, None, _workers(workers))


def irfft(X, n: int | None = None, axis: int = -1, workers: int | None = None) -> np.ndarray:
    """scipy.fft.irfft(X, n, axis, workers=workers): the inverse of rfft, scaled by 1/n."""
    if _POCKETFFT is None:
        from scipy import fft

        return fft.irfft(X, n, axis=axis, workers=workers)
    X = _as_float(X)
    if X.dtype.kind != "c":
        X = X + 0j
    axis %= X.ndim
    if n is None:
        n = 2 * (X.shape[axis] - 1)
        if n < 1:
            raise ValueError(f"invalid number of data points ({n}) specified")
    else:
        X = _sized(X, n // 2 + 1, axis)
    return _POCKETFFT.c2r(X, (axis,), n, False, 2, None, _workers(workers))


def next_fast_len(n: int, real: bool = True) -> int:
    """scipy.fft.next_fast_len(n, real): the smallest length >= n that pocketfft transforms fast."""
    if _POCKETFFT is None:
        from scipy import fft

        return fft.next_fast_len(n, real=real)
    return int(_POCKETFFT.good_size(n, real))
