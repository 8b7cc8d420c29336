"""Tests for whichsound.align: the whitened NCC (make_template, ncc_lags, scan_file, refine_peak).

The stem is real production-like dialogue (a reader's lines over continuous room tone, 48 kHz, 24-bit);
questioned clips are cut from the file as written, so the truth offset is known to the sample.
Lag convention: lag p means the clip's first sample lies at stem sample p.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import R1_SPEECH, SR, lay_out, load_sound, read_back, speech, write_wav
from whichsound.align import DEFAULT_HOP, make_template, ncc_lags, refine_peak, scan_file
from whichsound.audio import read_segment, resample
from whichsound.errors import AudioReadError

STEM_S = 10.0
CLIP = 24_000  # 0.5 s questioned clips


@pytest.fixture(scope="module")
def stem(tmp_path_factory):
    """A 10 s mono dialogue stem: lines over room tone, so no sample of it is digital silence."""
    rng = np.random.default_rng(11)
    lines, _ = lay_out([0.6 * speech(n) for n in R1_SPEECH], STEM_S, rng)
    room = 0.05 * load_sound("amb/btanks__forest.flac", STEM_S, start_s=3.0)
    path = write_wav(tmp_path_factory.mktemp("align") / "R1_DX.wav", lines + room)
    return path, read_back(path)[:, 0]


def _locate(path, x, frames, channels=1):
    """Coarse scan then full-rate refinement, as locate() does: (fractional lag, NCC, channel scans)."""
    tmpl = make_template(x, SR)
    scans = scan_file(path, tmpl, frames, channels)
    best = max(scans, key=lambda s: s.best)
    lag, val = refine_peak(path, tmpl, best.best_lag, [best.channel])[0]
    return lag, val, scans


@pytest.mark.parametrize("offset", [0, 37, 271_113, 300_000, 480_000 - CLIP - 5, 480_000 - CLIP],
                         ids=["first-sample", "near-start", "middle", "block-edge", "near-end", "last-fit"])
def test_unmodified_excerpt_is_found_sample_exact(stem, offset):
    path, audio = stem
    assert len(audio) == 480_000
    x = read_segment(path, offset, CLIP)[:, 0]
    lag, val, scans = _locate(path, x, len(audio))
    assert scans[0].best_lag == offset  # the coarse scan keeps the full-rate argmax: exact integer lag
    # Identical samples: the NCC is 1 up to float32 FFT rounding (~1e-6), and the parabola through a
    # symmetric peak has its vertex on the sample (measured offsets: < 1e-6 samples).
    assert val == pytest.approx(1.0, abs=1e-4)
    assert lag == pytest.approx(offset, abs=0.01)


@pytest.mark.parametrize("fill", ["digital-black", "other-room", "helicopter"])
def test_clip_starting_before_the_stem_has_a_negative_offset(stem, fill):
    path, audio = stem
    n, pre = 2 * CLIP, 9_600  # a 1 s clip that starts 0.2 s before the stem's first sample
    before = {
        "digital-black": lambda: np.zeros(pre, np.float32),
        "other-room": lambda: 0.2 * load_sound("amb/btanks__city.flac", pre / SR, start_s=1.0),  # the previous shot
        "helicopter": lambda: 0.3 * load_sound("sfx/btanks__helicopter.flac", pre / SR, start_s=1.0),  # loud
    }[fill]()
    x = np.concatenate([before, audio[: n - pre]])
    lag, val, _ = _locate(path, x, len(audio))
    # Partial overlap, still sample-exact (measured within 0.002 samples).
    assert lag == pytest.approx(-pre, abs=0.05)
    if fill == "digital-black":
        assert val == pytest.approx(1.0, abs=1e-3)  # nothing outside the stem to disagree with it
    else:
        assert 0.3 < val < 0.99  # only the overlapping 80 % of the clip correlates


def test_clip_running_past_the_end_of_the_stem(stem):
    path, audio = stem
    n, post = 2 * CLIP, 7_000
    after = 0.2 * load_sound("amb/btanks__city.flac", post / SR, start_s=2.0)  # the next shot's room
    x = np.concatenate([audio[-(n - post):], after])
    lag, val, _ = _locate(path, x, len(audio))
    assert lag == pytest.approx(len(audio) - (n - post), abs=0.05)
    assert 0.3 < val < 0.99


def test_score_is_invariant_to_gain(stem):
    path, audio = stem
    rng = np.random.default_rng(3)
    offset = 123_457
    # A copy with white noise at -46 dBFS: the whitening weighs the bands above the recordings' own
    # bandwidth (8-11 kHz) where only the noise is, so the score drops to about 0.45 and could move.
    x = audio[offset : offset + CLIP] + 0.005 * rng.standard_normal(CLIP).astype(np.float32)
    lag0, val0, _ = _locate(path, x, len(audio))
    lag1, val1, _ = _locate(path, x * 10 ** (-20 / 20), len(audio))  # the same clip 20 dB down
    assert 0.2 < val0 < 0.99
    # The NCC divides by both energies: a gain cancels exactly, up to float32 rounding of the scaled clip.
    assert val1 == pytest.approx(val0, abs=1e-3)
    assert lag1 == pytest.approx(lag0, abs=0.01)
    assert lag0 == pytest.approx(offset, abs=0.1)


def test_clip_resampled_through_44k1_is_found_within_a_millisecond(stem):
    import soxr

    path, audio = stem
    offset = 211_111
    review = soxr.resample(audio[offset : offset + CLIP], SR, 44100, quality="HQ")  # a 44.1 kHz copy
    back = resample(review[:, None], 44100, SR)[:, 0]  # as locate() brings clips to the stem's rate
    lag, val, _ = _locate(path, back, len(audio))
    # Both resamplers are linear-phase, so no delay is expected; the brief's tolerance is 1 ms (48 samples).
    # Measured: a few hundredths of a sample.
    assert abs(lag - offset) < 0.001 * SR
    assert abs(lag - offset) < 0.5  # and in fact sub-sample
    assert val > 0.95  # only the band above 20 kHz was lost


def test_fractional_delay_is_interpolated(stem):
    path, audio = stem
    offset, frac = 150_000, 0.3
    seg = audio[offset - 512 : offset + CLIP + 512].astype(np.float64)
    spec = np.fft.rfft(seg)
    k = np.arange(len(spec))
    shifted = np.fft.irfft(spec * np.exp(2j * np.pi * k * frac / len(seg)), len(seg))  # advance by 0.3
    x = shifted[512 : 512 + CLIP].astype(np.float32)  # so its first sample lies at offset + 0.3
    lag, _, _ = _locate(path, x, len(audio))
    # Parabolic interpolation of a whitened (broadband) peak is biased towards the sample: allow 0.15.
    assert lag == pytest.approx(offset + frac, abs=0.15)
    assert lag > offset + 0.05  # and it moved in the right direction


def _reference_ncc(x: np.ndarray, h: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """The whitened NCC from its definition, with scipy.signal: filter both, correlate, normalise."""
    from scipy.signal import convolve, correlate

    x, h, seg = (np.asarray(a, dtype=np.float64) for a in (x, h, seg))
    L, M = len(x), len(h)
    t = convolve(x, h)[M - 1 : L]  # the filtered clip where it does not depend on what lies outside it
    y = convolve(seg, h)[M - 1 : len(seg)]  # the filtered stem, same steady-state part
    num = correlate(y, t, mode="valid", method="direct")
    win = np.convolve(y**2, np.ones(len(t)), mode="valid")
    return num / np.sqrt(win * np.dot(t, t))


def test_ncc_matches_an_independent_scipy_reference(stem):
    path, audio = stem
    seg = audio[200_000 : 200_000 + 6000]
    music = load_sound("music/lincity__02_-_Robert_van_Herk_-_City_Blues.flac", 1500 / SR, start_s=20.0)
    x = seg[2500:4000] + 0.3 * music  # 31 ms of a mix: the line with music under it
    tmpl = make_template(x, SR)
    from scipy.signal import convolve

    np.testing.assert_allclose(tmpl.t, convolve(x.astype(np.float64), tmpl.h)[tmpl.taps - 1 : len(x)],
                               rtol=0, atol=1e-5 * np.max(np.abs(tmpl.t)))
    assert tmpl.energy == pytest.approx(float(np.dot(tmpl.t.astype(np.float64), tmpl.t)), rel=1e-5)
    got = ncc_lags(tmpl, seg)
    ref = _reference_ncc(x, tmpl.h, seg)
    assert got.shape == ref.shape == (6000 - 1500 + 1,)
    # float32 FFTs of 8192 points: ~1e-6 relative error per value; 1e-4 on an NCC in [-1, 1] is generous.
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    assert int(np.argmax(got)) == 2500
    assert 0.2 < got[2500] < 0.99  # the music under the line lowers the peak


def test_scan_file_coarse_curve_follows_a_one_shot_ncc(stem, tmp_path):
    """The block-by-block scan (2**17-sample blocks, 2.7 ms bins) against one big exact correlation."""
    path, audio = stem
    other = 0.4 * load_sound("music/lincity__02_-_Robert_van_Herk_-_City_Blues.flac", STEM_S, start_s=8.0)
    both = write_wav(tmp_path / "R1_2ch.wav", np.stack([audio, other], axis=1), subtype="FLOAT")
    x = audio[333_333 : 333_333 + 12_000]
    tmpl = make_template(x, SR)
    scans = scan_file(both, tmpl, len(audio), 2)
    L = len(x)
    lag0 = -(L // 2)
    padded = np.concatenate([np.zeros((L // 2, 2), np.float32), sf.read(str(both), dtype="float32")[0],
                             np.zeros((L, 2), np.float32)])
    full = ncc_lags(tmpl, padded)[: len(audio)]  # exact NCC for lags -L//2 ... frames - L//2 - 1
    for ch, s in enumerate(scans):
        assert (s.channel, s.lag0, s.hop) == (ch, lag0, DEFAULT_HOP)
        nb = len(s.pooled)
        assert nb == -(-len(full) // DEFAULT_HOP)  # one bin per hop lags, the last one partial
        ref = np.zeros(nb * DEFAULT_HOP, np.float32)
        ref[: len(full)] = np.abs(full[:, ch])  # the coarse curve keeps |NCC|: polarity flips still align
        exact = ref.reshape(nb, DEFAULT_HOP).max(axis=1)
        # The coarse curve normalises a whole bin by the window energy at its centre (align.scan_file), so
        # off-peak values are approximate: measured within 0.011 of the exact bin maxima on this dialogue.
        # A block seam error (wrong lag or overlap) would put values off by their own size (0.1-1).
        np.testing.assert_allclose(s.pooled, exact, rtol=0, atol=0.03)
        # The noise floor is estimated from the first quarter of every bin's lags: its spread within 15 %
        # of the spread over every lag (an estimate over 100 000+ lags; a bias of the subsample, e.g. a
        # wrong normalisation, would be off by far more).
        assert s.count == nb * (DEFAULT_HOP // 4)
        assert s.sigma == pytest.approx(float(np.std(full[:, ch])), rel=0.15)
    true_bin = (333_333 - lag0) // DEFAULT_HOP
    assert int(np.argmax(scans[0].pooled)) == true_bin
    assert scans[0].best_lag == 333_333  # argmax of the raw correlation inside the best bin
    assert scans[0].best == pytest.approx(1.0, abs=0.05)
    assert scans[1].best < 0.3  # music does not hold the line
    assert scans[0].sigma < 0.1  # away from the peak the correlation is noise


def test_scan_file_on_a_corrupt_file_names_it(stem, tmp_path):
    path, audio = stem
    bad = tmp_path / "R1_FX.wav"
    bad.write_bytes(b"RIFF....WAVEfmt junk")
    tmpl = make_template(audio[:4800], SR)
    with pytest.raises(AudioReadError) as err:
        scan_file(bad, tmpl, 480_000, 1)
    assert err.value.path == bad


def test_scans_of_windows_merge_into_the_whole_scans_values_there():
    # Scanning two windows and merging them gives, inside each window, the bins a scan of the whole array
    # gives, 0 between them, the pooled noise statistics and the better peak.
    from whichsound.align import merge_scans, scan_array

    rng = np.random.default_rng(2)
    x = speech(R1_SPEECH[0])[: 3 * SR]
    x8 = resample(x, SR, 8000)
    data = (0.02 * rng.standard_normal((2, 80000))).astype(np.float32)
    data[0, 50000 : 50000 + len(x8)] += x8
    tmpl = make_template(x8[8000:16000], 8000)  # one second of the line: it sits at lag 58000
    whole = scan_array(data, tmpl, scale=6.0)
    a = scan_array(data, tmpl, scale=6.0, lag_range=(16000, 20000))
    b = scan_array(data, tmpl, scale=6.0, lag_range=(56000, 60000))
    merged = merge_scans([a[0], b[0]])
    assert merged.lag0 == 16000 and merged.best == b[0].best and merged.best_lag == b[0].best_lag
    assert merged.best_lag == pytest.approx(58000 * 6, abs=6)  # within one 8 kHz sample, in stem samples
    for part in (a[0], b[0]):
        k = (part.lag0 - whole[0].lag0) // 16
        m = (part.lag0 - merged.lag0) // 16
        # the same correlation, computed in other FFT blocks: equal to float32 rounding
        np.testing.assert_allclose(merged.pooled[m : m + len(part.pooled)],
                                   whole[0].pooled[k : k + len(part.pooled)], atol=1e-5)
    assert not merged.pooled[(20000 - 16000) // 16 + 1 : (56000 - 16000) // 16].any()
    assert merged.count == a[0].count + b[0].count and merged.sum_c2 == a[0].sum_c2 + b[0].sum_c2
    # A window's scan runs in one block just covering it (a 2-3-5-smooth length under the 16 k power of
    # two), the whole array's in 128 k blocks.
    from whichsound.align import _block_size

    n = _block_size(tmpl.length, 4000 + 32)
    assert tmpl.length + 4000 + 32 <= n < 16384 and _block_size(tmpl.length) == 131072


def test_long_clip_shortcuts_give_the_plain_computation():
    # A long clip's template is filtered by overlap-add and its refinement's window energies slide from the
    # first window: both must equal the one-FFT convolution and the cumulative sum they replace, to float64
    # rounding (1e-9 relative is far above it and far below anything the NCC could show).
    from scipy import fft

    from whichsound.align import _filtered, _window_energy

    rng = np.random.default_rng(4)
    x = rng.standard_normal(300_001)
    h = rng.standard_normal(1025)
    m = fft.next_fast_len(len(x) + len(h) - 1, real=True)
    plain = fft.irfft(fft.rfft(x, m) * fft.rfft(h, m), m)[: len(x) + len(h) - 1]
    np.testing.assert_allclose(_filtered(x, h, block=2**16), plain, rtol=0, atol=1e-9 * np.abs(plain).max())

    y = rng.standard_normal((200_000, 2)).astype(np.float32)
    q0, lt = 1024, 150_000
    for count in (17, 40_000):  # few lags: slides; many: cumulative sum
        y2 = y[q0 : q0 + count + lt - 1].astype(np.float64) ** 2
        cs = np.concatenate([np.zeros((1, 2)), np.cumsum(y2, axis=0)])
        np.testing.assert_allclose(_window_energy(y, q0, count, lt), cs[lt : lt + count] - cs[:count], rtol=1e-9)


def test_fft_lengths_are_fast_and_long_ones_are_shared():
    # A long clip's refinements ask for lengths a few samples apart; scipy keeps a plan of tens of MB per
    # length, so past 2^20 they must map to one length. Every length is 2-3-5-smooth and covers the request.
    from whichsound.align import fft_length

    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in (1, 7, 1000, 240_011, 2**20 + 1, 14_400_129, 14_400_000 + 2 * 512 + 1):
        m = fft_length(n)
        assert m >= n and smooth(m)
    assert fft_length(14_400_000 + 129) == fft_length(14_400_000 + 1025)
    assert fft_length(240_000) <= 240_000 * 1.1  # short lengths are not rounded up further


@pytest.mark.parametrize("speed", [0.9958, 1.004, 1000 / 1001])
def test_a_short_clips_drift_is_polished_on_the_whole_clip(stem, speed):
    # A 0.6 s clip: its two pieces put a 0.4 % drift a few hundredths of a percent off (0.05-0.14 % on the
    # held-out bench's drift clips); the whole clip's correlation peaks within a sample or two of drift,
    # about 1e-4 wide, at the true speed: within 1e-5 (a twentieth of the 0.02 %).
    from whichsound.align import clip_in_stem_time, polish_speed, refine_speed

    _, x = stem
    at = 3 * SR + 777
    n = int(0.6 * SR)
    src = x[at : at + int(n * speed) + 64]
    clip = resample(src, SR, SR / speed)[:n]  # played at `speed`: each clip second holds `speed` s of stem
    assert np.max(np.abs(clip_in_stem_time(clip, SR, SR, speed)[: n // 2] - src[: n // 2])) < 0.05

    def read(start, frames):
        return x[start : start + frames]

    rough, lag, quality = refine_speed(read, clip, SR, SR, float(at) + 40, radius=256)
    assert quality > 0
    if abs(speed - 1.0) > 0.002:  # the pieces alone miss these drifts by 1e-4 to 2.5e-4
        assert abs(rough - speed) > 1e-5
    sp, lag = polish_speed(read, clip, SR, SR, rough, lag)
    assert sp == pytest.approx(speed, abs=1e-5)
    assert lag == pytest.approx(at, abs=0.5)  # half a sample: the NCC's parabolic peak
    # Nothing to polish where the clip is not (a whole-clip NCC of a few hundredths): left as it was.
    assert polish_speed(read, clip, SR, SR, rough, float(at + SR)) == (rough, float(at + SR))


def test_band_energies_match_a_frame_by_frame_reference():
    """band_energies() against a plain per-frame computation (Hann window, one-sided |X|^2 summed over each
    band's bins), on 3 s of real speech at 8 kHz and a 1 kHz tone; rtol 1e-4: float32 FFTs either way."""
    from whichsound.align import _ENV_EDGES, _ENV_HOP, _ENV_NFFT, band_energies

    x = resample(speech(R1_SPEECH[0])[: 3 * SR], SR, 8000)
    tone = np.sin(2 * np.pi * 1000.0 * np.arange(8000) / 8000).astype(np.float32)
    win = np.hanning(_ENV_NFFT)
    for sig in (x, tone):
        got = band_energies(sig)
        frames = 1 + (len(sig) - _ENV_NFFT) // _ENV_HOP
        assert got.shape == (frames, len(_ENV_EDGES) - 1)
        for k in (0, frames // 3, frames - 1):
            p = np.abs(np.fft.rfft(sig[k * _ENV_HOP : k * _ENV_HOP + _ENV_NFFT] * win)) ** 2
            want = [p[a:b].sum() for a, b in zip(_ENV_EDGES[:-1], _ENV_EDGES[1:], strict=True)]
            np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-6 * max(want))
    # The tone's energy lies in the one band holding 1 kHz (bin 32 at 31.25 Hz a bin).
    band = int(np.searchsorted(_ENV_EDGES, 32, side="right")) - 1
    e = band_energies(tone)[10]
    assert e[band] > 0.99 * e.sum()
