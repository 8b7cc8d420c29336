"""Tests for whichsound.audio: probing, decoding clips (soundfile and PyAV), block reading, resampling.

Signals are real recordings from ../shared/sounds at 48 kHz (see conftest.py), written in each format by
soundfile; the truth is the array that was written.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, encode_aac, load_sound, write_wav
from whichsound.audio import iter_blocks, probe, read_clip, read_segment, resample, to_mono
from whichsound.errors import AudioReadError, WhichsoundError

MUSIC = "music/lincity__01_-_pronobozo_-_lincity.flac"  # 44.1 kHz stereo
SPEECH = "speech/en_librivox_reader_pocketsphinx/sense_and_sensibility_01_austen_64kb-0870.flac"  # 16 kHz
SIX = (  # one recording per channel of a 5.1 file: L R C LFE Ls Rs
    "sfx/btanks__helicopter.flac",
    "sfx/btanks__train.flac",
    SPEECH,
    "sfx/btanks__explosion.flac",
    "amb/btanks__forest.flac",
    "sfx/minetest__fire__sounds__fire_large.flac",
)


def stereo_music(seconds: float = 1.5) -> np.ndarray:
    return 0.8 * load_sound(MUSIC, seconds, start_s=3.0, mono=False)


def six_channels(seconds: float = 1.0) -> np.ndarray:
    return np.stack([0.7 * load_sound(rel, seconds, start_s=0.2) for rel in SIX], axis=1)


# One quantisation step of the stored format bounds the error of a round trip (soundfile rounds to the
# nearest step, so the error is at most half a step; one full step leaves room for float32 rounding of the
# read-back value, 2**-24 relative).  Float formats hold the float32 test signal exactly.
FORMATS = [
    # (suffix, soundfile format, subtype, sample rate, tolerance)
    ("wav", "WAV", "PCM_16", 48000, 2.0**-15),
    ("wav", "WAV", "PCM_24", 44100, 2.0**-23),
    ("wav", "WAV", "PCM_32", 96000, 2.0**-24),
    ("wav", "WAV", "FLOAT", 48000, 0.0),
    ("wav", "WAV", "DOUBLE", 22050, 0.0),
    ("flac", "FLAC", "PCM_16", 44100, 2.0**-15),
    ("flac", "FLAC", "PCM_24", 48000, 2.0**-23),
    ("aiff", "AIFF", "PCM_16", 32000, 2.0**-15),
    ("aif", "AIFF", "PCM_24", 48000, 2.0**-23),
]


@pytest.mark.parametrize(("suffix", "fmt", "subtype", "rate", "tol"), FORMATS,
                         ids=[f"{f[1]}-{f[2]}-{f[3]}" for f in FORMATS])
@pytest.mark.parametrize("layout", ["stereo", "5.1"])
def test_probe_and_read_clip_round_trip(tmp_path, suffix, fmt, subtype, rate, tol, layout):
    data = stereo_music() if layout == "stereo" else six_channels()
    path = tmp_path / f"clip.{suffix}"
    sf.write(str(path), data, rate, format=fmt, subtype=subtype)

    info = probe(path)
    assert (info.samplerate, info.channels, info.frames) == (rate, data.shape[1], data.shape[0])
    assert (info.format, info.subtype) == (fmt, subtype)
    assert info.duration_s == pytest.approx(data.shape[0] / rate, abs=1e-12)

    clip = read_clip(path)
    assert clip.samplerate == rate
    assert clip.samples.dtype == np.float32
    assert clip.samples.shape == data.shape
    assert (clip.channels, clip.frames) == (data.shape[1], data.shape[0])
    np.testing.assert_allclose(clip.samples, data, rtol=0, atol=tol)
    # Channels keep their order: each channel correlates with its own source, not with a neighbour.
    for ch in range(data.shape[1]):
        assert np.corrcoef(clip.samples[:, ch], data[:, ch])[0, 1] > 0.999


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_read_segment_matches_the_whole_file(tmp_path, subtype):
    data = six_channels()
    path = write_wav(tmp_path / "fx51.wav", data, subtype=subtype)
    whole = read_clip(path).samples
    for start, n in [(0, 100), (12345, 4800), (len(whole) - 4800, 4800)]:
        seg = read_segment(path, start, n)
        assert seg.shape == (n, 6) and seg.dtype == np.float32
        np.testing.assert_array_equal(seg, whole[start : start + n])  # the same decoder: sample-exact


@pytest.mark.parametrize(
    ("start", "n"),
    [(-300, 1000), (-5000, 1000), (-10, 10), (47_000, 2000), (48_000, 500), (90_000, 100), (-100, 48_200)],
    ids=["straddles-start", "all-before", "ends-at-0", "straddles-end", "starts-at-end", "all-after", "covers-all"],
)
def test_read_segment_outside_the_file_is_zero_padded(tmp_path, start, n):
    data = stereo_music(1.0)  # 48000 frames
    path = write_wav(tmp_path / "m.wav", data, subtype="FLOAT")
    expect = np.zeros((n, 2), dtype=np.float32)
    lo, hi = max(start, 0), min(start + n, len(data))
    if hi > lo:
        expect[lo - start : hi - start] = data[lo:hi]
    seg = read_segment(path, start, n)
    np.testing.assert_array_equal(seg, expect)  # FLOAT WAV: exact


@pytest.mark.parametrize(
    ("frames", "blocksize", "overlap"),
    [(48_000, 8192, 1024), (48_000, 4096, 0), (1000, 4096, 512), (4096, 4096, 100), (4096 + 3 * 3996, 4096, 100),
     (4097, 4096, 100), (3001, 1000, 999)],
    ids=["typical", "no-overlap", "shorter-than-a-block", "exactly-one-block", "ends-on-a-block", "one-over",
         "step-1"],
)
def test_iter_blocks_covers_the_file_exactly_with_the_overlap(tmp_path, frames, blocksize, overlap):
    data = np.resize(stereo_music(1.0), (frames, 2))
    path = write_wav(tmp_path / "m.wav", data, subtype="FLOAT")
    step = blocksize - overlap
    # Copy each block: the generator may reuse one buffer (memory stays at one block).
    blocks = [(s, b.copy()) for s, b in iter_blocks(path, blocksize, overlap)]
    starts = [s for s, _ in blocks]
    assert starts == list(range(0, step * len(blocks), step))  # evenly spaced, `overlap` shared
    assert starts[-1] + blocksize >= frames  # the last block reaches the end ...
    assert len(blocks) == 1 or starts[-2] + blocksize < frames  # ... and no block is superfluous
    covered = np.zeros(frames, dtype=int)
    for s, b in blocks:
        assert b.shape == (blocksize, 2) and b.dtype == np.float32
        k = min(blocksize, frames - s)
        np.testing.assert_array_equal(b[:k], data[s : s + k])
        assert not b[k:].any()  # zero padding after the end
        covered[s : s + k] += 1
    assert covered.min() >= 1  # every sample read
    for (_, prev), (_, nxt) in zip(blocks[:-1], blocks[1:], strict=True):  # neighbours share `overlap` samples
        np.testing.assert_array_equal(nxt[:overlap], prev[step:])


@pytest.mark.parametrize("subtype", ["PCM_24", "PCM_16"])
def test_iter_blocks_sixteen_bit_is_the_top_16_bits_of_integer_pcm(tmp_path, subtype):
    frames, blocksize = 10_000, 4096  # three blocks, the last one padded
    data = np.resize(stereo_music(1.0), (frames, 2))
    path = write_wav(tmp_path / "m.wav", data, subtype=subtype)
    full = np.concatenate([b.copy() for _, b in iter_blocks(path, blocksize, 0)])[:frames]
    blocks = [(s, b.copy()) for s, b in iter_blocks(path, blocksize, 0, sixteen_bit=True)]
    assert [s for s, _ in blocks] == [0, 4096, 8192]
    assert all(b.dtype == np.float32 and b.shape == (blocksize, 2) for _, b in blocks)
    coarse = np.concatenate([b for _, b in blocks])
    assert not coarse[frames:].any()  # zero padding after the end
    coarse = coarse[:frames]
    # On the 16-bit grid, and under one 16-bit step below the full decode (libsndfile truncates);
    # 16-bit PCM exactly.
    np.testing.assert_array_equal(coarse * 32768, np.round(coarse * 32768))
    diff = full - coarse
    if subtype == "PCM_16":
        assert not diff.any()
    else:
        assert diff.min() >= 0.0 and diff.max() < 2.0**-15
        assert diff.max() > 0.0  # 24-bit detail was dropped: the flag did something


def test_iter_blocks_sixteen_bit_reads_a_float_file_in_full(tmp_path):
    """A float file's samples may lie beyond full scale: the 16-bit read is for integer PCM only."""
    data = np.resize(stereo_music(1.0), (10_000, 2))
    data *= 1.5 / np.abs(data).max()  # peaks over full scale, kept by FLOAT (write_wav refuses them)
    path = tmp_path / "f.wav"
    sf.write(str(path), data, SR, subtype="FLOAT")
    full = [b.copy() for _, b in iter_blocks(path, 4096, 0)]
    coarse = [b.copy() for _, b in iter_blocks(path, 4096, 0, sixteen_bit=True)]
    assert max(np.abs(b).max() for b in full) > 1.0
    for a, b in zip(full, coarse, strict=True):
        np.testing.assert_array_equal(a, b)


def test_read_segment_makes_a_float_files_non_finite_samples_zero(tmp_path):
    data = stereo_music(0.5)
    data[100, 0], data[200, 1], data[300, 0] = np.nan, np.inf, -np.inf
    path = write_wav(tmp_path / "blown.wav", data, subtype="FLOAT")
    seg = read_segment(path, 0, len(data))
    assert np.isfinite(seg).all()
    assert seg[100, 0] == seg[200, 1] == seg[300, 0] == 0.0
    keep = np.isfinite(data)
    np.testing.assert_array_equal(seg[keep], data[keep])


def test_iter_blocks_rejects_an_overlap_not_smaller_than_the_block(tmp_path):
    path = write_wav(tmp_path / "m.wav", stereo_music(0.1))
    with pytest.raises(ValueError, match="overlap"):
        next(iter_blocks(path, 1024, 1024))


def _garbage_files(tmp_path):
    rng = np.random.default_rng(7)
    text = tmp_path / "notes.wav"
    text.write_text("this is a sound report, not audio\n" * 20)
    noise = tmp_path / "random.flac"
    noise.write_bytes(rng.bytes(4096))
    empty = tmp_path / "empty.aif"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.wav"
    write_wav(truncated, stereo_music(0.5))
    truncated.write_bytes(truncated.read_bytes()[:30])  # cut inside the fmt chunk
    return [text, noise, empty, truncated]


def test_unreadable_file_raises_audio_read_error_naming_the_file(tmp_path):
    for path in _garbage_files(tmp_path):
        for call in (lambda p: probe(p), lambda p: read_clip(p), lambda p: read_segment(p, 0, 10),
                     lambda p: next(iter_blocks(p, 1024, 0))):
            with pytest.raises(AudioReadError) as err:
                call(path)
            assert err.value.path == path
            assert str(path) in str(err.value)
            assert isinstance(err.value, WhichsoundError)  # the CLI turns these into exit 2
            assert "\n" not in str(err.value)  # one line for the CLI's message


def test_missing_file_and_folder_are_audio_read_errors(tmp_path):
    with pytest.raises(AudioReadError, match="not found") as err:
        read_clip(tmp_path / "nope.wav")
    assert err.value.path == tmp_path / "nope.wav"
    with pytest.raises(AudioReadError, match="folder"):
        read_clip(tmp_path)
    with pytest.raises(AudioReadError, match="nope.wav"):
        probe(tmp_path / "nope.wav")


def test_wav_with_no_frames_is_an_empty_clip_but_not_a_stem(tmp_path):
    path = write_wav(tmp_path / "empty.wav", np.zeros((0, 2), dtype=np.float32))
    assert read_clip(path).frames == 0  # locate() reports the empty clip itself
    with pytest.raises(AudioReadError, match="no audio frames"):
        probe(path)


# ---- containers decoded with PyAV ---------------------------------------------------------------------------


def _lag_and_ncc(y: np.ndarray, x: np.ndarray, search: int = 2048) -> tuple[int, float]:
    """Lag of x inside y (y[lag:] ~ x) within +-search samples, and the NCC there."""
    from scipy.signal import correlate

    core = x[search:-search]
    c = correlate(y[: len(x)], core, mode="valid", method="fft")
    k = int(np.argmax(c))
    seg = y[k : k + len(core)]
    return k - search, float(c[k] / np.sqrt(np.dot(core, core) * np.dot(seg, seg)))


def test_aac_in_m4a_decodes_via_read_clip(tmp_path):
    x = 0.8 * load_sound(SPEECH, 2.0, start_s=0.5)
    path = tmp_path / "review_copy.m4a"
    encode_aac(path, [x], fmt="ipod")
    clip = read_clip(path)
    assert clip.samplerate == SR and clip.channels == 1
    # AAC codes whole 1024-sample frames: the decoder may add up to one frame of padding at the end.
    assert len(x) <= clip.frames <= len(x) + 2048
    lag, ncc = _lag_and_ncc(clip.samples[:, 0], x)
    # The MP4 edit list removes the encoder's priming samples, so the decoded audio starts where the
    # original did (within 2 samples); 128 kb/s AAC keeps speech's waveform (NCC measured 0.999).
    assert abs(lag) <= 2
    assert ncc > 0.98


def test_stream_selects_the_audio_stream_of_a_container(tmp_path):
    a = 0.8 * load_sound(SPEECH, 2.0, start_s=0.5)
    b = 0.8 * load_sound("sfx/btanks__helicopter.flac", 2.0, start_s=1.0)
    path = tmp_path / "two_languages.mp4"
    encode_aac(path, [a, b])
    first, second = read_clip(path, stream=0), read_clip(path, stream=1)
    default = read_clip(path)
    _, n00 = _lag_and_ncc(first.samples[:, 0], a)
    _, n01 = _lag_and_ncc(first.samples[:, 0], b)
    _, n11 = _lag_and_ncc(second.samples[:, 0], b)
    _, n10 = _lag_and_ncc(second.samples[:, 0], a)
    # Each stream carries its own recording (NCC ~1) and not the other (NCC near 0: unrelated sounds).
    assert n00 > 0.95 and n11 > 0.95
    assert n01 < 0.3 and n10 < 0.3
    np.testing.assert_array_equal(default.samples, first.samples)  # no --stream: the first stream
    with pytest.raises(AudioReadError, match=r"no audio stream 2 \(the file has 2\)") as err:
        read_clip(path, stream=2)
    assert err.value.path == path


def test_stream_on_a_wav_decodes_the_same_samples_through_ffmpeg(tmp_path):
    """--stream forces PyAV; its integer-to-float scaling must agree with soundfile's."""
    pytest.importorskip("av")
    data = stereo_music(0.5)
    for subtype, lsb in (("PCM_16", 2.0**-15), ("PCM_24", 2.0**-23)):
        path = write_wav(tmp_path / f"{subtype}.wav", data, subtype=subtype)
        via_av, via_sf = read_clip(path, stream=0), read_clip(path)
        assert via_av.samplerate == via_sf.samplerate == SR
        assert via_av.samples.shape == via_sf.samples.shape == data.shape
        np.testing.assert_allclose(via_av.samples, via_sf.samples, rtol=0, atol=lsb)  # at most one step


# ---- resampling ----------------------------------------------------------------------------------------------


def test_resample_same_rate_is_identity():
    x = stereo_music(0.2)
    assert resample(x, SR, SR) is x


@pytest.mark.parametrize(("sr_in", "sr_out"), [(44100, 48000), (48000, 44100), (48000, 48048), (22050, 48000)])
def test_resample_against_scipy_resample_poly(sr_in, sr_out):
    from fractions import Fraction

    from scipy.signal import resample_poly

    x = load_sound(MUSIC, 2.0, start_s=3.0, mono=False)  # at 48 kHz
    if sr_in != SR:
        x = resample_poly(x, sr_in, SR, axis=0).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32 and y.ndim == 2 and y.shape[1] == 2
    # soxr's output length is the input length times the ratio, to within one sample.
    assert abs(y.shape[0] - x.shape[0] * sr_out / sr_in) <= 1
    r = Fraction(sr_out, sr_in)
    ref = resample_poly(x.astype(np.float64), r.numerator, r.denominator, axis=0)
    n = min(len(ref), len(y))
    edge = sr_out // 20  # filter transients at both ends differ between the two designs
    err = y[edge : n - edge] - ref[edge : n - edge]
    sig = ref[edge : n - edge]
    # Both are linear-phase low-pass resamplers: they agree except in the transition band next to the new
    # Nyquist frequency, where this music has little energy.  -40 dB relative error means no delay, no gain
    # change and no aliasing (a one-sample delay would give about -10 dB at these frequencies).
    assert 10 * np.log10(np.sum(err**2) / np.sum(sig**2)) < -40


def test_resample_keeps_a_tone_frequency_and_level():
    t = np.arange(44100) / 44100
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    y = resample(x[:, None], 44100, SR)[:, 0]
    spec = np.abs(np.fft.rfft(y[2000:-2000] * np.hanning(len(y) - 4000)))
    freq = np.argmax(spec) * SR / (len(y) - 4000)
    assert freq == pytest.approx(1000.0, abs=SR / (len(y) - 4000))  # within one FFT bin (~1 Hz)
    rms = float(np.sqrt(np.mean(y[2000:-2000] ** 2)))
    assert 20 * np.log10(rms / (0.5 / np.sqrt(2))) == pytest.approx(0.0, abs=0.05)  # level within 0.05 dB


def test_to_mono_averages_channels():
    x = np.array([[1.0, 0.0], [0.5, -0.5]], dtype=np.float32)
    np.testing.assert_array_equal(to_mono(x), [0.5, 0.0])
    v = np.ones(3, dtype=np.float32)
    assert to_mono(v) is v


def _mp3(path, x, kbps):
    """x written as a constant-bit-rate MP3 through libsndfile (LAME), as the public bench writes them."""
    sf.write(path, x, SR, format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT",
             compression_level=(320.0 - kbps) / 288.0)


def test_an_mp3_without_its_encoder_delay_header_says_so_and_how_far_its_audio_moved(tmp_path):
    # LAME keeps its encoder delay in an Info header that decoders use to take the delay out; at 48 kb/s
    # mono the header does not fit in a frame and the decoded audio starts LAME_DELAY samples early. The
    # clip must say so (its offsets are those of the decoded audio), with the delay actually measured here:
    # the decoded noise burst lands LAME_DELAY samples later than in the samples encoded (to 2 samples:
    # the codec smears the burst's onset). At 128 kb/s the header is there: no note, no delay.
    from whichsound.audio import LAME_DELAY

    rng = np.random.default_rng(3)
    x = np.zeros(3 * SR, dtype=np.float32)
    x[SR : SR + SR // 2] = 0.3 * rng.standard_normal(SR // 2).astype(np.float32)
    lags = {}
    for kbps in (48, 128):
        path = tmp_path / f"burst_{kbps}.mp3"
        _mp3(path, x, kbps)
        clip = read_clip(path)
        y = clip.samples[:, 0]
        n = min(len(x), len(y))
        c = np.correlate(y[: n].astype(np.float64), x[SR - 4000 : SR + 8000].astype(np.float64), "valid")
        lags[kbps] = int(np.argmax(c)) - (SR - 4000)
        if kbps == 48:
            assert len(clip.notes) == 1 and "encoder-delay" in clip.notes[0] and str(path) in clip.notes[0]
            assert f"{LAME_DELAY} samples ({1000 * LAME_DELAY / SR:.1f} ms)" in clip.notes[0]
        else:
            assert clip.notes == ()
    assert abs(lags[48] - LAME_DELAY) <= 2
    assert abs(lags[128]) <= 2


def test_mp3_gapless_header_is_read_after_an_id3_tag_and_only_from_mp3_streams(tmp_path):
    from whichsound.audio import _mp3_gapless_tag, _mp3_notes

    # MPEG-1 Layer III, 128 kb/s, 48 kHz, stereo, no CRC: the Info header follows 32 bytes of side info.
    frame = bytes([0xFF, 0xFB, 0x94, 0x64]) + bytes(32) + b"Info" + bytes(100)
    bare = bytes([0xFF, 0xFB, 0x94, 0x64]) + bytes(140)
    assert _mp3_gapless_tag(frame) == "Info"
    assert _mp3_gapless_tag(bare) == ""
    # An ID3v2.4 tag of 200 000 bytes (cover art) before the first frame is skipped, its size read from
    # the four 7-bit bytes of its header.
    size = 200_000
    id3 = b"ID3" + bytes([4, 0, 0]) + bytes((size >> s) & 0x7F for s in (21, 14, 7, 0)) + bytes(size)
    for body, noted in ((frame, False), (bare, True)):
        path = tmp_path / f"tagged_{noted}.mp3"
        path.write_bytes(id3 + body)
        assert bool(_mp3_notes(path, SR)) is noted
    # Mono MPEG-1 frames have 17 bytes of side info.
    assert _mp3_gapless_tag(bytes([0xFF, 0xFB, 0x34, 0xC4]) + bytes(17) + b"Xing" + bytes(50)) == "Xing"
    assert _mp3_gapless_tag(b"RIFF" + bytes(60)) is None
    assert _mp3_gapless_tag(bytes([0xFF, 0xFD, 0x94, 0x64]) + bytes(60)) is None  # Layer II
