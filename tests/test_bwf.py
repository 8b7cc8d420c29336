"""Tests for whichsound.bwf: the Broadcast WAV writer (fixtures) and the bext/iXML reader."""

from __future__ import annotations

import io
import struct
import warnings
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whichsound import bwf
from whichsound.bwf import BwfInfo, parse_timecode_rate, read_bwf_info, write_bwf
from whichsound.errors import AudioReadError

NTSC_FILM = Fraction(24000, 1001)
SR = 48000
# 14:22:31:07 at 23.976 NDF: frames counted at 24 per second, each frame lasting 1001/24000 s,
# i.e. 2002 samples at 48 kHz.  2_486_546_062 samples: needs all 32 bits of the low word.
TC_FRAMES = ((14 * 60 + 22) * 60 + 31) * 24 + 7
TIME_REFERENCE = TC_FRAMES * 2002
assert TIME_REFERENCE == 2_486_546_062 > 2**31


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


def _build_riff(chunks: list[tuple[bytes, bytes]], form: bytes = b"RIFF") -> bytes:
    """A WAVE file from (id, payload) chunks; RF64/BW64 get a ds64 chunk and 0xFFFFFFFF sizes."""
    body = b"".join(bwf._chunk(ident, payload) for ident, payload in chunks)
    if form == b"RIFF":
        return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WAVE" + body
    data = next(payload for ident, payload in chunks if ident == b"data")
    ds64 = bwf._chunk(b"ds64", struct.pack("<QQQI", 4 + 36 + len(body), len(data), 0, 0))
    body = body.replace(b"data" + struct.pack("<I", len(data)), b"data\xff\xff\xff\xff", 1)
    return form + b"\xff\xff\xff\xff" + b"WAVE" + ds64 + body


def _with_chunks(path: Path, *, replace: dict[bytes, bytes] | None = None,
                 order: list[bytes] | None = None, form: bytes = b"RIFF") -> None:
    """Rewrite `path` with some chunk payloads replaced and/or the chunks reordered."""
    chunks = {ident: payload for ident, _, payload in _chunks(path)}
    chunks.update(replace or {})
    path.write_bytes(_build_riff([(i, chunks[i]) for i in (order or list(chunks))], form))


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


# --------------------------------------------------------------------------- reader


def test_round_trip_recorder_like_poly(tmp_path):
    path = tmp_path / "77B_T03.wav"
    _recorder_like(path)
    assert read_bwf_info(path) == BwfInfo(
        time_reference=TIME_REFERENCE, samplerate=48000, fps=Fraction(24000, 1001),
        drop_frame=False, project="WHICHSOUND", scene="77B", take="3", tape="DAY04",
        track_names=("BOOM", "LAV"), description="sTAKE=3 sSCENE=77B", originator="SoundDevices")


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_32", "FLOAT"])
def test_round_trip_other_subtypes(tmp_path, subtype):
    path = tmp_path / "x.wav"
    high = 23 * 3600 * 192000  # 192 kHz, late in the day: the TimeReference needs its high word
    assert high >= 2**32
    write_bwf(path, _noise(300, 1)[:, 0], 192000, subtype=subtype, time_reference=high + 7,
              fps=Fraction(30000, 1001), drop_frame=True, take="12", track_names=["MIX"],
              description="line1\nline2", originator="")
    info = read_bwf_info(path)
    assert sf.info(str(path)).subtype == subtype
    assert (info.time_reference, info.samplerate) == (high + 7, 192000)
    assert (info.fps, info.drop_frame) == (Fraction(30000, 1001), True)
    assert (info.project, info.scene, info.take, info.tape) == (None, None, "12", None)
    assert info.track_names == ("MIX",)
    assert (info.description, info.originator) == ("line1\nline2", None)


def test_bext_only_file(tmp_path):
    path = tmp_path / "bext_only.wav"
    write_bwf(path, _noise(10, 2), 44100, time_reference=0)
    info = read_bwf_info(path)
    assert info.time_reference == 0  # midnight is a real value, not "missing"
    assert info.samplerate == 44100 and info.originator == "whichsound"
    assert info.fps is None and info.scene is None and info.track_names == ()


def test_plain_wav_has_no_metadata(tmp_path):
    path = tmp_path / "plain.wav"
    sf.write(path, _noise(100, 2), 96000, subtype="PCM_24")
    assert read_bwf_info(path) == BwfInfo(None, 96000, None, None, None, None, None, None, (),
                                          None, None)


@pytest.mark.parametrize("fmt, suffix", [("FLAC", ".flac"), ("AIFF", ".aif"), ("OGG", ".ogg")])
def test_non_wav_audio_gives_nones(tmp_path, fmt, suffix):
    path = tmp_path / f"x{suffix}"
    sf.write(path, _noise(4800, 2) * 0.5, 48000, format=fmt)
    info = read_bwf_info(path)
    assert info == BwfInfo(None, 48000, None, None, None, None, None, None, (), None, None)


@pytest.mark.parametrize("content", [b"", b"RIFF", b"hello, not audio\n" * 200,
                                     b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(100),
                                     b"RF64\xff\xff\xff\xffWAVE" + bytes(100)])
def test_garbage_raises_audio_read_error(tmp_path, content):
    path = tmp_path / "garbage.wav"
    path.write_bytes(content)
    with pytest.raises(AudioReadError) as err:
        read_bwf_info(path)
    assert err.value.path == path


@pytest.mark.parametrize("name", ["missing.wav", "."])
def test_unopenable_path_raises_audio_read_error(tmp_path, name):
    with pytest.raises(AudioReadError, match="cannot read"):
        read_bwf_info(tmp_path / name)


@pytest.mark.parametrize("ixml", [
    b'<?xml version="1.0"?>\n<BWFXML><SCENE>77B</SCENE><TAKE>3</TAK></BWFXML>',  # mismatched
    b'<?xml version="1.0"?>\n<BWFXML><SCENE>77B</SCENE><TRACK_LIST><TRACK><NAME>BOOM',  # cut
    b"\0" * 64,
    b"not xml at all",
    b'<?xml version="1.0" encoding="UTF-8"?><BWFXML><SCENE>Caf\xe9</SCENE></BWFXML>',  # Latin-1
    b'<!DOCTYPE x [<!ENTITY a "aaaa">]><BWFXML><SCENE>&a;</SCENE></BWFXML>',
])
def test_malformed_ixml_keeps_bext(tmp_path, ixml):
    path = tmp_path / "bad.wav"
    _recorder_like(path)
    _with_chunks(path, replace={b"iXML": ixml})
    info = read_bwf_info(path)
    assert (info.time_reference, info.samplerate) == (TIME_REFERENCE, SR)
    assert (info.description, info.originator) == ("sTAKE=3 sSCENE=77B", "SoundDevices")
    assert (info.fps, info.drop_frame, info.project, info.scene, info.take, info.tape) == (
        None, None, None, None, None, None)
    assert info.track_names == ()


@pytest.mark.parametrize("bext", [b"", b"short" * 10])
def test_malformed_bext_keeps_ixml(tmp_path, bext):
    path = tmp_path / "bad.wav"
    _recorder_like(path)
    _with_chunks(path, replace={b"bext": bext})
    info = read_bwf_info(path)
    assert (info.time_reference, info.description, info.originator) == (None, None, None)
    assert (info.scene, info.take, info.track_names) == ("77B", "3", ("BOOM", "LAV"))


def test_bext_latin1_text(tmp_path):
    path = tmp_path / "latin1.wav"
    _recorder_like(path)
    payload = bytearray(next(c[2] for c in _chunks(path) if c[0] == b"bext"))
    payload[:256] = b"Caf\xe9 sc\xe8ne".ljust(256, b"\0")
    _with_chunks(path, replace={b"bext": bytes(payload)})
    info = read_bwf_info(path)
    assert info.description == "Café scène" and info.time_reference == TIME_REFERENCE


def test_chunks_after_data(tmp_path):
    path = tmp_path / "after.wav"
    _recorder_like(path)
    _with_chunks(path, order=[b"fmt ", b"data", b"iXML", b"bext"])
    assert [c[0] for c in _chunks(path)] == [b"fmt ", b"data", b"iXML", b"bext"]
    assert read_bwf_info(path).scene == "77B"
    assert read_bwf_info(path).time_reference == TIME_REFERENCE
    assert sf.info(str(path)).frames == 4801


@pytest.mark.parametrize("form", [b"RF64", b"BW64"])
def test_rf64(tmp_path, form):
    path = tmp_path / "big.wav"
    _recorder_like(path)
    _with_chunks(path, form=form, order=[b"fmt ", b"data", b"bext", b"iXML"])
    assert path.read_bytes()[:4] == form
    info = read_bwf_info(path)
    assert (info.time_reference, info.take, info.track_names) == (
        TIME_REFERENCE, "3", ("BOOM", "LAV"))
    if form == b"RF64":  # libsndfile reads RF64 (not BW64): the hand-built file is valid
        assert sf.info(str(path)).frames == 4801


def test_crashed_recorder_file(tmp_path):
    """RIFF size 0 and a cut-off data chunk, as a recorder that lost power leaves: still read."""
    path = tmp_path / "crash.wav"
    _recorder_like(path)
    raw = path.read_bytes()
    path.write_bytes(raw[:4] + bytes(4) + raw[8:-1000])
    info = read_bwf_info(path)
    assert (info.time_reference, info.scene, info.track_names) == (
        TIME_REFERENCE, "77B", ("BOOM", "LAV"))


def _counting_open(counter: list[int]):
    """An open() whose file objects add the number of bytes read to counter[0]."""
    class Counting(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            counter[0] += len(data)
            return data

        def readinto(self, buffer):
            n = super().readinto(buffer)
            counter[0] += n or 0
            return n

    def fake_open(file, mode="r", *args, **kwargs):
        assert mode == "rb"
        return Counting(file, "r")

    return fake_open


def test_multi_gb_rf64_reads_headers_only(tmp_path, monkeypatch):
    """A 5 GiB RF64 (sparse) with its metadata after the data: only a few KiB are read."""
    path = tmp_path / "huge.wav"
    _recorder_like(path)
    chunks = {ident: payload for ident, _, payload in _chunks(path)}
    data_size = 5 * 2**30 + 6  # whole 24-bit stereo frames
    trailer = bwf._chunk(b"bext", chunks[b"bext"]) + bwf._chunk(b"iXML", chunks[b"iXML"])
    fmt = bwf._chunk(b"fmt ", chunks[b"fmt "])
    riff_size = 4 + 36 + len(fmt) + 8 + data_size + len(trailer)
    ds64 = bwf._chunk(b"ds64", struct.pack("<QQQI", riff_size, data_size, data_size // 6, 0))
    with open(path, "wb") as f:
        f.write(b"RF64\xff\xff\xff\xffWAVE" + ds64 + fmt + b"data\xff\xff\xff\xff")
        f.seek(data_size, 1)  # sparse hole where the audio would be
        f.write(trailer)
    assert path.stat().st_size == riff_size + 8
    counter = [0]
    monkeypatch.setattr(bwf, "open", _counting_open(counter), raising=False)
    info = read_bwf_info(path)
    assert (info.time_reference, info.scene, info.track_names) == (
        TIME_REFERENCE, "77B", ("BOOM", "LAV"))
    assert 0 < counter[0] < 16384


def test_zero_filled_tail_is_not_walked(tmp_path, monkeypatch):
    """Preallocated zeros after the chunks (RIFF size 0) end the walk instead of being parsed
    8 bytes at a time."""
    path = tmp_path / "prealloc.wav"
    _recorder_like(path)
    raw = path.read_bytes()
    with open(path, "wb") as f:
        f.write(raw[:4] + bytes(4) + raw[8:])
        f.truncate(len(raw) + 2**20)  # walked 8 bytes at a time, this would read 1 MiB
    counter = [0]
    monkeypatch.setattr(bwf, "open", _counting_open(counter), raising=False)
    assert read_bwf_info(path).take == "3"
    assert counter[0] < 16384


def _ixml_with_tracks(tracks: str) -> bytes:
    return f"<BWFXML><TRACK_LIST>{tracks}</TRACK_LIST></BWFXML>".encode()


@pytest.mark.parametrize("tracks, expected", [
    # placed by INTERLEAVE_INDEX, not by document order or CHANNEL_INDEX
    (("<TRACK><CHANNEL_INDEX>1</CHANNEL_INDEX><INTERLEAVE_INDEX>3</INTERLEAVE_INDEX>"
      "<NAME>BOOM</NAME></TRACK>"
      "<TRACK><CHANNEL_INDEX>5</CHANNEL_INDEX><INTERLEAVE_INDEX>1</INTERLEAVE_INDEX>"
      "<NAME>LAV 1</NAME></TRACK>"), ("LAV 1", None, "BOOM")),
    # CHANNEL_INDEX when INTERLEAVE_INDEX is absent; a blank name is None
    (("<TRACK><CHANNEL_INDEX>2</CHANNEL_INDEX><NAME>LAV</NAME></TRACK>"
      "<TRACK><CHANNEL_INDEX>1</CHANNEL_INDEX><NAME> </NAME></TRACK>"), (None, "LAV", None)),
    # entries beyond the channel count are ignored, the first one for a channel wins
    (("<TRACK><INTERLEAVE_INDEX>9</INTERLEAVE_INDEX><NAME>X</NAME></TRACK>"
      "<TRACK><INTERLEAVE_INDEX>2</INTERLEAVE_INDEX><NAME>A</NAME></TRACK>"
      "<TRACK><INTERLEAVE_INDEX>2</INTERLEAVE_INDEX><NAME>B</NAME></TRACK>"), (None, "A", None)),
    # no index at all: document order; bad index text falls back likewise
    (("<TRACK><NAME>M</NAME></TRACK><TRACK><INTERLEAVE_INDEX>x</INTERLEAVE_INDEX>"
      "<NAME>S</NAME></TRACK>"), ("M", "S", None)),
    ("", ()),
])
def test_track_names_by_interleave_index(tmp_path, tracks, expected):
    path = tmp_path / "tracks.wav"
    write_bwf(path, _noise(10, 3), SR, scene="1")
    _with_chunks(path, replace={b"iXML": _ixml_with_tracks(tracks)})
    assert read_bwf_info(path).track_names == expected


@pytest.mark.parametrize("flag, expected", [("DF", True), ("ndf", False), ("", None),
                                            ("maybe", None)])
def test_timecode_flag(tmp_path, flag, expected):
    path = tmp_path / "flag.wav"
    write_bwf(path, _noise(10, 1), SR, scene="1")
    ixml = (f"<BWFXML><SPEED><TIMECODE_RATE>25/1</TIMECODE_RATE>"
            f"<TIMECODE_FLAG>{flag}</TIMECODE_FLAG></SPEED></BWFXML>").encode()
    _with_chunks(path, replace={b"iXML": ixml})
    info = read_bwf_info(path)
    assert (info.fps, info.drop_frame) == (Fraction(25), expected)


@pytest.mark.parametrize("text, expected", [
    ("24000/1001", Fraction(24000, 1001)), ("25/1", Fraction(25)),
    ("30000/1001", Fraction(30000, 1001)), (" 60000 / 1001 ", Fraction(60000, 1001)),
    ("24", Fraction(24)), ("23.976", Fraction(24000, 1001)), ("29.97", Fraction(30000, 1001)),
    ("59.94", Fraction(60000, 1001)), ("25.0", Fraction(25)),
    ("1/0", None), ("0/1", None), ("-25", None), ("abc", None), ("", None), (None, None),
    ("24000/1001/1", None),
])
def test_parse_timecode_rate(text, expected):
    assert parse_timecode_rate(text) == expected


# ------------------------------------------------------- benchmark files (when generated)

BENCH = Path("/tmp/scenes1/scene01")


@pytest.mark.skipif(not (BENCH / "production").is_dir(), reason="benchmark scenes not generated")
def test_benchmark_production_takes():
    from wavinfo import WavInfoReader

    takes = sorted((BENCH / "production").glob("*.wav"))
    assert takes
    for path in takes:
        info = read_bwf_info(path)
        reference = WavInfoReader(str(path))
        assert info.time_reference == reference.bext.time_reference > 0
        assert info.samplerate == sf.info(str(path)).samplerate
        assert (info.scene, info.take, info.tape) == (
            reference.ixml.scene, reference.ixml.take, reference.ixml.tape)
        assert None not in (info.scene, info.take, info.tape)
        assert info.fps in (Fraction(24000, 1001), Fraction(24), Fraction(25),
                            Fraction(30000, 1001), Fraction(30))
        assert info.drop_frame is not None
        assert info.track_names == ("BOOM", "LAV")


@pytest.mark.skipif(not (BENCH / "stems").is_dir(), reason="benchmark scenes not generated")
def test_benchmark_stems():
    stems = sorted((BENCH / "stems").glob("*.wav"))
    assert stems
    for path in stems:
        info = read_bwf_info(path)
        assert info.time_reference is not None and info.fps is not None
        assert len(info.track_names) == sf.info(str(path)).channels
        assert None not in info.track_names


def _extensible_wav(path: Path, channels: int, mask: int, frames: int = 480) -> None:
    """A 16-bit WAVE_FORMAT_EXTENSIBLE file with speaker mask `mask`, written byte by byte (soundfile
    writes no mask)."""
    import uuid

    block = 2 * channels
    pcm = uuid.UUID("00000001-0000-0010-8000-00aa00389b71").bytes_le
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, 48000, 48000 * block, block, 16, 22, 16, mask) + pcm
    data = bytes(frames * block)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_the_speaker_mask_of_an_extensible_wav_is_read_and_lays_out_the_stem(tmp_path):
    from whichsound.stems import discover

    path = tmp_path / "R1_FX.wav"
    _extensible_wav(path, 6, 0x60F)  # L R C LFE and side surrounds
    assert sf.info(str(path)).channels == 6  # a valid file for the decoder too
    assert read_bwf_info(path).channel_mask == 0x60F
    (stem,) = discover([str(tmp_path)]).stems
    assert stem.channel_mask == 0x60F
    g = np.sqrt(0.5)
    assert np.allclose(stem.stereo_fold(), [[1, 0], [0, 1], [g, g], [0, 0], [g, 0], [0, g]])
    _extensible_wav(path, 2, 0)  # a mask of 0: channels tied to no speaker
    assert read_bwf_info(path).channel_mask is None
