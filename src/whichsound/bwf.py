"""Broadcast WAV metadata: the `bext` chunk (EBU Tech 3285) and the `iXML` chunk.

The reader tells where a recording sits on the time-of-day timeline (bext TimeReference, in
samples since midnight) and how the recorder labelled it (iXML project, scene, take, tape,
timecode rate and per-channel track names).  The writer exists for tests and fixture scripts: it
lays files out like a location recorder does, so the reader can be checked against known values.

Parsing uses wavinfo for the RIFF/RF64 chunk headers and the bext fields; the iXML document is
parsed here with xml.etree, because wavinfo exposes no SPEED block (timecode rate and flag),
returns track indices as strings, fails without a TRACK_LIST, and recovers partial data from
malformed XML, whereas a damaged iXML chunk should give no iXML fields at all.  wavinfo's
WavInfoReader itself is not used: its constructor fails outright (losing the bext too) on an
empty or non-XML iXML chunk, a missing data chunk or a RIFF size of 0.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
from wavinfo.rf64_parser import parse_rf64
from wavinfo.riff_parser import ChunkDescriptor, WavInfoEOFError, parse_chunk
from wavinfo.wave_bext_reader import WavBextReader

from whichsound.errors import AudioReadError

__all__ = [
    "BwfInfo",
    "parse_timecode_rate",
    "read_bwf_info",
    "write_bwf",
]

#: Subtypes that :func:`write_bwf` accepts, with their bits per sample.
_SUBTYPE_BITS = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32}

_BEXT_VERSION = 1
_RIFF_LIMIT = 0xFFFFFFFF


def _fixed_ascii(text: str, size: int, field: str) -> bytes:
    """`text` as ASCII, NUL-padded to `size` bytes; EBU Tech 3285 mandates ASCII in bext."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"bext {field} must be ASCII (EBU Tech 3285): {text!r}") from exc
    if len(raw) > size:
        raise ValueError(f"bext {field} is {len(raw)} bytes, at most {size} fit")
    return raw + b"\0" * (size - len(raw))


def _bext_payload(time_reference: int, description: str, originator: str) -> bytes:
    """A version-1 bext payload (602 bytes, no coding history).

    TimeReference is stored as the low and high 32-bit halves of a sample count since midnight.
    Origination date/time and UMID are left zeroed so that equal input gives byte-identical files.
    """
    return b"".join([
        _fixed_ascii(description, 256, "description"),
        _fixed_ascii(originator, 32, "originator"),
        b"\0" * 32,  # OriginatorReference
        b"\0" * 10,  # OriginationDate
        b"\0" * 8,  # OriginationTime
        struct.pack("<II", time_reference & 0xFFFFFFFF, time_reference >> 32),
        struct.pack("<H", _BEXT_VERSION),
        b"\0" * 64,  # UMID
        b"\0" * 190,  # reserved (version 1 has no loudness fields)
    ])


def _ixml_payload(*, samplerate: int, bits: int, channels: int, time_reference: int,
                  fps: Fraction | None, drop_frame: bool, project: str | None, scene: str | None,
                  take: str | None, tape: str | None,
                  track_names: Sequence[str] | None) -> bytes:
    """An iXML document (UTF-8) with the given fields, a SPEED block and an optional TRACK_LIST."""
    root = ET.Element("BWFXML")
    ET.SubElement(root, "IXML_VERSION").text = "1.61"
    for tag, value in (("PROJECT", project), ("SCENE", scene), ("TAKE", take), ("TAPE", tape)):
        if value is not None:
            ET.SubElement(root, tag).text = value
    speed = ET.SubElement(root, "SPEED")
    if fps is not None:
        ET.SubElement(speed, "MASTER_SPEED").text = f"{fps.numerator}/{fps.denominator}"
        ET.SubElement(speed, "CURRENT_SPEED").text = f"{fps.numerator}/{fps.denominator}"
        ET.SubElement(speed, "TIMECODE_RATE").text = f"{fps.numerator}/{fps.denominator}"
        ET.SubElement(speed, "TIMECODE_FLAG").text = "DF" if drop_frame else "NDF"
    ET.SubElement(speed, "FILE_SAMPLE_RATE").text = str(samplerate)
    ET.SubElement(speed, "AUDIO_BIT_DEPTH").text = str(bits)
    ET.SubElement(speed, "TIMESTAMP_SAMPLE_RATE").text = str(samplerate)
    ET.SubElement(speed, "TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_HI").text = str(time_reference >> 32)
    ET.SubElement(speed, "TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO").text = str(
        time_reference & 0xFFFFFFFF)
    if track_names is not None:
        track_list = ET.SubElement(root, "TRACK_LIST")
        ET.SubElement(track_list, "TRACK_COUNT").text = str(channels)
        for i, name in enumerate(track_names, 1):
            track = ET.SubElement(track_list, "TRACK")
            ET.SubElement(track, "CHANNEL_INDEX").text = str(i)
            ET.SubElement(track, "INTERLEAVE_INDEX").text = str(i)
            ET.SubElement(track, "NAME").text = name
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _chunk(ident: bytes, payload: bytes) -> bytes:
    """One RIFF chunk: id, little-endian size, payload, and a pad byte when the size is odd."""
    return ident + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _splice_before_data(wav: bytes, extra: bytes) -> bytes:
    """Insert the chunks in `extra` just before the `data` chunk of a RIFF WAVE byte string."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise RuntimeError("soundfile did not produce a RIFF WAVE stream")
    pos = 12
    while pos + 8 <= len(wav):
        ident = wav[pos:pos + 4]
        size = struct.unpack_from("<I", wav, pos + 4)[0]
        if ident == b"data":
            body = wav[12:pos] + extra + wav[pos:]
            if len(body) + 4 > _RIFF_LIMIT:
                raise ValueError("file would exceed 4 GiB; RF64 output is not supported")
            return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WAVE" + body
        pos += 8 + size + (size % 2)
    raise RuntimeError("soundfile output has no data chunk")


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write `payload` to a temporary file beside `path`, then rename it over `path`.

    Readers never see a half-written file, and an interrupted write leaves any old file intact.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bwf(path: str | os.PathLike[str], audio: np.ndarray, samplerate: int, *,
              subtype: str = "PCM_24", time_reference: int = 0, fps: Fraction | None = None,
              drop_frame: bool = False, project: str | None = None, scene: str | None = None,
              take: str | None = None, tape: str | None = None,
              track_names: Sequence[str] | None = None, description: str = "",
              originator: str = "whichsound") -> None:
    """Write `audio` as a Broadcast WAV file with a `bext` and (when asked for) an `iXML` chunk.

    Meant for tests and fixtures: it lays files out like a location recorder does
    (RIFF: fmt, bext, iXML, data).  The samples are encoded by soundfile, so reading the file
    back with soundfile gives exactly what ``soundfile.write`` with the same subtype would give.

    Args:
        path: Destination; replaced atomically (temp file in the same folder, then rename).
        audio: Float samples in [-1, 1], shape (frames,) or (frames, channels).
        samplerate: Sample rate in Hz.
        subtype: "PCM_16", "PCM_24", "PCM_32" or "FLOAT".
        time_reference: bext TimeReference: the file's start in samples since midnight.
        fps: Timecode rate in frames per second (e.g. ``Fraction(24000, 1001)``), written as the
            iXML SPEED/TIMECODE_RATE.
        drop_frame: Written as iXML SPEED/TIMECODE_FLAG "DF" (else "NDF"); needs `fps`.
        project, scene, take, tape: iXML fields of the same names.
        track_names: One iXML TRACK NAME per channel, in channel order.
        description: bext Description (ASCII, at most 256 bytes).
        originator: bext Originator (ASCII, at most 32 bytes).

    The iXML chunk is written when any of fps, project, scene, take, tape or track_names is given.

    Raises:
        ValueError: On samples outside [-1, 1] or not finite, a bad shape, subtype, sample
            rate or fps (not a Fraction), a negative time reference, drop_frame without fps,
            track names that do not match the channel count, non-ASCII or too long bext text,
            or output over 4 GiB.
    """
    if subtype not in _SUBTYPE_BITS:
        raise ValueError(f"subtype must be one of {sorted(_SUBTYPE_BITS)}, not {subtype!r}")
    samplerate = int(samplerate)
    if samplerate <= 0:
        raise ValueError(f"samplerate must be positive, not {samplerate}")
    data = np.asarray(audio)
    if data.ndim not in (1, 2) or data.shape[0] == 0 or (data.ndim == 2 and data.shape[1] == 0):
        raise ValueError(f"audio must have shape (frames,) or (frames, channels), not {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], not {data.dtype}")
    if not np.all(np.isfinite(data)):
        raise ValueError("audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(data)))
    if peak > 1.0:
        raise ValueError(f"audio peak {peak} is outside [-1, 1]")
    channels = 1 if data.ndim == 1 else data.shape[1]
    time_reference = int(time_reference)
    if not 0 <= time_reference < 2**64:
        raise ValueError(f"time_reference must be in [0, 2**64), not {time_reference}")
    if drop_frame and fps is None:
        raise ValueError("drop_frame needs fps")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, Fraction)):
            raise ValueError(f"fps must be a Fraction such as Fraction(24000, 1001), not {fps!r}")
        fps = Fraction(fps)
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
    if track_names is not None:
        track_names = [str(name) for name in track_names]
        if len(track_names) != channels:
            raise ValueError(f"{len(track_names)} track names for {channels} channels")

    extra = _chunk(b"bext", _bext_payload(time_reference, description, originator))
    if any(v is not None for v in (fps, project, scene, take, tape, track_names)):
        extra += _chunk(b"iXML", _ixml_payload(
            samplerate=samplerate, bits=_SUBTYPE_BITS[subtype], channels=channels,
            time_reference=time_reference, fps=fps, drop_frame=drop_frame, project=project,
            scene=scene, take=take, tape=tape, track_names=track_names))

    buffer = io.BytesIO()
    sf.write(buffer, data, samplerate, subtype=subtype, format="WAV")
    _write_atomic(Path(path), _splice_before_data(buffer.getvalue(), extra))


# --------------------------------------------------------------------------------------- reader


@dataclasses.dataclass(frozen=True)
class BwfInfo:
    """Broadcast WAV metadata of one file; every field is None (or empty) when the file lacks it."""

    #: bext TimeReference: the file's first sample, in samples since midnight.
    time_reference: int | None
    #: Sample rate in Hz (from the fmt chunk, else iXML FILE_SAMPLE_RATE, else the file's header).
    samplerate: int | None
    #: Timecode rate in frames per second, from iXML SPEED/TIMECODE_RATE.
    fps: Fraction | None
    #: True for drop-frame timecode, from iXML SPEED/TIMECODE_FLAG ("DF" / "NDF").
    drop_frame: bool | None
    #: iXML PROJECT, SCENE, TAKE and TAPE (the recorder's roll / sound roll name).
    project: str | None
    scene: str | None
    take: str | None
    tape: str | None
    #: iXML track name per channel, in the file's channel order (0-based); None where unnamed;
    #: empty when the file has no iXML TRACK_LIST.
    track_names: tuple[str | None, ...]
    #: bext Description.
    description: str | None
    #: bext Originator (usually the recorder or software that wrote the file).
    originator: str | None
    #: WAVE_FORMAT_EXTENSIBLE dwChannelMask: which speaker each channel feeds, in the standard's bit
    #: order (bit 0 front left, 1 front right, 2 centre, 3 LFE, 4 back left ...); None when not given.
    channel_mask: int | None = None


_EMPTY = BwfInfo(None, None, None, None, None, None, None, None, (), None, None)
_EXTENSIBLE = 0xFFFE

#: Common decimal spellings of the NTSC-family rates, which are really N*1000/1001.
_DECIMAL_RATES = {
    "23.976": Fraction(24000, 1001), "23.98": Fraction(24000, 1001),
    "29.97": Fraction(30000, 1001), "47.952": Fraction(48000, 1001),
    "47.95": Fraction(48000, 1001), "59.94": Fraction(60000, 1001),
    "119.88": Fraction(120000, 1001),
}

#: Largest bext / iXML / fmt payload that is read; bigger ones are treated as absent (not metadata).
_MAX_META_BYTES = 16 * 1024 * 1024


def parse_timecode_rate(text: str | None) -> Fraction | None:
    """A timecode rate in frames per second from an iXML TIMECODE_RATE string, or None.

    Accepts the iXML ratio form ("24000/1001", "25/1", "30000/1001"), a whole number ("25") and the
    usual decimal spellings of the 1000/1001 rates ("23.976", "29.97", "59.94").  Anything else
    that is not a positive number gives None rather than an error, because the value comes from
    files written by many different recorders.
    """
    if text is None:
        return None
    text = text.strip()
    if text in _DECIMAL_RATES:
        return _DECIMAL_RATES[text]
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            rate = Fraction(int(num.strip()), int(den.strip()))
        else:
            rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def _text(element: ET.Element, path: str) -> str | None:
    """Stripped text of the sub-element at `path`, None when missing or blank."""
    found = element.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


def _positive_int(text: str | None) -> int | None:
    """`text` as a positive integer, None otherwise."""
    try:
        value = int(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None


def _parse_ixml(payload: bytes) -> ET.Element | None:
    """The iXML document's root element, or None when the payload is not well-formed XML.

    Parsed strictly (no recovery), so a damaged document gives no iXML fields at all rather than
    a guessed subset.  Documents with a DTD are refused: iXML never needs one.
    """
    payload = payload.strip(b"\0 \t\r\n")
    if not payload or b"<!DOCTYPE" in payload or b"<!ENTITY" in payload:
        return None
    try:
        return ET.fromstring(payload)
    except (ET.ParseError, ValueError, LookupError):
        return None


def _track_names(root: ET.Element, channels: int | None) -> tuple[str | None, ...]:
    """Per-channel names from iXML TRACK_LIST, placed by INTERLEAVE_INDEX (1-based).

    INTERLEAVE_INDEX is the position in this file's interleaved data; CHANNEL_INDEX is the
    recorder's input number, used only when INTERLEAVE_INDEX is missing (as it can be in mono
    files).  Tracks with neither are placed in document order.  Entries beyond the file's channel
    count are ignored; the first entry for a position wins.
    """
    tracks = root.findall("TRACK_LIST/TRACK")
    if not tracks:
        return ()
    placed: dict[int, str | None] = {}
    for order, track in enumerate(tracks, 1):
        index = (_positive_int(_text(track, "INTERLEAVE_INDEX"))
                 or _positive_int(_text(track, "CHANNEL_INDEX")) or order)
        if channels is not None and index > channels:
            continue
        placed.setdefault(index, _text(track, "NAME"))
    count = channels if channels is not None else max(placed, default=0)
    return tuple(placed.get(i) for i in range(1, count + 1))


def _walk_chunks(f: BinaryIO, form: bytes) -> dict[bytes, ChunkDescriptor]:
    """First descriptor of each top-level chunk of a RIFF/RF64/BW64 WAVE file, data not read.

    Each chunk header is parsed by wavinfo (which resolves RF64 64-bit sizes from ds64).  The
    walk ends at the RIFF size when that is plausible, else at the end of the file (recorders
    that crash mid-take leave a RIFF size of 0 or a stale one), and stops quietly at a truncated
    chunk or at an id that is not four printable ASCII characters (e.g. zero-filled preallocated
    space, which would otherwise be walked 8 bytes at a time).
    """
    file_size = os.fstat(f.fileno()).st_size
    f.seek(4)
    riff_size = struct.unpack("<I", f.read(4))[0]
    context = None
    if form in (b"RF64", b"BW64"):
        try:
            context = parse_rf64(stream=f, signature=form)
        except (WavInfoEOFError, AssertionError, KeyError, struct.error):
            return {}  # no usable ds64 chunk: sizes of the big chunks are unknown
        riff_size = context.bigchunk_table.get(form, 0)
    end = 8 + riff_size if 12 < 8 + riff_size <= file_size else file_size
    found: dict[bytes, ChunkDescriptor] = {}
    f.seek(12)
    while f.tell() + 8 <= end:
        try:
            chunk = parse_chunk(f, rf64_context=context)
        except (WavInfoEOFError, AssertionError, KeyError, struct.error):
            break
        if not isinstance(chunk, ChunkDescriptor):
            continue  # a LIST chunk: nothing in it is needed here
        if not all(0x20 <= byte <= 0x7E for byte in chunk.ident):
            break
        found.setdefault(chunk.ident, chunk)
    return found


def _read_payload(f: BinaryIO, chunk: ChunkDescriptor | None, minimum: int = 1) -> bytes | None:
    """A chunk's payload when it is present, complete and of a plausible metadata size."""
    if chunk is None or not minimum <= chunk.length <= _MAX_META_BYTES:
        return None
    data = chunk.read_data(f)
    return data if len(data) == chunk.length else None


def _bext_fields(payload: bytes | None) -> tuple[int | None, str | None, str | None]:
    """(time_reference, description, originator) from a bext payload, decoded by wavinfo.

    EBU Tech 3285 says ASCII; real files also carry UTF-8 or Latin-1 text, tried in that order.
    """
    if payload is None:
        return None, None, None
    for encoding in ("utf-8", "latin-1"):
        try:
            bext = WavBextReader(payload, encoding)
        except UnicodeDecodeError:
            continue
        except struct.error:
            return None, None, None
        return bext.time_reference, bext.description or None, bext.originator or None
    return None, None, None  # unreachable: latin-1 decodes any bytes


def _info_from_wave(f: BinaryIO, form: bytes) -> BwfInfo | None:
    """BwfInfo of an open RIFF/RF64/BW64 WAVE file; None when it has no fmt chunk."""
    chunks = _walk_chunks(f, form)
    fmt = _read_payload(f, chunks.get(b"fmt "), minimum=16)
    if fmt is None:
        return None
    tag, channels, samplerate = struct.unpack_from("<HHI", fmt, 0)
    mask = None
    if tag == _EXTENSIBLE and len(fmt) >= 24:
        mask = struct.unpack_from("<I", fmt, 20)[0] or None  # 0: channels not tied to speakers
    time_reference, description, originator = _bext_fields(
        _read_payload(f, chunks.get(b"bext"), minimum=602))
    ixml = _read_payload(f, chunks.get(b"iXML"))
    root = _parse_ixml(ixml) if ixml is not None else None
    if root is None:
        return BwfInfo(time_reference, samplerate or None, None, None, None, None, None, None, (),
                       description, originator, mask)
    flag = (_text(root, "SPEED/TIMECODE_FLAG") or "").upper()
    return BwfInfo(
        time_reference=time_reference,
        samplerate=samplerate or _positive_int(_text(root, "SPEED/FILE_SAMPLE_RATE")),
        fps=parse_timecode_rate(_text(root, "SPEED/TIMECODE_RATE")),
        drop_frame={"DF": True, "NDF": False}.get(flag),
        project=_text(root, "PROJECT"),
        scene=_text(root, "SCENE"),
        take=_text(root, "TAKE"),
        tape=_text(root, "TAPE"),
        track_names=_track_names(root, channels or None),
        description=description,
        originator=originator,
        channel_mask=mask,
    )


def _samplerate_of_other_audio(path: Path) -> int | None:
    """Sample rate of a non-WAV audio file from its header (soundfile, then PyAV).

    Raises AudioReadError when neither recognises the file as audio.
    """
    try:
        return int(sf.info(str(path)).samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    try:
        import av  # FFmpeg: for containers libsndfile does not read (m4a, mov, ...)

        with av.open(str(path)) as container:
            rates = [s.codec_context.sample_rate for s in container.streams.audio]
    except Exception as exc:  # PyAV raises many FFmpeg error types
        raise AudioReadError(path, "not a readable audio file") from exc
    if not rates:
        raise AudioReadError(path, "no audio stream")
    return int(rates[0]) or None


def read_bwf_info(path: str | os.PathLike[str]) -> BwfInfo:
    """Read the bext and iXML metadata of a (Broadcast) WAV file, headers only.

    Only the chunk headers and the small metadata chunks are read, never the audio data, so this
    is quick on multi-GB files.  Plain RIFF, RF64 and BW64 files are handled, with the metadata
    chunks before or after the data chunk.  Missing or damaged metadata gives None fields: a bad
    bext gives no bext fields, malformed iXML gives no iXML fields, and neither affects the other.
    Audio files of other formats (FLAC, AIFF, MP3, ...) give a BwfInfo without metadata, with the
    sample rate when their header gives one.

    Raises:
        AudioReadError: When the file cannot be opened or is not audio at all.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) == 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:] == b"WAVE":
                info = _info_from_wave(f, head[:4])
                if info is not None:
                    return info
    except OSError as exc:
        raise AudioReadError(path, f"cannot read: {exc.strerror or exc}") from exc
    return dataclasses.replace(_EMPTY, samplerate=_samplerate_of_other_audio(path))
