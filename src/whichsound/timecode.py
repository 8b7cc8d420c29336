"""Exact SMPTE timecode: frame rates, labels, frame counts, seconds and audio samples.

Film sound post locates sounds by timecode labels ("01:00:12:07") while audio files count samples
(a Broadcast WAV's TimeReference is samples since midnight). This module converts between the two
with integers and `fractions.Fraction` only, so a label never drifts by a frame or a sample the
way float arithmetic does over a 24-hour day at 23.976 or 29.97 drop-frame.

Conventions:

* A timecode label names a frame; its value is the frame count since 00:00:00:00, counted at the
  TRUE frame rate (one frame is 1001/24000 s at 23.976). So 01:00:00:00 at 23.976 is 86 400 frames
  = 3603.6 s of real time = sample 172 972 800 at 48 kHz.
* Drop-frame (29.97 and 59.94 only) skips the LABELS ;00 and ;01 (;00 to ;03 at 59.94) at the
  start of every minute except every tenth minute; no frame is dropped, so 01:00:00;00 at
  29.97 DF is frame 107 892 = 3599.9964 s (sample 172 799 827 at 48 kHz, rounded).
* Labels wrap at 24 hours (of labels, not of real time).
* A frame's first sample is the frame's exact start time times the sample rate, rounded half to
  even; a sample belongs to the frame whose first sample is the last one at or before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import floor, gcd, isfinite

from whichsound.errors import TimecodeError

__all__ = [
    "STANDARD_RATES",
    "FrameRate",
    "format_timecode",
    "frames_to_samples",
    "frames_to_seconds",
    "parse_frame_rate",
    "parse_time",
    "parse_timecode",
    "samples_to_frames",
    "samples_to_timecode",
    "seconds_to_frames",
    "seconds_to_timecode",
    "timecode_to_samples",
]

# Nominal rates (frames per label-second) that also exist slowed by 1000/1001 ("NTSC" rates).
_PULLDOWN_NOMINALS = frozenset({24, 30, 48, 60, 96, 120})
_MAX_NOMINAL = 999


@dataclass(frozen=True)
class FrameRate:
    """A timecode frame rate: exactly `num`/`den` frames per second, drop-frame or not.

    The fraction is stored in lowest terms, so FrameRate(48000, 2002, False) equals
    FrameRate(24000, 1001, False). Only integer rates and the 1000/1001 rates 23.976, 29.97,
    47.952, 59.94, 95.904 and 119.88 are allowed, because only those have a timecode; drop-frame
    only at 29.97 and 59.94 (SMPTE 12-1).
    """

    num: int
    den: int
    drop_frame: bool = False

    def __post_init__(self) -> None:
        text = f"{self.num}/{self.den}"
        for value in (self.num, self.den):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"FrameRate num and den must be int, not {value!r}")
        if self.num <= 0 or self.den <= 0:
            raise TimecodeError(text, "a frame rate must be positive")
        divisor = gcd(self.num, self.den)
        object.__setattr__(self, "num", self.num // divisor)
        object.__setattr__(self, "den", self.den // divisor)
        object.__setattr__(self, "drop_frame", bool(self.drop_frame))
        if self.den == 1:
            if self.num > _MAX_NOMINAL:
                raise TimecodeError(text, f"frame rates above {_MAX_NOMINAL} fps are not supported")
        elif not (self.den == 1001 and self.num % 1000 == 0
                  and self.num // 1000 in _PULLDOWN_NOMINALS):
            raise TimecodeError(
                text, "not a timecode rate: use a whole number of frames per second or "
                "one of 24000/1001, 30000/1001, 48000/1001, 60000/1001 (23.976, 29.97, ...)")
        if self.drop_frame and not self.can_drop_frame:
            raise TimecodeError(
                str(self.fps), "drop-frame exists only at 29.97 and 59.94 fps (30000/1001 and "
                "60000/1001); this rate is always non-drop")

    @property
    def fps(self) -> Fraction:
        """Exact frames per second of real time, e.g. Fraction(24000, 1001)."""
        return Fraction(self.num, self.den)

    @property
    def nominal(self) -> int:
        """Frames per label-second: the frame field runs 0..nominal-1 (24 at 23.976, 30 at 29.97)."""
        return -(-self.num // self.den)

    @property
    def can_drop_frame(self) -> bool:
        """True for the two rates that have a drop-frame timecode: 29.97 and 59.94."""
        return self.den == 1001 and self.nominal in (30, 60)

    @property
    def dropped_per_minute(self) -> int:
        """Labels skipped at the start of each non-tenth minute: 2 at 29.97 DF, 4 at 59.94 DF, else 0."""
        return self.nominal // 15 if self.drop_frame else 0

    @property
    def frames_per_day(self) -> int:
        """Frames from 00:00:00:00 until the labels wrap after 23:59:59 (2 589 408 at 29.97 DF)."""
        return self.nominal * 86_400 - self.dropped_per_minute * 24 * 54

    def __str__(self) -> str:
        if self.den == 1:
            text = str(self.num)
        else:
            text = f"{Decimal(self.num) / Decimal(self.den):.3f}".rstrip("0")
        return f"{text} DF" if self.drop_frame else text


STANDARD_RATES: tuple[FrameRate, ...] = (
    FrameRate(24000, 1001, False),
    FrameRate(24, 1, False),
    FrameRate(25, 1, False),
    FrameRate(30000, 1001, True),
    FrameRate(30000, 1001, False),
    FrameRate(30, 1, False),
    FrameRate(48000, 1001, False),
    FrameRate(48, 1, False),
    FrameRate(50, 1, False),
    FrameRate(60000, 1001, True),
    FrameRate(60000, 1001, False),
    FrameRate(60, 1, False),
)
"""The rates used in film and TV sound post, in the order a menu would list them."""

_RATE_RE = re.compile(
    r"""^\s*
    (?P<value>[0-9]+\s*/\s*[0-9]+|[0-9]*[.,]?[0-9]+)
    \s*(?:fps)?\s*
    (?:(?P<ndf>ndf|nd|non[-_\s]?drop(?:[-_\s]?frame)?)|(?P<df>df|drop(?:[-_\s]?frame)?))?
    \s*(?:fps)?\s*$""",
    re.IGNORECASE | re.VERBOSE | re.ASCII,
)


def _pulldown_match(value: Fraction) -> int | None:
    """Nominal rate n whose n*1000/1001 is within 0.005 of `value` (23.98 -> 24), else None."""
    nominal = round(value * Fraction(1001, 1000))
    if nominal in _PULLDOWN_NOMINALS and abs(value - Fraction(nominal * 1000, 1001)) < Fraction(
            5, 1000):
        return nominal
    return None


def parse_frame_rate(text: str, drop_frame: bool | None = None) -> FrameRate:
    """Parse a frame rate as people and metadata write it; 29.97 and 59.94 are NDF unless DF is said.

    Accepts decimals ("23.976", "23.98", "29.97", "59.94", "47.952", "25", "25.0", "23,976"),
    exact fractions ("24000/1001", "30000/1001"), compact spellings of 1000/1001 rates ("2398",
    "23976", "2997", "5994"), an optional "fps", and a drop-frame marker ("DF", "drop",
    "drop-frame") or non-drop marker ("NDF", "ND", "non-drop"), case-insensitive, with or
    without a space. `drop_frame` sets DF for text that names neither; text that contradicts it,
    drop-frame at a rate that has none, or anything else unparsable raises TimecodeError.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_frame_rate() expects a str, not {type(text).__name__}")
    match = _RATE_RE.match(text)
    if match is None:
        raise TimecodeError(text, "not a frame rate; write e.g. 23.976, 24, 25, 29.97 DF, 30000/1001")
    said_df = match["df"] is not None
    said_ndf = match["ndf"] is not None
    if drop_frame is not None and (said_df and not drop_frame or said_ndf and drop_frame):
        raise TimecodeError(text, f"says {'drop' if said_df else 'non-drop'}-frame but "
                                  f"drop_frame={drop_frame} was asked for")
    df = said_df or (bool(drop_frame) and not said_ndf)

    raw = match["value"].replace(",", ".")
    if "/" in raw:
        num_text, den_text = (part.strip() for part in raw.split("/"))
        if int(den_text) == 0:
            raise TimecodeError(text, "the denominator of a frame rate cannot be 0")
        value = Fraction(int(num_text), int(den_text))
        if value.denominator != 1 and value.denominator != 1001:
            raise TimecodeError(text, "not a timecode rate: an exact rate must be a whole number "
                                      "of frames per second or n*1000/1001 (24000/1001, ...)")
    elif "." in raw:
        value = Fraction(raw)
        if value.denominator != 1:
            nominal = _pulldown_match(value)
            if nominal is None:
                raise TimecodeError(text, "not a timecode rate: use a whole number of frames per "
                                          "second or 23.976, 29.97, 47.952, 59.94, 95.904, 119.88")
            value = Fraction(nominal * 1000, 1001)
    else:
        value = Fraction(int(raw))
        if value > _MAX_NOMINAL:
            # "2997" is 29.97 with the point left out: find the one place the point can go.
            found = {n for i in range(1, len(raw)) if (n := _pulldown_match(
                Fraction(int(raw), 10 ** (len(raw) - i)))) is not None}
            if len(found) != 1:
                raise TimecodeError(text, f"not a frame rate (a rate above {_MAX_NOMINAL} fps, or "
                                          "a 1000/1001 rate written without its point)")
            value = Fraction(found.pop() * 1000, 1001)
    if value == 0:
        raise TimecodeError(text, "a frame rate must be positive")
    try:
        return FrameRate(value.numerator, value.denominator, df)
    except TimecodeError as err:
        raise TimecodeError(text, err.problem) from None


def _as_rate(rate: FrameRate | str) -> FrameRate:
    """Accept a FrameRate or a rate's text (parsed by parse_frame_rate)."""
    if isinstance(rate, FrameRate):
        return rate
    if isinstance(rate, str):
        return parse_frame_rate(rate)
    raise TypeError(f"rate must be a FrameRate or str, not {type(rate).__name__}")


def _named(rate: FrameRate) -> str:
    """A rate for messages: "25 fps", "29.97 fps", "29.97 DF"."""
    return str(rate) if rate.drop_frame else f"{rate} fps"


_TIMECODE_RE = re.compile(
    r"^\s*(?P<h>[0-9]{1,2})(?P<s1>[:;])(?P<m>[0-9]{2})(?P<s2>[:;])(?P<s>[0-9]{2})"
    r"(?P<s3>[:;.])(?P<f>[0-9]{2,3})\s*$",
    re.ASCII,
)


def parse_timecode(text: str, rate: FrameRate | str) -> int:
    """Frame count since 00:00:00:00 of a label "HH:MM:SS:FF" at `rate` (drop-frame aware).

    Also accepts "HH:MM:SS;FF", "HH;MM;SS;FF" and "HH:MM:SS.FF", with spaces around. A ';' marks
    drop-frame: at a 29.97 or 59.94 rate the label is read as DF even if `rate` is NDF (the
    frame count is at the same true rate either way); at a rate with no drop-frame it is an
    error. Fields out of range (hours >= 24, minutes or seconds >= 60, frames >= the nominal
    rate) and drop-frame labels that do not exist (00:01:00;00) raise TimecodeError.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_timecode() expects a str, not {type(text).__name__}")
    rate = _as_rate(rate)
    match = _TIMECODE_RE.match(text)
    if match is None:
        raise TimecodeError(text, "not a timecode; expected HH:MM:SS:FF (HH:MM:SS;FF for "
                                  "drop-frame)")
    s1, s2, s3 = match["s1"], match["s2"], match["s3"]
    if s1 != s2 or (s1 == ";" and s3 != ";"):
        raise TimecodeError(text, "mixed separators; expected HH:MM:SS:FF, HH:MM:SS;FF, "
                                  "HH;MM;SS;FF or HH:MM:SS.FF")
    if ";" in (s1, s3) and not rate.drop_frame:
        if not rate.can_drop_frame:
            raise TimecodeError(text, f"';' marks drop-frame timecode, which does not exist at "
                                      f"{rate} fps (only at 29.97 and 59.94)")
        rate = FrameRate(rate.num, rate.den, True)
    width = max(2, len(str(rate.nominal - 1)))
    if len(match["f"]) != width:
        raise TimecodeError(text, f"the frames field must have {width} digits at {_named(rate)}")
    hours, minutes, seconds, frames = (int(match[k]) for k in "hmsf")
    if hours >= 24:
        raise TimecodeError(text, f"hours must be 00-23, not {hours:02d}")
    if minutes >= 60:
        raise TimecodeError(text, f"minutes must be 00-59, not {minutes:02d}")
    if seconds >= 60:
        raise TimecodeError(text, f"seconds must be 00-59, not {seconds:02d}")
    if frames >= rate.nominal:
        raise TimecodeError(text, f"frame {frames:02d} does not exist at {_named(rate)} "
                                  f"(frames run 00-{rate.nominal - 1:02d})")
    drop = rate.dropped_per_minute
    if drop and seconds == 0 and frames < drop and minutes % 10 != 0:
        raise TimecodeError(
            text, f"no such label in {rate}: drop-frame skips frames 00-{drop - 1:02d} at the "
                  f"start of every minute except minutes 00, 10, 20, 30, 40, 50 "
                  f"(the label after {hours:02d}:{minutes - 1:02d}:59;{rate.nominal - 1:02d} "
                  f"is {hours:02d}:{minutes:02d}:00;{drop:02d})")
    total_minutes = 60 * hours + minutes
    labels = (3600 * hours + 60 * minutes + seconds) * rate.nominal + frames
    return labels - drop * (total_minutes - total_minutes // 10)


def format_timecode(frames: int, rate: FrameRate | str) -> str:
    """Label of frame number `frames` since 00:00:00:00 at `rate`: "HH:MM:SS:FF" or "HH:MM:SS;FF".

    The inverse of parse_timecode. Frame counts outside one day wrap (the day has
    rate.frames_per_day frames), negative ones too: -1 is 23:59:59:23 at 24 fps.
    """
    if isinstance(frames, bool) or not isinstance(frames, int):
        raise TypeError(f"frames must be an int, not {frames!r}")
    rate = _as_rate(rate)
    nominal = rate.nominal
    number = frames % rate.frames_per_day
    drop = rate.dropped_per_minute
    if drop:
        per_ten_minutes = nominal * 600 - 9 * drop
        per_minute = nominal * 60 - drop
        tens, rest = divmod(number, per_ten_minutes)
        # Add back the labels skipped before this frame: 9 minutes' worth per full ten minutes,
        # plus one minute's worth per dropped minute started in this ten-minute block.
        number += 9 * drop * tens
        if rest >= drop:
            number += drop * ((rest - drop) // per_minute)
    label_seconds, frame = divmod(number, nominal)
    hours, rest_seconds = divmod(label_seconds, 3600)
    minutes, seconds = divmod(rest_seconds, 60)
    width = max(2, len(str(nominal - 1)))
    separator = ";" if rate.drop_frame else ":"
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{frame:0{width}d}"


def _check_samplerate(samplerate: int | Fraction) -> Fraction:
    if isinstance(samplerate, bool) or not isinstance(samplerate, (int, Fraction)):
        raise TypeError(f"samplerate must be an int or Fraction, not {samplerate!r}")
    if samplerate <= 0:
        raise ValueError(f"samplerate must be positive, not {samplerate}")
    return Fraction(samplerate)


def frames_to_seconds(frames: int, rate: FrameRate | str) -> Fraction:
    """Exact real time in seconds at which frame `frames` starts (frames * den / num)."""
    rate = _as_rate(rate)
    return Fraction(frames * rate.den, rate.num)


def seconds_to_frames(seconds: float | Fraction | Decimal, rate: FrameRate | str) -> int:
    """Frame (counted from 0 s) containing the instant `seconds` of real time (floor).

    A float is taken as the decimal it prints as (3603.6 means exactly 3603.6 s, not the
    binary value just below it), so a time read from text lands on the frame a person expects.
    """
    rate = _as_rate(rate)
    return floor(_exact_seconds(seconds) * rate.fps)


def _exact_seconds(seconds: float | Fraction | Decimal) -> Fraction:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, Fraction, Decimal)):
        raise TypeError(f"seconds must be a number, not {seconds!r}")
    if isinstance(seconds, float):
        if not isfinite(seconds):
            raise ValueError(f"seconds must be finite, not {seconds}")
        return Fraction(repr(seconds))
    return Fraction(seconds)


def frames_to_samples(frames: int, rate: FrameRate | str, samplerate: int | Fraction) -> int:
    """First sample of frame `frames`: frames * den / num * samplerate, rounded half to even.

    Computed exactly, so 01:00:00:00 at 23.976 (frame 86 400) is sample 172 972 800 at 48 kHz.
    """
    rate = _as_rate(rate)
    return round(Fraction(frames * rate.den, rate.num) * _check_samplerate(samplerate))


def samples_to_frames(samples: int, rate: FrameRate | str, samplerate: int | Fraction) -> int:
    """Frame containing sample `samples`: the last frame whose first sample is <= `samples`.

    Frame boundaries are the rounded samples of frames_to_samples, so the two are inverse:
    samples_to_frames(frames_to_samples(k)) == k. This differs from floor(samples /
    samples_per_frame) only for a sample less than half a sample before a frame's exact start.
    """
    rate = _as_rate(rate)
    sr = _check_samplerate(samplerate)
    frame = floor(samples * rate.fps / sr)
    while frames_to_samples(frame + 1, rate, sr) <= samples:
        frame += 1
    while frames_to_samples(frame, rate, sr) > samples:
        frame -= 1
    return frame


def timecode_to_samples(text: str, rate: FrameRate | str, samplerate: int | Fraction) -> int:
    """Sample (since midnight, as a BWF TimeReference counts) at which label `text` starts."""
    rate = _as_rate(rate)
    return frames_to_samples(parse_timecode(text, rate), rate, samplerate)


def samples_to_timecode(samples: int, rate: FrameRate | str, samplerate: int | Fraction) -> str:
    """Label of the frame containing sample `samples` (e.g. a BWF TimeReference) at `rate`."""
    rate = _as_rate(rate)
    return format_timecode(samples_to_frames(samples, rate, samplerate), rate)


def seconds_to_timecode(seconds: float | Fraction | Decimal, rate: FrameRate | str) -> str:
    """Label of the frame containing the instant `seconds` of real time since midnight.

    Floats are read as the decimal they print as (see seconds_to_frames); wraps at 24 h.
    """
    rate = _as_rate(rate)
    return format_timecode(seconds_to_frames(seconds, rate), rate)


_SECONDS_RE = re.compile(r"^\s*(?P<value>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*s?\s*$", re.ASCII)
_FRAMES_RE = re.compile(r"^\s*(?P<value>[0-9]+)\s*f\s*$", re.ASCII)


def parse_time(text: str, rate: FrameRate | str) -> Fraction:
    """Exact seconds from a time written in a notes file: a timecode, seconds, or frames.

    * a timecode label as parse_timecode reads it: "01:00:12:07", "01:00:12;07" -> the frame's
      start in real seconds since 00:00:00:00 at `rate`;
    * seconds, with or without "s": "12.5", "12.5s", "90" -> exactly 12.5, 12.5, 90;
    * a frame count ending in "f": "1234f" -> 1234 frames at `rate` (1234 * den / num s).

    Negative times and anything else raise TimecodeError.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_time() expects a str, not {type(text).__name__}")
    rate = _as_rate(rate)
    if (match := _SECONDS_RE.match(text)) is not None:
        return Fraction(match["value"])
    if (match := _FRAMES_RE.match(text)) is not None:
        return frames_to_seconds(int(match["value"]), rate)
    if ":" in text or ";" in text:
        return frames_to_seconds(parse_timecode(text, rate), rate)
    raise TimecodeError(text, "not a time; write a timecode (01:00:12:07), seconds (12.5 or "
                              "12.5s) or frames (300f)")
