"""Alignment: where a questioned clip sits in a stem, by whitened normalised cross-correlation.

The clip and the stem go through one FIR whitening filter derived from the clip's spectrum (flat where the
clip has signal, zero where it has none), so peaks are sharp whatever the content (hum, music, speech) and a
stem many dB under the others in a mix excerpt still peaks at its exact lag. The correlation is normalised by
the clip's and the stem window's energy (an NCC in [-1, 1]) so scores compare across stems of any length and
level; for a clip that is a sum of uncorrelated stems, NCC**2 of a stem is about its share of the clip.

Stems are streamed in overlap-save blocks; per channel only a max-pooled lag curve is kept (one float per
`hop` lags), so memory grows with stem length by 4 bytes per hop, not per sample. Lags are integers in the
stem's samples: lag p means the clip's first sample lies at stem sample p.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from whichsound.audio import AudioReadError, _short, _zero_non_finite

__all__ = [
    "DEFAULT_HOP",
    "ChannelScan",
    "Template",
    "make_template",
    "ncc_lags",
    "refine_peak",
    "ncc_around",
    "curve_peaks",
    "scan_array",
    "scan_file",
]

#: Lags per pooled bin (2.7 ms at 48 kHz): the resolution of the coarse lag curves.
DEFAULT_HOP = 128
_MIN_BLOCK = 1 << 17


@dataclass(frozen=True)
class Template:
    """The clip prepared for one stem sample rate: whitening filter and whitened steady-state template.

    `x` is the mono clip (samples at `samplerate`); `t` = (h * x)[taps-1 : len(x)], the part of the filtered
    clip that does not depend on what lies outside it; `energy` = sum(t**2).
    """

    samplerate: int
    x: np.ndarray
    h: np.ndarray
    t: np.ndarray
    energy: float
    t_fft_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def length(self) -> int:
        """Clip length in samples."""
        return int(self.x.shape[0])

    @property
    def taps(self) -> int:
        return int(self.h.shape[0])

    def conj_spectrum(self, n: int) -> np.ndarray:
        """conj(rfft(t, n)) * rfft(h, n): the block multiplier that filters the stem and correlates it."""
        got = self.t_fft_cache.get(n)
        if got is None:
            from whichsound import fft

            got = (np.conj(fft.rfft(self.t, n)) * fft.rfft(self.h, n)).astype(np.complex64)
            self._keep(n, got)
        return got

    def filter_spectrum(self, n: int) -> np.ndarray:
        key = ("h", n)
        got = self.t_fft_cache.get(key)
        if got is None:
            from whichsound import fft

            got = fft.rfft(self.h, n).astype(np.complex64)
            self._keep(key, got)
        return got

    def _keep(self, key, value: np.ndarray) -> None:
        """Cache a block multiplier, dropping the others when they would hold over _SPECTRA_BYTES (a long
        clip's full-length spectra are tens of MB each)."""
        if sum(v.nbytes for v in list(self.t_fft_cache.values())) + value.nbytes > _SPECTRA_BYTES:
            self.t_fft_cache.clear()
        self.t_fft_cache[key] = value


#: Bytes of block multipliers a Template keeps cached.
_SPECTRA_BYTES = 256 * 2**20


def _whitening_filter(x: np.ndarray, samplerate: int, taps: int, floor_db: float) -> np.ndarray:
    """Linear-phase FIR (odd length `taps`) whose gain is the inverse amplitude spectrum of `x`.

    Where the clip's power is more than -`floor_db` dB under its strongest band the gain is tapered to 0, so
    bands the clip does not carry (above a codec's cut-off, outside a phone's band) weigh nothing.
    """
    nfft = taps - 1
    p = _welch(x, nfft)
    p = np.maximum(p, 1e-30)
    # Smooth over ~1/6 octave-ish neighbourhoods so single tonal lines do not dominate the weighting.
    kernel = np.hanning(7)
    kernel /= kernel.sum()
    p = np.convolve(p, kernel, mode="same")
    top = np.max(p)
    floor = top * 10 ** (floor_db / 10)
    gain = 1.0 / np.sqrt(np.maximum(p, floor))
    # Taper to zero 20 dB below the floor: no weight where the clip has nothing.
    rel = np.clip((10 * np.log10(p / top) - (floor_db - 20)) / 20, 0.0, 1.0)
    gain *= rel
    gain[0] = 0.0  # no DC
    imp = np.fft.irfft(gain, n=nfft)
    imp = np.roll(imp, nfft // 2)
    h = np.zeros(taps)
    h[:nfft] = imp * np.hanning(nfft + 1)[:nfft]
    norm = np.sqrt(np.sum(h**2))
    return (h / norm if norm > 0 else h).astype(np.float64)


def _welch(x: np.ndarray, nfft: int) -> np.ndarray:
    """Average power spectrum of `x` (nfft//2+1 bins) over half-overlapping Hann frames."""
    from numpy.lib.stride_tricks import sliding_window_view

    from whichsound import fft

    seg = min(nfft, len(x))
    win = np.hanning(seg + 1)[:seg]
    hop = max(1, seg // 2)
    frames = sliding_window_view(x, seg)[::hop]
    acc = np.zeros(nfft // 2 + 1)
    for k in range(0, len(frames), 1024):  # bounded memory for long clips
        spec = fft.rfft(frames[k : k + 1024] * win, nfft, axis=-1, workers=-1)
        acc += np.sum(spec.real**2 + spec.imag**2, axis=0)
    return acc / len(frames)


def make_template(x: np.ndarray, samplerate: int, *, floor_db: float = -50.0) -> Template:
    """Prepare a mono clip `x` (samples at `samplerate`) for correlation against stems at that rate."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    taps = int(min(1025, max(33, (n // 4) | 1)))
    h = _whitening_filter(x, samplerate, taps, floor_db)
    t = _filtered(x, h)[taps - 1 : n]
    energy = float(np.dot(t, t))
    return Template(samplerate, x.astype(np.float32), h, t.astype(np.float32), energy)


def fft_length(n: int) -> int:
    """A fast real-FFT length >= n samples. Past 2^20 it is also rounded up to a multiple of 2^16: scipy
    keeps a plan of tens of MB for every long length it has transformed, and a long clip's refinements
    (their lengths a few samples apart) then share one."""
    from whichsound import fft

    if n > 2**20:
        n = -(-n // 2**16) * 2**16
    return fft.next_fast_len(n, real=True)


def _filtered(x: np.ndarray, h: np.ndarray, block: int = 2**20) -> np.ndarray:
    """Full linear convolution of float64 `x` with FIR `h` (len(x) + len(h) - 1 samples): in one FFT when
    short, by overlap-add in blocks of `block` samples when long (bounded temporaries)."""
    from whichsound import fft

    taps = len(h)
    if len(x) <= block:
        m = fft_length(len(x) + taps - 1)
        return fft.irfft(fft.rfft(x, m) * fft.rfft(h, m), m)[: len(x) + taps - 1]
    m = fft.next_fast_len(block + taps - 1, real=True)
    hs = fft.rfft(h, m)
    out = np.zeros(len(x) + taps - 1)
    for a in range(0, len(x), block):
        seg = x[a : a + block]
        out[a : a + len(seg) + taps - 1] += fft.irfft(fft.rfft(seg, m) * hs, m)[: len(seg) + taps - 1]
    return out


def _block_size(length: int, span: int | None = None) -> int:
    """FFT block (samples) for a clip of `length` samples: at least 3x the clip and _MIN_BLOCK over a
    whole file; for a window of `span` lags, just large enough to cover it in one block (a pre-search's
    2 s windows at 8 kHz need 36 k, not 128 k)."""
    n = _MIN_BLOCK
    while n < 3 * length:
        n *= 2
    if span is not None:
        from whichsound import fft

        n = min(n, fft.next_fast_len(span + length, real=True))  # 2-3-5-smooth: a 36 k window is not 64 k
    return n


def ncc_lags(tmpl: Template, seg: np.ndarray, n: int | None = None) -> np.ndarray:
    """NCC of the clip against a stem segment for every lag where the clip fits inside it.

    `seg` is (frames,) or (frames, channels) stem samples; returns (frames - len(x) + 1[, channels]):
    value k is the NCC for the clip's first sample at seg[k].
    """
    from whichsound import fft

    seg = np.asarray(seg, dtype=np.float32)
    squeeze = seg.ndim == 1
    if squeeze:
        seg = seg[:, None]
    L, M = tmpl.length, tmpl.taps
    Lt = L - M + 1
    count = seg.shape[0] - L + 1
    if count <= 0:
        out = np.zeros((0, seg.shape[1]), dtype=np.float32)
        return out[:, 0] if squeeze else out
    if n is None:
        n = fft_length(seg.shape[0])  # no wrap into the lags kept; 2-3-5-smooth, not 2^k
    # A long clip's transforms are tens of MB per channel: then one channel at a time.
    step = seg.shape[1] if n * seg.shape[1] <= _NCC_SAMPLES else 1
    parts = []
    for ch in range(0, seg.shape[1], step):
        B = fft.rfft(seg[:, ch : ch + step], n, axis=0, workers=-1)
        c = fft.irfft(B * tmpl.conj_spectrum(n)[:, None], n, axis=0, workers=-1)
        y = fft.irfft(B * tmpl.filter_spectrum(n)[:, None], n, axis=0, workers=-1)
        del B
        parts.append(_normalise(c, y, tmpl, M - 1, count, Lt))
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return out[:, 0] if squeeze else out


#: Samples x channels of stem transformed at once by ncc_lags.
_NCC_SAMPLES = 2**23


def _window_energy(y: np.ndarray, q0: int, count: int, Lt: int) -> np.ndarray:
    """Energy of `y` (n, ch) over the windows [q0 + k, q0 + k + Lt) for k < count: (count, ch) float64.
    A few lags over a long window (a long clip's refinement) slide from the first window's sum instead of
    holding a float64 cumulative sum as long as the clip."""
    if 8 * count >= Lt:
        y2 = y[q0 : q0 + count + Lt - 1].astype(np.float64) ** 2
        cs = np.zeros((y2.shape[0] + 1, y2.shape[1]))
        np.cumsum(y2, axis=0, out=cs[1:])
        return cs[Lt : Lt + count] - cs[:count]
    first = np.zeros(y.shape[1])
    for a in range(q0, q0 + Lt, 2**20):
        part = y[a : min(a + 2**20, q0 + Lt)].astype(np.float64)
        first += np.einsum("ij,ij->j", part, part)
    head = y[q0 : q0 + count - 1].astype(np.float64) ** 2
    tail = y[q0 + Lt : q0 + Lt + count - 1].astype(np.float64) ** 2
    e = np.empty((count, y.shape[1]))
    e[0] = first
    np.cumsum(tail - head, axis=0, out=e[1:])
    e[1:] += first
    return e


def _normalise(c: np.ndarray, y: np.ndarray, tmpl: Template, q0: int, count: int, Lt: int) -> np.ndarray:
    """NCC for lags q0..q0+count-1 of the correlation `c` with filtered stem `y` (both (n, ch))."""
    e = _window_energy(y, q0, count, Lt)
    num = c[q0 : q0 + count].astype(np.float64)
    denom = np.sqrt(np.maximum(e, 0.0) * tmpl.energy)
    # Silence (or near-digital silence) in the stem window has no meaningful correlation.
    ok = e > tmpl.energy * 1e-9 + 1e-20
    out = np.zeros_like(num)
    np.divide(num, denom, out=out, where=ok)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


@dataclass
class ChannelScan:
    """Coarse result of scanning one stem channel: a max-pooled NCC curve and its noise statistics.

    pooled[k] is the largest NCC for lags lag0 + k*hop ... lag0 + (k+1)*hop - 1.
    """

    channel: int
    lag0: int
    hop: int
    pooled: np.ndarray
    sum_c: float = 0.0
    sum_c2: float = 0.0
    count: int = 0
    best_lag: int = 0  # in stem samples, like every lag outside this class
    best: float = -1.0
    scale: float = 1.0  # stem samples per lag unit of this scan: 6.0 for an 8 kHz scan of a 48 kHz stem
    lags: int = 0  # lags this scan stands for in the significance test (0: the ones it covered)

    @property
    def searched(self) -> int:
        """Lags searched, for the significance test: those scanned, or the whole file's when a pre-search
        chose this scan's window (the false-alarm risk is that of the whole search)."""
        return self.lags or len(self.pooled) * self.hop

    def centre(self, b: int) -> int:
        """Stem sample at the centre of pooled bin `b`."""
        return int(round((self.lag0 + b * self.hop + self.hop / 2) * self.scale))

    def bin_of(self, stem_lag: float) -> int:
        """Pooled bin holding stem sample `stem_lag` (may lie outside 0..len(pooled)-1)."""
        return int((stem_lag / self.scale - self.lag0) // self.hop)

    @property
    def stem_hop(self) -> int:
        """Width of one pooled bin in stem samples (rounded up)."""
        return int(np.ceil(self.hop * self.scale))

    def value_near(self, stem_lag: float, spread: int = 1) -> float:
        """Largest pooled NCC within `spread` bins of `stem_lag` (0 outside the scanned range)."""
        b = self.bin_of(stem_lag)
        lo, hi = max(b - spread, 0), min(b + spread + 1, len(self.pooled))
        return float(self.pooled[lo:hi].max()) if hi > lo else 0.0

    def z_of(self, value: float) -> float:
        """Height of an NCC value above this scan's mean, in noise standard deviations."""
        return (value - self.sum_c / max(self.count, 1)) / self.sigma

    @property
    def sigma(self) -> float:
        """Standard deviation of the NCC over all lags: the correlation's noise floor."""
        if self.count < 2:
            return 1.0
        m = self.sum_c / self.count
        return float(np.sqrt(max(self.sum_c2 / self.count - m * m, 1e-12)))


def merge_scans(parts: list[ChannelScan]) -> ChannelScan:
    """One scan of a channel from scans of several windows of it (same hop and scale): bins outside
    every window hold 0 (no correlation seen), the noise statistics and the best peak are pooled."""
    first = parts[0]
    lag0 = min(p.lag0 for p in parts)
    end = max(p.lag0 + len(p.pooled) * p.hop for p in parts)
    pooled = np.zeros((end - lag0 + first.hop - 1) // first.hop, dtype=np.float32)
    out = ChannelScan(first.channel, lag0, first.hop, pooled, scale=first.scale,
                      lags=max(p.lags for p in parts))
    for p in parts:
        assert p.hop == first.hop and p.scale == first.scale and (p.lag0 - lag0) % p.hop == 0
        k = (p.lag0 - lag0) // p.hop
        np.maximum(pooled[k : k + len(p.pooled)], p.pooled, out=pooled[k : k + len(p.pooled)])
        out.sum_c += p.sum_c
        out.sum_c2 += p.sum_c2
        out.count += p.count
        if p.best > out.best:
            out.best, out.best_lag = p.best, p.best_lag
    return out


def scan_file(
    path,
    tmpl: Template,
    frames: int,
    channels: int,
    *,
    hop: int = DEFAULT_HOP,
    lag_range: tuple[int, int] | None = None,
) -> list[ChannelScan]:
    """Correlate the clip against every channel of a stem file over its whole length, in bounded blocks.

    Lags run from -len(clip)//2 (clip half before the file) to frames - len(clip)//2, or only over
    `lag_range` = (first, last) stem samples when the caller knows roughly where to look. The coarse curve
    normalises each bin of `hop` lags by the stem window's energy at the bin's centre: the window is far
    longer than a bin, so that energy hardly changes inside it (refine_peak recomputes exactly).
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:

            def fill(out: np.ndarray, lo: int, hi: int) -> None:
                f.seek(lo)
                got = f.read(hi - lo, dtype="float32", always_2d=True)
                _zero_non_finite(got)
                out[:, : got.shape[0]] = got.T

            return _scan(fill, tmpl, frames, channels, hop, lag_range, 1.0)
    except AudioReadError:
        raise
    except Exception as exc:
        raise AudioReadError(path, f"cannot read samples ({_short(exc)})") from None


def scan_array(
    data: np.ndarray,
    tmpl: Template,
    *,
    scale: float,
    hop: int = DEFAULT_HOP // 8,
    lag_range: tuple[int, int] | None = None,
) -> list[ChannelScan]:
    """scan_file over an in-memory or memory-mapped (channels, n) array, e.g. an index entry at 8 kHz.

    `tmpl` must be made at the array's rate; `scale` is stem samples per array sample (stem rate / array
    rate), so the scans' bins map back to the stem (ChannelScan.centre); `lag_range` is in array samples.
    """
    channels, frames = int(data.shape[0]), int(data.shape[1])

    def fill(out: np.ndarray, lo: int, hi: int) -> None:
        out[:] = data[:, lo:hi]
        _zero_non_finite(out)

    return _scan(fill, tmpl, frames, channels, hop, lag_range, scale)


def _scan(fill, tmpl: Template, frames: int, channels: int, hop: int, lag_range, scale: float) -> list[ChannelScan]:
    """Overlap-save whitened NCC of `tmpl` against a source read by `fill(out, lo, hi)` into a channel-major
    (channels, hi - lo) slice, max-pooled per hop. Channel-major keeps every per-bin reduction contiguous."""
    from whichsound import fft

    L, M = tmpl.length, tmpl.taps
    Lt = L - M + 1
    lag0 = -(L // 2)
    lag_end = frames - L // 2  # exclusive
    if lag_range is not None:
        lag0 = max(lag0, int(lag_range[0]))
        lag_end = max(lag0 + 1, min(lag_end, int(lag_range[1]) + 1))
    n = _block_size(L, None if lag_range is None else lag_end - lag0 + 2 * hop)
    step = ((n - L + 1) // hop) * hop
    nbins = (lag_end - lag0 + hop - 1) // hop
    scans = [ChannelScan(ch, lag0, hop, np.full(nbins, -1.0, dtype=np.float32), scale=scale)
             for ch in range(channels)]
    conj = tmpl.conj_spectrum(n)[None, :]
    filt = tmpl.filter_spectrum(n)[None, :]
    q0 = M - 1
    span, frac = divmod(Lt, hop)
    quarter = max(1, hop // 4)
    buf = np.zeros((channels, n), dtype=np.float32)
    v = lag0
    while v < lag_end:
        buf[:] = 0.0
        lo, hi = max(v, 0), min(v + n, frames)
        if hi > lo:
            fill(buf[:, lo - v : hi - v], lo, hi)
        B = fft.rfft(buf, axis=-1, workers=-1)
        c = fft.irfft(B * conj, n, axis=-1, workers=-1)
        y = fft.irfft(B * filt, n, axis=-1, workers=-1)
        del B
        nb = step // hop
        # Energy of the filtered stem in hop-long chunks from q0, then per bin-centre window sums.
        need = (nb + span + 2) * hop
        yy = y[:, q0 : q0 + need]
        chunks = np.zeros((channels, nb + span + 2))
        m = yy.shape[1] // hop
        yr = yy[:, : m * hop].reshape(channels, m, hop)
        chunks[:, :m] = np.einsum("ckh,ckh->ck", yr, yr, dtype=np.float64)
        cs = np.concatenate([np.zeros((channels, 1)), np.cumsum(chunks, axis=1)], axis=1)
        k = np.arange(nb + 1)
        e_edge = cs[:, k + span] - cs[:, k] + chunks[:, np.minimum(k + span, chunks.shape[1] - 1)] * (frac / hop)
        e = 0.5 * (e_edge[:, :-1] + e_edge[:, 1:])  # (ch, nb) at bin centres
        cc = c[:, q0 : q0 + nb * hop].reshape(channels, nb, hop)
        denom = np.sqrt(np.maximum(e, 0.0) * tmpl.energy)
        ok = e > tmpl.energy * 1e-9 + 1e-20
        inv = np.zeros_like(denom)
        np.divide(1.0, denom, out=inv, where=ok)
        cmax = np.maximum(cc.max(axis=2), -cc.min(axis=2))  # |NCC|: a polarity flip still aligns
        pooled = np.clip(cmax * inv, 0.0, 1.0).astype(np.float32)
        # Noise statistics from the first quarter of each bin's lags: as good an estimate of the mean and
        # spread over millions of lags, at a quarter of the memory traffic.
        sub = cc[:, :, :quarter]
        s1 = sub.sum(axis=2, dtype=np.float64) * inv
        s2 = np.einsum("cbh,cbh->cb", sub, sub, dtype=np.float64) * inv**2
        del y
        kb0 = (v - lag0) // hop
        valid = min(nb, nbins - kb0)
        for ch, s in enumerate(scans):
            s.pooled[kb0 : kb0 + valid] = pooled[ch, :valid]
            s.sum_c += float(s1[ch, :valid].sum())
            s.sum_c2 += float(s2[ch, :valid].sum())
            s.count += valid * quarter
            i = int(np.argmax(pooled[ch, :valid]))
            if pooled[ch, i] > s.best:
                s.best = float(pooled[ch, i])
                s.best_lag = int(round((v + i * hop + int(np.argmax(np.abs(cc[ch, i])))) * scale))
        del c
        v += step
    return scans


def refine_peak(path, tmpl: Template, lag: int, channels: list[int] | None = None, *, radius: int = DEFAULT_HOP):
    """Full-rate NCC around `lag` (± radius samples) for the given channels; returns per channel
    (fractional lag, peak |NCC|) with parabolic sub-sample interpolation of the peak (a polarity-inverted
    stem peaks negative: it is aligned on |NCC| all the same)."""
    return curve_peaks(*ncc_around(path, tmpl, lag, channels, radius=radius))


def ncc_around(path, tmpl: Template, lag: int, channels: list[int] | None = None, *,
               radius: int = DEFAULT_HOP) -> tuple[int, np.ndarray]:
    """|NCC| at full rate for the lags lag - radius .. lag + radius: (first lag, (2 radius + 1, channels))."""
    from whichsound.audio import read_segment

    L = tmpl.length
    start = lag - radius
    seg = read_segment(path, start, L + 2 * radius)
    if channels is not None:
        seg = seg[:, channels]
    return start, np.abs(ncc_lags(tmpl, seg).astype(np.float64))


def curve_peaks(start: int, ncc: np.ndarray) -> list[tuple[float, float]]:
    """Per channel of an |NCC| curve whose first lag is `start`: (fractional lag of its peak, peak value)."""
    out = []
    for ch in range(ncc.shape[1]):
        i, frac = _parabolic_peak(ncc[:, ch])
        out.append((start + i + frac, float(ncc[i, ch])))
    return out


def _parabolic_peak(col: np.ndarray) -> tuple[int, float]:
    """Index of the largest value and its sub-sample offset (-0.5..0.5) from a parabola through 3 points."""
    i = int(np.argmax(col))
    if 0 < i < len(col) - 1:
        a, b, c = col[i - 1], col[i], col[i + 1]
        d = a - 2 * b + c
        if d < 0:
            return i, float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))
    return i, 0.0


#: Speed changes met in post, as (clip speed relative to the stems, what causes it).
STANDARD_SPEEDS = (
    (1000 / 1001, "24 fps played at 23.976: pull-down"),
    (1001 / 1000, "23.976 played at 24 fps: pull-up"),
    (24 / 25, "25 fps played at 24: PAL slow-down"),
    (25 / 24, "24 fps played at 25: PAL speed-up"),
    (25 / (24000 / 1001), "23.976 played at 25 fps: PAL speed-up"),
    ((24000 / 1001) / 25, "25 fps played at 23.976"),
)


def describe_speed(speed: float, tolerance: float = 2e-4) -> str:
    """Words for a clip speed: '0.1 % slow (24 fps played at 23.976: pull-down)'."""
    pct = (speed - 1.0) * 100
    words = f"{abs(pct):.2g} % {'fast' if pct > 0 else 'slow'}" if abs(pct) >= 0.001 else "at the stems' speed"
    for ratio, cause in STANDARD_SPEEDS:
        if abs(speed / ratio - 1.0) < tolerance:
            return f"{words} ({cause})"
    return words


def clip_in_stem_time(x: np.ndarray, clip_sr: int, stem_sr: int, speed: float = 1.0) -> np.ndarray:
    """The clip resampled onto the stem's sample grid, undoing a playback speed.

    `speed` is the clip's speed relative to the stem (1000/1001 = a 0.1 % slow pull-down): each clip second
    carries `speed` seconds of stem time, so the clip is treated as sampled at clip_sr / speed.
    """
    from whichsound.audio import resample

    return resample(x, clip_sr / speed, stem_sr)


def refine_speed(
    read,
    x: np.ndarray,
    clip_sr: int,
    stem_sr: int,
    lag: float,
    *,
    speed: float = 1.0,
    iterations: int = 3,
    piece_s: float = 0.25,
    radius: int = 256,
) -> tuple[float, float, float]:
    """Refine (speed, lag) of a mono clip `x` near a coarse `lag` from the drift of short-window alignments.

    `read(start, frames)` returns the reference (a stem's channel, or a timeline's stems summed) as mono
    samples at `stem_sr`. The clip, put in stem time at the current speed, is cut into pieces of about
    `piece_s`; each is aligned on its own within ±`radius` samples of where the estimate puts it; a weighted
    line through the pieces' lags gives the residual stretch, which updates the speed. Returns (speed, lag
    of the clip's first sample in stem samples, RMS of the pieces' peak NCC).
    """
    quality = 0.0
    for it in range(iterations):
        y = clip_in_stem_time(x, clip_sr, stem_sr, speed)
        n = len(y)
        k = int(np.clip(n // int(piece_s * stem_sr), 2, 16))
        piece = n // k
        if piece < 512:
            break
        r = radius if it == 0 else max(32, radius // 4)
        ref = read(int(np.floor(lag)) - r, n + 2 * r + 1)
        q, lags, weights = [], [], []
        for j in range(k):
            seg = y[j * piece : (j + 1) * piece]
            if np.max(np.abs(seg)) < 1e-6:
                continue
            tm = make_template(seg, stem_sr)
            lo = j * piece  # the piece's expected position in `ref` is lo + r (+ frac of lag)
            window = ref[lo : lo + piece + 2 * r]
            ncc = np.abs(ncc_lags(tm, window).astype(np.float64))
            if len(ncc) < 3:
                continue
            i, frac = _parabolic_peak(ncc)
            if ncc[i] > 0:
                q.append(lo)
                lags.append(int(np.floor(lag)) - r + lo + i + frac)
                weights.append(ncc[i] ** 2)
        if len(q) < 2:
            break
        qa, la, wa = np.array(q, float), np.array(lags), np.array(weights)
        sw = np.sqrt(wa)
        (a, slope), *_ = np.linalg.lstsq(np.stack([np.ones_like(qa), qa], axis=1) * sw[:, None], la * sw, rcond=None)
        quality = float(np.sqrt(np.mean(wa)))
        if not 0.9 < slope < 1.1:
            break
        speed *= float(slope)
        lag = float(a)
        if abs(slope - 1.0) < 2e-7:
            break
    return speed, lag, quality


#: Clips up to this long (s) have their speed polished on the whole clip's correlation (polish_speed): the
#: two or three pieces refine_speed cuts from a short clip put its speed a few hundredths of a percent off.
POLISH_MAX_S = 5.0
#: The whole clip's peak |NCC| at the pieces' speed needed before polishing (a candidate that is not the
#: clip's place correlates a few hundredths).
POLISH_MIN_NCC = 0.2
#: The polish searches this fraction either side of the pieces' speed, down to POLISH_TOLERANCE.
POLISH_SPAN = 1.5e-3
POLISH_TOLERANCE = 5e-6


_POLISH_RADIUS = 48


def _whole_peak(ref: np.ndarray, first: int, x: np.ndarray, clip_sr: int, stem_sr: int,
                speed: float) -> tuple[float, float]:
    """The whole clip, put in stem time at `speed`, against reference samples `ref` (from stem sample
    `first`, _POLISH_RADIUS before the lag and long enough for any speed tried): (peak |NCC|, fractional
    lag of its first sample there)."""
    y = clip_in_stem_time(x, clip_sr, stem_sr, speed)
    ncc = np.abs(ncc_lags(make_template(y, stem_sr), ref[: len(y) + 2 * _POLISH_RADIUS + 1]).astype(np.float64))
    if len(ncc) == 0:
        return 0.0, float(first + _POLISH_RADIUS)
    i, frac = _parabolic_peak(ncc)
    return float(ncc[i]), first + i + frac


def polish_speed(read, x: np.ndarray, clip_sr: int, stem_sr: int, speed: float, lag: float) -> tuple[float, float]:
    """(speed, lag) of a clip up to POLISH_MAX_S long where its whole |NCC| against the reference (`read`, as
    for refine_speed) peaks, by golden-section search within POLISH_SPAN of `speed` (from refine_speed): a
    0.6 s clip 0.4 % fast whose two pieces gave 1.00276 for 1.00399 (NCC 0.53) peaks at 1.00399 (NCC 0.996).
    Kept only where the peak rises above that at `speed`; a whitened correlation decorrelates within a
    sample or two of drift, so the peak is narrow: about 1e-4 wide for a 0.6 s clip."""
    if len(x) > POLISH_MAX_S * clip_sr:
        return speed, lag
    first = int(np.floor(lag)) - _POLISH_RADIUS
    # Read once, for the longest the clip gets at any speed tried (the stems summed from disk each time
    # cost more than the correlation of a short clip).
    longest = len(clip_in_stem_time(x, clip_sr, stem_sr, speed + POLISH_SPAN))
    ref = read(first, longest + 2 * _POLISH_RADIUS + 1)

    def peak(sp: float) -> tuple[float, float]:
        return _whole_peak(ref, first, x, clip_sr, stem_sr, sp)

    base = peak(speed)[0]
    if base < POLISH_MIN_NCC:
        return speed, lag
    g = (5.0**0.5 - 1.0) / 2.0
    a, b = speed - POLISH_SPAN, speed + POLISH_SPAN
    c, d = b - g * (b - a), a + g * (b - a)
    fc = peak(c)[0]
    fd = peak(d)[0]
    while b - a > POLISH_TOLERANCE:
        if fc > fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = peak(c)[0]
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = peak(d)[0]
    best = (a + b) / 2.0
    top, at = peak(best)
    return (float(best), float(at)) if top > base else (speed, lag)


#: Envelope features for the speed search: analysis rate (Hz), frame hop (samples at that rate), FFT size.
ENV_RATE, _ENV_HOP, _ENV_NFFT = 8000, 80, 256
#: Seconds per envelope frame.
ENV_FRAME_S = _ENV_HOP / ENV_RATE
#: Log-spaced bands (100-3800 Hz) of band_energies(), as FFT bin edges.
_ENV_EDGES = np.unique(np.round(np.geomspace(100, 3800, 9) * _ENV_NFFT / ENV_RATE).astype(int))
ENV_BANDS = len(_ENV_EDGES) - 1


def band_energies(x: np.ndarray) -> np.ndarray:
    """(frames, 8) energies of a mono 8 kHz signal in 8 log-spaced bands (100-3800 Hz), 10 ms hop.

    Frame k covers x[80k : 80k + 256]; a long signal can be done in pieces that start on a multiple of 80
    samples and overlap by 176, their frames concatenated (see envelope_from_energies)."""
    from numpy.lib.stride_tricks import sliding_window_view

    from whichsound import fft

    x = np.asarray(x, dtype=np.float32)
    if len(x) < _ENV_NFFT:
        x = np.pad(x, (0, _ENV_NFFT - len(x)))
    edges = _ENV_EDGES
    win = np.hanning(_ENV_NFFT).astype(np.float32)
    frames = sliding_window_view(x, _ENV_NFFT)[::_ENV_HOP]
    out = [np.zeros((0, len(edges) - 1), np.float32)]
    for k in range(0, len(frames), 8192):  # bounded memory
        v = fft.rfft(frames[k : k + 8192] * win, axis=-1)[:, edges[0] : edges[-1]].view(np.float32)
        v = v * v
        power = v[:, 0::2] + v[:, 1::2]  # |X|^2 without abs()'s square root
        out.append(np.add.reduceat(power, edges[:-1] - edges[0], axis=1))
    return np.concatenate(out)


#: Samples of 8 kHz audio summed at a time by summed_band_energies (a whole number of 80-sample hops).
_ENERGY_BLOCK = _ENV_HOP << 13


def summed_band_energies(arrays: list[np.ndarray]) -> np.ndarray:
    """band_energies() of the sum of every channel of every (channels, n) 8 kHz array (e.g. memory-mapped
    index copies of a timeline's stems), block by block: memory stays a few MB whatever their length."""
    n = min(int(a.shape[1]) for a in arrays)
    overlap = _ENV_NFFT - _ENV_HOP
    out = []
    for lo in range(0, max(n, 1), _ENERGY_BLOCK):
        hi = min(n, lo + _ENERGY_BLOCK + overlap)
        mono = np.zeros(hi - lo, dtype=np.float32)
        for a in arrays:
            mono += np.asarray(a[:, lo:hi], dtype=np.float32).sum(axis=0)
        e = band_energies(mono)
        out.append(e if hi == n else e[: _ENERGY_BLOCK // _ENV_HOP])
        if hi == n:
            break
    return np.concatenate(out) if out else np.zeros((0, ENV_BANDS), np.float32)


def envelope_from_energies(e: np.ndarray) -> np.ndarray:
    """The speed search's features from band_energies(): the frame-to-frame change of log energy (floored
    40 dB under the mean, so silence does not dominate). A speed change of a few percent barely moves
    them, so they correlate where a whitened waveform correlation would not survive the stretch."""
    if len(e) == 0:
        return e.astype(np.float32)
    loge = np.log10(e + 1e-10 + 1e-4 * float(np.mean(e)))
    return np.diff(loge, axis=0, prepend=loge[:1]).astype(np.float32)


def envelope_features(x: np.ndarray) -> np.ndarray:
    """(frames, bands) envelope features of a mono 8 kHz signal (band_energies, then envelope_from_energies)."""
    return envelope_from_energies(band_energies(x))


class EnvelopeSpectrum(NamedTuple):
    """What envelope_ncc needs of a reference's envelope features (frames, bands), made once and reused for
    many clips (and kept in the index: index.Index.derived): the FFT length `n` (frames), the rfft of the
    features over n frames (bins, bands) and the cumulative energy of their frames from 0 (frames + 1,)."""

    n: int
    spectrum: np.ndarray
    cumulative: np.ndarray

    @property
    def frames(self) -> int:
        """Frames of the reference (10 ms each)."""
        return len(self.cumulative) - 1


def envelope_ncc(ref: np.ndarray | EnvelopeSpectrum, clip: np.ndarray, *,
                 clip_spectra: dict | None = None) -> np.ndarray:
    """Normalised correlation of mean-removed clip features (m, bands) at every place in reference features
    `ref` (n, bands), or their envelope_spectrum() when the caller reuses one reference for many clips (it
    must be made for clips of >= m frames): score[k] for the clip's first frame at ref frame k (n - m + 1
    places; empty when shorter). `clip_spectra`: a dict (FFT length -> the clip's spectrum) kept by a caller
    that correlates one clip with many references (the takes of a production folder share a length)."""
    from whichsound import fft

    m = len(clip)
    frames = ref.frames if isinstance(ref, EnvelopeSpectrum) else len(ref)
    if frames < m or m == 0:
        return np.zeros(0)
    sp = ref if isinstance(ref, EnvelopeSpectrum) else envelope_spectrum(ref, m)
    if sp.n < frames + m:
        raise ValueError(f"envelope spectrum made for clips of up to {sp.n - frames} frames, not {m}")
    ce = float(np.sum(clip.astype(np.float64) ** 2))
    if ce <= 0:
        return np.zeros(frames - m + 1)
    C = None if clip_spectra is None else clip_spectra.get(sp.n)
    if C is None:
        C = np.conj(fft.rfft(clip, sp.n, axis=0))
        if clip_spectra is not None:
            clip_spectra[sp.n] = C
    # Summed over the bands before the inverse transform (it is linear): one inverse FFT, not one per band.
    corr = fft.irfft(np.einsum("kb,kb->k", sp.spectrum, C), sp.n)[: frames - m + 1]
    cs = sp.cumulative
    e = cs[m:] - cs[: frames - m + 1]
    return corr / np.sqrt(np.maximum(e, 1e-12) * ce)


def envelope_spectrum(ref: np.ndarray, max_len: int) -> EnvelopeSpectrum:
    """What envelope_ncc needs of reference features `ref` (frames, bands) for clips up to `max_len`
    frames, made once."""
    from whichsound import fft

    n = fft.next_fast_len(len(ref) + max_len, real=True)
    cs = np.concatenate([np.zeros(1), np.cumsum(np.sum(ref.astype(np.float64) ** 2, axis=1))])
    return EnvelopeSpectrum(n, fft.rfft(ref, n, axis=0), cs)


def envelope_places(ref: np.ndarray | EnvelopeSpectrum, clip: np.ndarray, count: int, exclusion: int, *,
                    clip_spectra: dict | None = None, first: int = 0,
                    last: int | None = None) -> list[tuple[int, float]]:
    """The `count` best places (ref frame, score) of mean-removed clip features in `ref` (features or their
    envelope_spectrum), at least `exclusion` frames apart, best first: the candidates a pre-search hands to
    the waveform scan. Only places `first` to `last` (ref frames, inclusive) count."""
    score = envelope_ncc(ref, clip, clip_spectra=clip_spectra).astype(np.float64)
    score[: max(0, first)] = -np.inf
    if last is not None:
        score[max(0, last + 1):] = -np.inf
    out: list[tuple[int, float]] = []
    while len(out) < count and len(score) and np.isfinite(score.max()):
        k = int(np.argmax(score))
        out.append((k, float(score[k])))
        score[max(0, k - exclusion) : k + exclusion + 1] = -np.inf
    return out


#: The speed search's reach: clips sped up or slowed by up to this fraction (5 %: PAL's 4.2 % and a little).
SPEED_SPAN = 0.05


def speed_search(
    x: np.ndarray,
    clip_sr: int,
    references: list[np.ndarray],
    *,
    span: float = SPEED_SPAN,
) -> list[tuple[float, float, float]]:
    """Coarse speed and position of a clip in references, from envelope features over speeds 1 +- `span`.

    `references` are envelope_features() of each candidate reference (a timeline's stems summed, a take).
    Returns, in the order of `references`, (speed, where the clip's first sample lies in the reference in
    seconds, normalised score; (1, 0, 0) for a reference too short): the speed grid moves the clip's end
    by a quarter frame (steps of 0.05 % to 0.4 %), then a parabola through the best three refines it.
    """
    dur_frames = len(x) / clip_sr / ENV_FRAME_S
    step = float(np.clip(0.25 / max(dur_frames, 1.0), 5e-4, 4e-3))
    speeds = 1.0 + np.arange(-span, span + step / 2, step)
    clips = []  # the clip's features at each trial speed, made once for every reference
    for sp in speeds:
        c = envelope_features(clip_in_stem_time(x, clip_sr, ENV_RATE, float(sp)))
        clips.append(c - c.mean(axis=0))
    max_len = max(len(c) for c in clips)
    out = []
    for ref in references:
        if len(ref) <= max_len:
            out.append((1.0, 0.0, 0.0))
            continue
        spectrum = envelope_spectrum(ref, max_len)
        curve = []
        for c in clips:
            score = envelope_ncc(spectrum, c)
            k = int(np.argmax(score)) if len(score) else 0
            curve.append((float(score[k]) if len(score) else 0.0, k))
        vals = np.array([v for v, _ in curve])
        i = int(np.argmax(vals))
        sp = float(speeds[i])
        if 0 < i < len(vals) - 1:
            a, b, c3 = vals[i - 1], vals[i], vals[i + 1]
            d = a - 2 * b + c3
            if d < 0:
                sp += float(np.clip(0.5 * (a - c3) / d, -0.5, 0.5)) * step
        out.append((sp, curve[i][1] * ENV_FRAME_S, float(vals[i])))
    return out
