"""Tests for whichsound.bwf: the Broadcast WAV writer (fixtures) and the bext/iXML reader."""

from __future__ import annotations

import struct
import warnings
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whichsound.bwf import write_bwf

NTSC_FILM = Fraction(24000, 1001)
SR = 48000
# 14:22:31:07 at 23.976 NDF: frames counted at 24 per second, each frame lasting 1001/24000 s.
TC_FRAMES = ((14 * 60 + 22) * 60 + 31) * 24 + 7
TIME_REFERENCE = TC_FRAMES * SR * 1001 // 24000  # = 2_486_643_157 samples, needs > 31 bits
assert TC_FRAMES * SR * 1001 % 24000 == 0


def _chunks(path: Path) -> list[tuple[bytes, int, bytes]]:
    """(id, declared size, payload) of every top-level RIFF chunk, walked by hand for the checks."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8
    out, pos = [], 12
    while pos < len(raw):
        ident, size = raw[pos:pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        out.append((ident, size, raw[pos + 8:pos + 8 + size]))
        pos += 8 + size + size % 2
    assert pos == len(raw), "chunks do not tile the file (missing pad byte?)"
    return out


def _noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 0.3, (frames, channels)), -1, 1)


def _recorder_like(path: Path, audio: np.ndarray | None = None, **overrides) -> np.ndarray:
    """A 2-channel poly file laid out like a location recorder's (BOOM, LAV); returns the input."""
    if audio is None:
        audio = _noise(4801, 2)  # odd frame count
    kwargs = {"subtype": "PCM_24", "time_reference": TIME_REFERENCE, "fps": NTSC_FILM,
              "drop_frame": False, "project": "WHICHSOUND", "scene": "77B", "take": "3",
              "tape": "DAY04", "track_names": ["BOOM", "LAV"],
              "description": "sTAKE=3 sSCENE=77B", "originator": "SoundDevices", **overrides}
    write_bwf(path, audio, SR, **kwargs)
    return audio


# --------------------------------------------------------------------------- writer


def test_writer_layout_is_recorder_like(tmp_path):
    path = tmp_path / "T01.wav"
    _recorder_like(path)
    ids = [c[0] for c in _chunks(path)]
    assert ids == [b"fmt ", b"bext", b"iXML", b"data"]
    bext = next(c for c in _chunks(path) if c[0] == b"bext")
    assert bext[1] == 602
    assert bext[2][:18] == b"sTAKE=3 sSCENE=77B"
    assert bext[2][256:268] == b"SoundDevices"
    low, high, version = struct.unpack_from("<IIH", bext[2], 338)
    assert low + (high << 32) == TIME_REFERENCE and version == 1


def test_writer_ixml_content(tmp_path):
    path = tmp_path / "T01.wav"
    _recorder_like(path, drop_frame=True, fps=Fraction(30000, 1001))
    ixml = next(c for c in _chunks(path) if c[0] == b"iXML")[2]
    root = ET.fromstring(ixml)
    assert root.tag == "BWFXML"
    assert [root.findtext(t) for t in ("PROJECT", "SCENE", "TAKE", "TAPE")] == [
        "WHICHSOUND", "77B", "3", "DAY04"]
    assert root.findtext("SPEED/TIMECODE_RATE") == "30000/1001"
    assert root.findtext("SPEED/TIMECODE_FLAG") == "DF"
    assert root.findtext("SPEED/FILE_SAMPLE_RATE") == "48000"
    tracks = [(t.findtext("CHANNEL_INDEX"), t.findtext("INTERLEAVE_INDEX"), t.findtext("NAME"))
              for t in root.iter("TRACK")]
    assert tracks == [("1", "1", "BOOM"), ("2", "2", "LAV")]


def test_writer_without_ixml_fields_writes_no_ixml(tmp_path):
    path = tmp_path / "plain.wav"
    write_bwf(path, _noise(100, 1)[:, 0], SR, time_reference=5)
    assert [c[0] for c in _chunks(path)] == [b"fmt ", b"bext", b"data"]


def test_writer_odd_ixml_length_is_padded(tmp_path):
    # Try a few scene names so that at least one iXML payload has odd length.
    sizes = set()
    for scene in ("1", "12"):
        path = tmp_path / f"{scene}.wav"
        write_bwf(path, _noise(10, 1), SR, scene=scene)
        sizes.add(next(c for c in _chunks(path) if c[0] == b"iXML")[1] % 2)
        assert sf.info(str(path)).frames == 10
    assert sizes == {0, 1}


def test_wavinfo_reads_writer_output(tmp_path):
    """An independent parser (wavinfo) sees the same fields the writer was given."""
    from wavinfo import WavInfoReader

    path = tmp_path / "T01.wav"
    _recorder_like(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = WavInfoReader(str(path))
    assert info.bext.time_reference == TIME_REFERENCE
    assert info.bext.originator == "SoundDevices"
    assert (info.ixml.scene, info.ixml.take, info.ixml.tape) == ("77B", "3", "DAY04")
    assert [t.name for t in info.ixml.track_list] == ["BOOM", "LAV"]
    assert (info.fmt.sample_rate, info.fmt.channel_count, info.fmt.bits_per_sample) == (SR, 2, 24)
    assert info.data.frame_count == 4801


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_writer_audio_identical_to_soundfile(tmp_path, subtype):
    """soundfile decodes write_bwf's samples bit-identically to its own sf.write output, and
    within one LSB of the input (2**-15, 2**-23, 2**-31; float32 rounding for FLOAT)."""
    audio = _noise(4801, 2, seed=3)
    audio[0] = [1.0, -1.0]
    ours, ref = tmp_path / "ours.wav", tmp_path / "ref.wav"
    _recorder_like(ours, audio, subtype=subtype)
    sf.write(ref, audio, SR, subtype=subtype)
    got, got_sr = sf.read(ours, always_2d=True)
    want, _ = sf.read(ref, always_2d=True)
    assert got_sr == SR and got.shape == audio.shape
    np.testing.assert_array_equal(got, want)
    lsb = {"PCM_16": 2.0**-15, "PCM_24": 2.0**-23, "PCM_32": 2.0**-31, "FLOAT": 2.0**-24}[subtype]
    np.testing.assert_allclose(got, audio, rtol=0, atol=lsb)
    assert sf.info(str(ours)).subtype == subtype


def test_writer_replaces_atomically(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(b"old")
    write_bwf(path, _noise(10, 1), SR)
    assert path.read_bytes()[:4] == b"RIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]


@pytest.mark.parametrize("audio, kwargs", [
    (np.array([0.0, 1.5]), {}),
    (np.array([0.0, np.nan]), {}),
    (np.array([0, 1], dtype=np.int16), {}),
    (np.zeros((2, 2, 2)), {}),
    (np.zeros(4), {"subtype": "PCM_8"}),
    (np.zeros(4), {"time_reference": -1}),
    (np.zeros(4), {"drop_frame": True}),
    (np.zeros(4), {"fps": 23.976}),
    (np.zeros(4), {"track_names": ["A", "B"]}),
    (np.zeros(4), {"description": "é"}),
    (np.zeros(4), {"originator": "x" * 33}),
])
def test_writer_rejects_bad_input(tmp_path, audio, kwargs):
    path = tmp_path / "bad.wav"
    with pytest.raises(ValueError):
        write_bwf(path, audio, SR, **kwargs)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
