"""whichsound.fft must give scipy.fft's transforms exactly, with or without its fast-loaded extension."""

import sys

import numpy as np
import pytest
from scipy import fft as sfft

from whichsound import fft

CASES = [  # (shape, axis, n)
    ((1000,), -1, None),
    ((1000,), 0, 1536),  # zero-padded
    ((1000,), 0, 600),  # cut
    ((513, 7, 3), 0, None),  # band-major STFT frames
    ((4, 2048), -1, 3000),
    ((2049, 2), 0, 4096),
]


@pytest.fixture(params=["extension", "scipy.fft"])
def backend(request, monkeypatch):
    if request.param == "scipy.fft":
        monkeypatch.setattr(fft, "_POCKETFFT", None)
    elif fft._POCKETFFT is None:
        pytest.fail("scipy's pocketfft extension did not load alone: every process pays scipy.fft's import")
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis,n", CASES)
def test_matches_scipy_bit_for_bit(backend, dtype, shape, axis, n):
    x = np.random.default_rng(len(shape) + (n or 0)).standard_normal(shape).astype(dtype)
    X = fft.rfft(x, n, axis=axis, workers=-1)
    want = sfft.rfft(x, n, axis=axis, workers=-1)
    assert X.dtype == want.dtype and X.shape == want.shape
    assert np.array_equal(X, want)  # the same library, plans and arguments: identical bits
    m = n or shape[axis]
    for size in (m, m + 2, m - 1):  # the spectrum padded or cut to size // 2 + 1 bins
        back = fft.irfft(X, size, axis=axis, workers=2)
        assert np.array_equal(back, sfft.irfft(want, size, axis=axis, workers=2))
    assert np.array_equal(fft.irfft(X, axis=axis), sfft.irfft(want, axis=axis))


def test_round_trip_and_inputs(backend):
    x = np.arange(12, dtype=np.int16)  # integers transform as float64, as in scipy
    X = fft.rfft(x)
    assert X.dtype == np.complex128
    np.testing.assert_allclose(fft.irfft(X, 12), x, atol=1e-12)  # exact up to rounding
    be = np.arange(8, dtype=">f4")  # non-native byte order
    assert np.array_equal(fft.rfft(be), sfft.rfft(be))
    strided = np.random.default_rng(3).standard_normal((64, 6)).astype(np.float32)[::2, 1::2]
    assert np.array_equal(fft.rfft(strided, axis=0), sfft.rfft(strided, axis=0))
    with pytest.raises(TypeError):
        fft.rfft(np.ones(4, dtype=np.complex64))
    with pytest.raises(ValueError):
        fft.rfft(np.ones(4), 0)


@pytest.mark.parametrize("n", [1, 97, 1001, 48000, 2**20 + 3])
def test_next_fast_len(backend, n):
    assert fft.next_fast_len(n, real=True) == sfft.next_fast_len(n, real=True)


def test_scipy_fft_not_imported_by_a_search(tmp_path):
    """The point of the module: a process that searches never imports scipy.fft (0.14 s of start-up)."""
    import subprocess

    code = ("import sys, numpy as np; import whichsound.locate as L; from whichsound import fft; "
            "fft.irfft(fft.rfft(np.ones(64, np.float32))); "
            "print(fft._POCKETFFT is not None, 'scipy.fft' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]
