"""Broadcast WAV metadata: the `bext` chunk (EBU Tech 3285) and the `iXML` chunk.

The reader tells where a recording sits on the time-of-day timeline (bext TimeReference, in samples
since midnight) and how the recorder labelled it (iXML project, scene, take, tape, timecode rate and
per-channel track names).  The writer exists for tests and fixture scripts: it produces files laid out
like a location recorder's, so the reader can be checked against known values.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
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
            track names that do not match the channel count, non-ASCII or too long bext text, or output over 4 GiB.
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
