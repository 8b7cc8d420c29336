"""Tests for whichsound.timecode: exact labels, drop-frame, frame rates, samples and seconds."""

from __future__ import annotations

from bisect import bisect_right
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whichsound.errors import TimecodeError
from whichsound.timecode import (
    STANDARD_RATES,
    FrameRate,
    format_timecode,
    frames_to_samples,
    frames_to_seconds,
    parse_frame_rate,
    parse_time,
    parse_timecode,
    samples_to_frames,
    samples_to_timecode,
    seconds_to_frames,
    seconds_to_timecode,
    timecode_to_samples,
)

R23976 = FrameRate(24000, 1001, False)
R24 = FrameRate(24, 1, False)
R25 = FrameRate(25, 1, False)
R2997DF = FrameRate(30000, 1001, True)
R2997 = FrameRate(30000, 1001, False)
R5994DF = FrameRate(60000, 1001, True)
R5994 = FrameRate(60000, 1001, False)

SAMPLERATES = (8000, 44100, 47952, 48000, 48048, 88200, 96000, 192000)

rates = st.sampled_from(STANDARD_RATES)


def oracle_label(frame: int, rate: FrameRate) -> str:
    """Label of `frame`, computed minute by minute (independent of the module's 10-minute formula)."""
    nominal = rate.nominal
    drop = nominal // 15 if rate.drop_frame else 0
    starts = [0]
    for minute in range(24 * 60):
        starts.append(starts[-1] + nominal * 60 - (drop if minute % 10 else 0))
    assert starts[-1] == rate.frames_per_day
    frame %= starts[-1]
    minute = bisect_right(starts, frame) - 1
    label = frame - starts[minute] + (drop if minute % 10 else 0)
    seconds, frames = divmod(label, nominal)
    hours, minutes = divmod(minute, 60)
    sep = ";" if rate.drop_frame else ":"
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{frames:02d}"


# --- frame rates -------------------------------------------------------------------------------

def test_standard_rates_are_the_twelve_film_rates():
    assert [str(rate) for rate in STANDARD_RATES] == [
        "23.976", "24", "25", "29.97 DF", "29.97", "30", "47.952", "48", "50", "59.94 DF",
        "59.94", "60"]
    assert [rate.nominal for rate in STANDARD_RATES] == [
        24, 24, 25, 30, 30, 30, 48, 48, 50, 60, 60, 60]


@pytest.mark.parametrize("rate", STANDARD_RATES, ids=str)
def test_str_parses_back_to_the_same_rate(rate):
    assert parse_frame_rate(str(rate)) == rate


def test_frame_rate_is_exact_and_normalised():
    assert R23976.fps == Fraction(24000, 1001)
    assert R2997DF.fps == Fraction(30000, 1001)
    assert FrameRate(48000, 2002, False) == R23976
    assert FrameRate(50, 2, False) == R25
    assert R2997DF.frames_per_day == 2_589_408
    assert R5994DF.frames_per_day == 5_178_816
    assert R23976.frames_per_day == 24 * 86_400
    assert (R2997DF.dropped_per_minute, R5994DF.dropped_per_minute, R2997.dropped_per_minute) == (
        2, 4, 0)


@pytest.mark.parametrize(("num", "den", "df", "match"), [
    (25, 1, True, "drop-frame exists only at 29.97 and 59.94"),
    (30, 1, True, "drop-frame exists only"),
    (24000, 1001, True, "drop-frame exists only"),
    (25000, 1001, False, "not a timecode rate"),
    (30000, 1002, False, "not a timecode rate"),
    (0, 1, False, "must be positive"),
    (-24, 1, False, "must be positive"),
])
def test_frame_rate_rejects_rates_without_timecode(num, den, df, match):
    with pytest.raises(TimecodeError, match=match):
        FrameRate(num, den, df)


@pytest.mark.parametrize(("text", "expected"), [
    ("23.976", R23976),
    ("23.98", R23976),
    ("23,976", R23976),
    ("2398", R23976),
    ("23976", R23976),
    ("24000/1001", R23976),
    ("48000/2002", R23976),
    ("23.976 fps", R23976),
    ("24", R24),
    ("24.0", R24),
    ("24fps", R24),
    ("24/1", R24),
    ("24000/1000", R24),
    ("25", R25),
    ("29.97", R2997),
    ("29.97 NDF", R2997),
    ("29.97 non-drop", R2997),
    ("2997", R2997),
    ("30000/1001", R2997),
    ("29.97df", R2997DF),
    ("29.97 DF", R2997DF),
    ("29.97DF", R2997DF),
    ("29.97 drop frame", R2997DF),
    ("29.97 fps drop-frame", R2997DF),
    ("2997df", R2997DF),
    ("  29.97  DF  ", R2997DF),
    ("30", FrameRate(30, 1, False)),
    ("47.952", FrameRate(48000, 1001, False)),
    ("47.95", FrameRate(48000, 1001, False)),
    ("48", FrameRate(48, 1, False)),
    ("50", FrameRate(50, 1, False)),
    ("59.94", R5994),
    ("59.94DF", R5994DF),
    ("5994 df", R5994DF),
    ("60000/1001", R5994),
    ("60", FrameRate(60, 1, False)),
    ("119.88", FrameRate(120000, 1001, False)),
    ("11988", FrameRate(120000, 1001, False)),
    ("95.904", FrameRate(96000, 1001, False)),
])
def test_parse_frame_rate_variants(text, expected):
    assert parse_frame_rate(text) == expected


def test_parse_frame_rate_drop_frame_argument():
    assert parse_frame_rate("29.97", drop_frame=True) == R2997DF
    assert parse_frame_rate("30000/1001", drop_frame=True) == R2997DF
    assert parse_frame_rate("59.94", drop_frame=False) == R5994
    assert parse_frame_rate("29.97 DF", drop_frame=True) == R2997DF
    assert parse_frame_rate("25", drop_frame=False) == R25


@pytest.mark.parametrize(("text", "drop_frame", "match"), [
    ("", None, "not a frame rate"),
    ("fast", None, "not a frame rate"),
    ("23.5", None, "not a timecode rate"),
    ("23.97", None, "not a timecode rate"),
    ("12.5", None, "not a timecode rate"),
    ("0", None, "must be positive"),
    ("24000/0", None, "denominator .* cannot be 0"),
    ("25000/1001", None, "not a timecode rate"),
    ("24000/1001 DF", None, "drop-frame exists only"),
    ("12345", None, "without its point"),
    ("25 DF", None, "drop-frame exists only at 29.97 and 59.94"),
    ("30df", None, "drop-frame exists only"),
    ("23.976 DF", None, "drop-frame exists only"),
    ("119.88 DF", None, "drop-frame exists only"),
    ("24", True, "drop-frame exists only"),
    ("29.97 DF", False, "says drop-frame but drop_frame=False"),
    ("29.97 NDF", True, "says non-drop-frame but drop_frame=True"),
    ("29.97 DF DF", None, "not a frame rate"),
])
def test_parse_frame_rate_rejects(text, drop_frame, match):
    with pytest.raises(TimecodeError, match=match) as info:
        parse_frame_rate(text, drop_frame=drop_frame)
    assert info.value.text == text


# --- labels <-> frame counts ---------------------------------------------------------------------

@settings(max_examples=1000)
@given(st.data())
def test_round_trip_frames_label_frames_over_a_day(data):
    rate = data.draw(rates, label="rate")
    frame = data.draw(st.integers(0, rate.frames_per_day - 1), label="frame")
    label = format_timecode(frame, rate)
    assert parse_timecode(label, rate) == frame


@settings(max_examples=1000)
@given(st.data())
def test_format_matches_minute_by_minute_oracle(data):
    rate = data.draw(rates, label="rate")
    frame = data.draw(st.integers(-3 * rate.frames_per_day, 3 * rate.frames_per_day), label="frame")
    assert format_timecode(frame, rate) == oracle_label(frame, rate)


@settings(max_examples=1000)
@given(st.data())
def test_every_label_either_exists_and_round_trips_or_is_a_dropped_one(data):
    rate = data.draw(rates, label="rate")
    h = data.draw(st.integers(0, 23), label="h")
    m = data.draw(st.integers(0, 59), label="m")
    s = data.draw(st.sampled_from([0, 0, 1, 30, 59]) | st.integers(0, 59), label="s")
    f = data.draw(st.integers(0, rate.nominal - 1), label="f")
    label = f"{h:02d}:{m:02d}:{s:02d}{';' if rate.drop_frame else ':'}{f:02d}"
    dropped = rate.drop_frame and s == 0 and m % 10 != 0 and f < rate.nominal // 15
    if dropped:
        with pytest.raises(TimecodeError, match="drop-frame skips"):
            parse_timecode(label, rate)
    else:
        frame = parse_timecode(label, rate)
        assert 0 <= frame < rate.frames_per_day
        assert format_timecode(frame, rate) == label


@given(rates, st.integers(-10**12, 10**12))
def test_format_wraps_every_day_and_parse_returns_the_wrapped_frame(rate, frame):
    label = format_timecode(frame, rate)
    assert label == format_timecode(frame % rate.frames_per_day, rate)
    assert parse_timecode(label, rate) == frame % rate.frames_per_day


@pytest.mark.parametrize("rate", [R2997DF, R5994DF], ids=str)
def test_drop_frame_first_twenty_minutes_exhaustively(rate):
    """Every frame of the first 20 minutes: labels strictly increase, skip exactly the dropped ones."""
    drop = rate.nominal // 15
    previous = None
    for frame in range(20 * 60 * rate.nominal):
        label = format_timecode(frame, rate)
        assert parse_timecode(label, rate) == frame
        hh, mm, ss, ff = (int(x) for x in label.replace(";", ":").split(":"))
        here = (hh * 3600 + mm * 60 + ss) * rate.nominal + ff
        if previous is not None:
            gap = drop + 1 if (ss, ff) == (0, drop) and mm % 10 else 1
            assert here - previous == gap, label
        previous = here


@pytest.mark.parametrize(("rate", "before", "after"), [
    (R2997DF, "00:00:59;29", "00:01:00;02"),
    (R2997DF, "00:09:59;29", "00:10:00;00"),
    (R2997DF, "00:10:59;29", "00:11:00;02"),
    (R2997DF, "00:59:59;29", "01:00:00;00"),
    (R2997DF, "23:59:59;29", "00:00:00;00"),
    (R5994DF, "00:00:59;59", "00:01:00;04"),
    (R5994DF, "00:19:59;59", "00:20:00;00"),
    (R2997, "00:00:59:29", "00:01:00:00"),
    (R23976, "23:59:59:23", "00:00:00:00"),
])
def test_drop_frame_minute_boundaries(rate, before, after):
    assert format_timecode(parse_timecode(before, rate) + 1, rate) == after


@pytest.mark.parametrize(("text", "rate", "frame"), [
    ("00:00:00:00", R24, 0),
    ("01:00:00:00", R24, 86_400),
    ("01:00:00:00", R23976, 86_400),
    ("01:00:00:00", R25, 90_000),
    ("01:00:00:00", R2997, 108_000),
    ("00:01:00;02", R2997DF, 1_800),
    ("00:10:00;00", R2997DF, 17_982),
    ("01:00:00;00", R2997DF, 107_892),
    ("23:59:59;29", R2997DF, 2_589_407),
    ("00:01:00;04", R5994DF, 3_600),
    ("01:00:00;00", R5994DF, 215_784),
    ("10:00:00:00", FrameRate(48, 1, False), 1_728_000),
])
def test_known_labels(text, rate, frame):
    assert parse_timecode(text, rate) == frame
    assert format_timecode(frame, rate) == text


@pytest.mark.parametrize("text", [
    "01:00:00;00", "01;00;00;00", "01:00:00:00", "01:00:00.00", "  01:00:00;00 ", "1:00:00;00"])
def test_accepted_spellings_at_29_97_df(text):
    assert parse_timecode(text, R2997DF) == 107_892


def test_semicolon_reads_drop_frame_at_an_ndf_29_97_rate():
    assert parse_timecode("00:01:00;02", R2997) == 1_800
    assert parse_timecode("00:01:00:02", R2997) == 1_802
    assert parse_timecode("01;00;00;00", R5994) == 215_784
    with pytest.raises(TimecodeError, match="drop-frame skips"):
        parse_timecode("00:01:00;00", R2997)


def test_rates_above_99_fps_use_three_frame_digits():
    rate = FrameRate(120000, 1001, False)
    assert str(rate) == "119.88"
    assert format_timecode(119, rate) == "00:00:00:119"
    assert parse_timecode("00:00:01:005", rate) == 125
    with pytest.raises(TimecodeError, match="frames field must have 3 digits"):
        parse_timecode("00:00:01:05", rate)


def test_format_negative_frames_wrap():
    assert format_timecode(-1, R24) == "23:59:59:23"
    assert format_timecode(-1, R2997DF) == "23:59:59;29"
    assert format_timecode(-R25.frames_per_day, R25) == "00:00:00:00"


def test_rate_may_be_given_as_text():
    assert parse_timecode("01:00:00;00", "29.97 DF") == 107_892
    assert format_timecode(107_892, "29.97df") == "01:00:00;00"
    assert format_timecode(107_892, "29.97") == "00:59:56:12"


@pytest.mark.parametrize(("text", "rate", "match"), [
    ("00:01:00;00", R2997DF, r"no such label in 29\.97 DF: drop-frame skips frames 00-01"),
    ("00:01:00;01", R2997DF, r"the label after 00:00:59;29 is 00:01:00;02"),
    ("00:01:00:01", R2997DF, "drop-frame skips"),
    ("00:01:00;03", R5994DF, r"skips frames 00-03"),
    ("00:00:00:25", R25, r"frame 25 does not exist at 25 fps \(frames run 00-24\)"),
    ("00:00:00:24", R23976, r"frame 24 does not exist at 23\.976 fps"),
    ("00:00:00;30", R2997DF, r"frame 30 does not exist at 29\.97 DF"),
    ("01:00:00;00", R24, r"';' marks drop-frame timecode, which does not exist at 24 fps"),
    ("01;00;00;00", R25, "';' marks drop-frame"),
    ("00:00:00;00", R23976, "';' marks drop-frame"),
    ("00:60:00:00", R25, "minutes must be 00-59, not 60"),
    ("00:00:60:00", R25, "seconds must be 00-59, not 60"),
    ("24:00:00:00", R25, "hours must be 00-23, not 24"),
    ("00:00:00:000", R25, "frames field must have 2 digits"),
    ("01:00:00", R25, r"not a timecode; expected HH:MM:SS:FF"),
    ("01:00:00:00:00", R25, "not a timecode"),
    ("1:2:3:4", R25, "not a timecode"),
    ("", R25, "not a timecode"),
    ("-01:00:00:00", R25, "not a timecode"),
    ("01:00:00:0a", R25, "not a timecode"),
    ("\u0661\u0661:00:00:00", R25, "not a timecode"),
    ("01;00:00:00", R2997DF, "mixed separators"),
    ("01:00;00;00", R2997DF, "mixed separators"),
    ("01;00;00:00", R2997DF, "mixed separators"),
    ("01.00.00.00", R25, "not a timecode"),
])
def test_invalid_timecodes_raise_with_useful_message(text, rate, match):
    with pytest.raises(TimecodeError, match=match) as info:
        parse_timecode(text, rate)
    assert info.value.text == text
    assert str(info.value).startswith(f"timecode {text!r}: ")


def test_wrong_types_are_programming_errors():
    with pytest.raises(TypeError):
        parse_timecode(3600, R25)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_timecode(1.0, R25)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_timecode(1, 25)  # type: ignore[arg-type]


# --- samples -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "rate", "sample"), [
    ("01:00:00:00", R23976, 172_972_800),
    ("01:00:00;00", R2997DF, 172_799_827),
    ("01:00:00:00", R24, 172_800_000),
    ("01:00:00:00", R25, 172_800_000),
    ("01:00:00;00", R5994DF, 172_799_827),
    ("01:00:00:00", R2997, 172_972_800),
])
def test_sample_anchors_at_48k(text, rate, sample):
    assert timecode_to_samples(text, rate, 48_000) == sample
    assert samples_to_timecode(sample, rate, 48_000) == text


def test_anchor_values_are_the_true_rate_times():
    # 86 400 frames of 1001/24000 s, and 107 892 frames of 1001/30000 s.
    assert frames_to_seconds(86_400, R23976) == Fraction(18_018, 5)  # 3603.6 s
    assert frames_to_seconds(107_892, R2997DF) * 48_000 == Fraction(863_999_136, 5)  # 172 799 827.2


def test_frames_to_samples_rounds_half_to_even():
    # At 29.97 and 44.1 kHz a frame is 1471.47 samples: frame 50 starts at 73 573.5 and
    # frame 150 at 220 720.5, which round to the even neighbours.
    assert Fraction(50 * 1001, 30000) * 44_100 == Fraction(147_147, 2)
    assert frames_to_samples(50, R2997, 44_100) == 73_574
    assert frames_to_samples(150, R2997, 44_100) == 220_720
    assert frames_to_samples(-150, R2997, 44_100) == -220_720


@settings(max_examples=500)
@given(rates, st.sampled_from(SAMPLERATES), st.integers(-10**9, 10**9))
def test_samples_to_frames_inverts_frames_to_samples(rate, samplerate, frame):
    assert samples_to_frames(frames_to_samples(frame, rate, samplerate), rate, samplerate) == frame


@settings(max_examples=500)
@given(rates, st.sampled_from(SAMPLERATES), st.integers(-10**12, 10**12))
def test_sample_belongs_to_the_frame_whose_span_contains_it(rate, samplerate, sample):
    frame = samples_to_frames(sample, rate, samplerate)
    assert frames_to_samples(frame, rate, samplerate) <= sample
    assert sample < frames_to_samples(frame + 1, rate, samplerate)


@settings(max_examples=500)
@given(rates, st.sampled_from(SAMPLERATES), st.integers(0, 10**10))
def test_samples_to_frames_is_floor_except_within_half_a_sample(rate, samplerate, sample):
    exact = Fraction(sample) * rate.fps / samplerate  # frames, exact
    frame = samples_to_frames(sample, rate, samplerate)
    if frame != int(exact):  # floor, since exact >= 0
        # Only when the frame's exact start is less than half a sample after this sample.
        assert frame == int(exact) + 1
        assert frames_to_seconds(frame, rate) * samplerate - sample <= Fraction(1, 2)


def test_samples_to_frames_uses_the_rounded_frame_start():
    # Frame 2 at 29.97 / 48 kHz starts at sample 3203.2, i.e. at sample 3203 once rounded.
    assert frames_to_samples(2, R2997, 48_000) == 3_203
    assert samples_to_frames(3_202, R2997, 48_000) == 1
    assert samples_to_frames(3_203, R2997, 48_000) == 2
    assert samples_to_frames(0, R2997, 48_000) == 0
    assert samples_to_frames(-1, R2997, 48_000) == -1


@settings(max_examples=300)
@given(st.data())
def test_timecode_samples_round_trip(data):
    rate = data.draw(rates, label="rate")
    samplerate = data.draw(st.sampled_from(SAMPLERATES), label="samplerate")
    frame = data.draw(st.integers(0, rate.frames_per_day - 1), label="frame")
    label = format_timecode(frame, rate)
    sample = timecode_to_samples(label, rate, samplerate)
    assert samples_to_timecode(sample, rate, samplerate) == label
    # The last sample before the label's first one still belongs to the previous frame.
    if frame:
        assert samples_to_timecode(sample - 1, rate, samplerate) == format_timecode(frame - 1, rate)


def test_fractional_and_bad_samplerates():
    assert frames_to_samples(24, R23976, Fraction(48_000 * 1000, 1001)) == 48_000
    with pytest.raises(ValueError, match="samplerate must be positive"):
        frames_to_samples(1, R24, 0)
    with pytest.raises(TypeError, match="samplerate must be an int or Fraction"):
        frames_to_samples(1, R24, 48_000.0)  # type: ignore[arg-type]


# --- seconds and free-form times ------------------------------------------------------------------

@given(rates, st.integers(-10**9, 10**9))
def test_seconds_to_frames_inverts_frames_to_seconds(rate, frame):
    seconds = frames_to_seconds(frame, rate)
    assert seconds_to_frames(seconds, rate) == frame
    assert seconds_to_frames(seconds - Fraction(1, 10**9), rate) == frame - 1


def test_seconds_to_timecode_reads_floats_as_their_decimal():
    # 3603.6 as a binary float is a hair below 3603.6 s; read naively that is 00:59:59:23.
    assert Fraction(3603.6) < Fraction(18_018, 5)
    assert seconds_to_timecode(3603.6, R23976) == "01:00:00:00"
    assert seconds_to_timecode(Fraction(18_018, 5), R23976) == "01:00:00:00"
    assert seconds_to_timecode(3603.5, R23976) == "00:59:59:21"  # frame 86 397.6
    assert seconds_to_timecode(3600, R25) == "01:00:00:00"
    assert seconds_to_timecode(1e-05, R25) == "00:00:00:00"
    assert seconds_to_timecode(-0.01, R25) == "23:59:59:24"
    with pytest.raises(ValueError, match="finite"):
        seconds_to_timecode(float("nan"), R25)


@pytest.mark.parametrize(("text", "rate", "seconds"), [
    ("12.5", R25, Fraction(25, 2)),
    ("12.5s", R25, Fraction(25, 2)),
    (" 12.5 s ", R25, Fraction(25, 2)),
    ("90", R25, Fraction(90)),
    (".25", R25, Fraction(1, 4)),
    ("0.1", R25, Fraction(1, 10)),
    ("300f", R25, Fraction(12)),
    ("24f", R23976, Fraction(1001, 1000)),
    ("01:00:00:00", R23976, Fraction(18_018, 5)),
    ("01:00:00;00", R2997, Fraction(107_892 * 1001, 30_000)),
    ("00:00:01:12", R24, Fraction(3, 2)),
])
def test_parse_time(text, rate, seconds):
    assert parse_time(text, rate) == seconds


@pytest.mark.parametrize(("text", "match"), [
    ("-1", "not a time"),
    ("12.5x", "not a time"),
    ("1.5f", "not a time"),
    ("", "not a time"),
    ("00:01:00;00", "drop-frame skips"),
    ("00:00:00:30", "frame 30 does not exist"),
])
def test_parse_time_rejects(text, match):
    with pytest.raises(TimecodeError, match=match):
        parse_time(text, R2997)
