"""Batch: answer every note of a review-notes CSV in one run, against the printmaster and the stems.

A note names a stretch of the mix by timecode ("01:02:03:10 click under line"). For each one the window
[tc_in, tc_out) is cut from the mix and located like `whichsound locate` would locate a clip of it, except
that the stems printed on the mix's timeline are only searched near where the timecode puts the note
(`--window` seconds either side, default 2 s, for sync offsets of a few frames between mix and stems);
production takes run on their own clocks and are searched whole. The stems are discovered once per run and
the notes run in parallel worker processes (`--jobs`).

The notes file (CSV as spreadsheets write it: UTF-8 with or without BOM, ',' ';' or tab separators, CRLF,
blank lines) has a header row. Columns are found by name, case and spaces ignored:

* in point: ``tc_in``, ``in``, ``start``, ``timecode``, ``tc``, ``time`` ... (required unless a clip column)
* out point: ``tc_out``, ``out``, ``end`` ...; or a length: ``duration``, ``dur``, ``length``
* ``id`` and ``note`` (``comment``, ``description`` ...), both optional
* ``clip`` / ``file`` / ``path``: a clip file to locate like `locate` (relative to the CSV's folder); such a
  row needs no in point and its clip is searched in full.

Times: a timecode label ("01:00:12:07", "01:00:12;07" drop-frame) is on the mix's clock; seconds ("12.5",
"12.5s") and frame counts ("300f") count from the mix's first sample (a column named e.g. ``in_frames`` or
``start (frames)`` holds bare frame counts, ``in_s`` / ``start_seconds`` seconds). A duration is a length in
any of these forms. A note with only an in point gets DEFAULT_NOTE_S (2 s) from its in point, cut at the end
of the mix.

The frame rate comes from --fps, else the mix's iXML; the mix's start from --start-tc, else its bext
TimeReference. Stems carrying a TimeReference are placed on the mix's clock by it (they share the mix's
timeline when their TimeReference equals the mix's); stems without one are taken to start with the mix and
get its clock (start and rate) for their timecodes. Production takes keep their own clocks.

The verdict and matches are locate's (its "in no stem" rule measures the residual above the window's own
floor, about 0 for a cut of the mix itself). The noise is the sound that starts and ends within the note's
marks (to MARK_FRAMES frames), as locate finds the sound a clip is cut around; when no stem's sound does, the
whole window counts. Offsets are those of the note's in point.

A row that cannot be answered (unparsable timecode, window outside the mix, unreadable clip ...) gets an
error naming its line; the other rows go on. Whole-file problems raise NotesError / TimecodeError.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from whichsound.errors import NotesError, TimecodeError, WhichsoundError
from whichsound.threads import one_blas_thread

__all__ = [
    "DEFAULT_NOTE_S",
    "DEFAULT_WINDOW_S",
    "BatchReport",
    "Note",
    "RowFailure",
    "RowResult",
    "notes_per_second",
    "parse_notes",
    "read_notes",
    "run_batch",
]

#: Length (s) of the window of a note that gives only an in point.
DEFAULT_NOTE_S = 2.0
#: Default search radius (s) around a note's timeline position in the stems (mix-to-stem sync offsets).
DEFAULT_WINDOW_S = 2.0
#: Frames a note's in and out marks may lie outside the sound they mark: the frame each falls in (a
#: timecode names a whole frame) and one more of marking. Public bench, notes of 15 seeds (446): 428 -> 440
#: right against the window less its handles; 1 frame 434, 4 frames 439, any length 429.
MARK_FRAMES = 2
#: A sync offset larger than this (s) is reported in words.
SYNC_REPORT_S = 0.001

_IN_NAMES = ("tc_in", "tcin", "in", "start", "timecode", "tc", "time", "in_point", "start_tc", "tc_start",
             "record_in", "rec_in", "source_in", "from")
_OUT_NAMES = ("tc_out", "tcout", "out", "end", "out_point", "end_tc", "tc_end", "record_out", "rec_out",
              "source_out", "stop", "to")
_DUR_NAMES = ("duration", "dur", "length", "len")
_ID_NAMES = ("id", "note_id", "number", "no", "num", "nr", "ref", "#")
_NOTE_NAMES = ("note", "notes", "comment", "comments", "description", "text", "remark", "remarks", "issue")
_CLIP_NAMES = ("clip", "file", "path", "clip_path", "clip_file", "filename", "file_name", "audio")

_SECONDS_SUFFIX = re.compile(r"(?:_|\b)(s|sec|secs|second|seconds)$")
_FRAMES_SUFFIX = re.compile(r"(?:_|\b)(f|fr|frame|frames)$")
_TC_HEAD = re.compile(r"^\d{1,2}[:;]\d{2}[:;]\d{2}$")
_TC_FRAMES = re.compile(r"^\d{2,3}$")


@dataclass(frozen=True)
class Note:
    """One row of the notes file, as written (times are parsed later, once the frame rate is known).

    `line` is the row's first line in the file (the header is line 1); `tc_in`, `tc_out` and `duration` are
    the cells' text ("300f" for a bare count in a frames column), None when absent; `clip` the clip cell.
    """

    line: int
    id: str
    tc_in: str | None
    tc_out: str | None
    note: str
    clip: str | None
    duration: str | None = None


@dataclass(frozen=True)
class RowFailure:
    """Why a row could not be answered; `str()` names its line."""

    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass(frozen=True)
class RowResult:
    """The answer to one note: locate's verdict and matches (as their JSON dicts), or the row's failure.

    `start_s`/`end_s`: the window cut from the mix, seconds from its first sample; `tc_in_label` /
    `tc_out_label` the same as timecodes on the mix's clock. `expected_offset_s` is where the mix's
    timecode puts the in point in the verdict's stem, `sync_offset_s` how far from there it was found.
    `focus_s`: the span the shares were measured over (s from the note's in point; for a clip row, from
    the clip's start) and `focus_by` how it was chosen (locate's: "event", "handles", ...).
    """

    note: Note
    verdict: dict | None = None
    matches: tuple[dict, ...] = ()
    failure: RowFailure | None = None
    start_s: float | None = None
    end_s: float | None = None
    tc_in_label: str | None = None
    tc_out_label: str | None = None
    expected_offset_s: float | None = None
    sync_offset_s: float | None = None
    sync_text: str | None = None
    shares: dict[str, float] = field(default_factory=dict)
    residual_share: float | None = None
    focus_s: tuple[float, float] | None = None
    focus_by: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def error(self) -> str | None:
        return None if self.failure is None else str(self.failure)


@dataclass
class BatchReport:
    """Every row's result (in file order) and what the run used."""

    notes_path: Path
    rows: list[RowResult]
    mix: str | None
    fps: str | None
    mix_start: str | None
    window_s: float
    jobs: int
    stems: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[RowResult]:
        return [r for r in self.rows if r.failure is not None]


# ----------------------------------------------------------------------------------------------- parsing


def _norm_header(text: str) -> str:
    t = text.strip().lower().lstrip("\ufeff")
    t = re.sub(r"[()\[\]]", " ", t)
    t = re.sub(r"[\s\-./]+", "_", t).strip("_")
    return t


def _unit_of(name: str) -> tuple[str, str | None]:
    """(header without a unit suffix, "s" | "f" | None): "in_frames" -> ("in", "f"), "start_s" -> ("start", "s")."""
    for rx, unit in ((_FRAMES_SUFFIX, "f"), (_SECONDS_SUFFIX, "s")):
        m = rx.search(name)
        if m and m.start() > 0:
            return name[: m.start()].rstrip("_"), unit
    return name, None


def _detect_delimiter(header_line: str) -> str:
    """Tab if the header has one, else whichever of ';' and ',' it holds more of (outside quotes)."""
    bare = re.sub(r'"[^"]*"', "", header_line)
    if "\t" in bare:
        return "\t"
    return ";" if bare.count(";") > bare.count(",") else ","


def _decode(data: bytes) -> str:
    """Text of a notes file: UTF-16 when it has that BOM, else UTF-8 (BOM or not), else Windows-1252."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # spreadsheets on Windows


def _repair_split_timecodes(cells: list[str], width: int) -> list[str]:
    """Join drop-frame timecodes a ';'-separated file split at their ';' ("01:00:02" + "12")."""
    out: list[str] = []
    i = 0
    extra = len(cells) - width
    while i < len(cells):
        c = cells[i]
        if extra > 0 and i + 1 < len(cells) and _TC_HEAD.match(c.strip()) and _TC_FRAMES.match(cells[i + 1].strip()):
            out.append(f"{c.strip()};{cells[i + 1].strip()}")
            i += 2
            extra -= 1
            continue
        out.append(c)
        i += 1
    return out


def parse_notes(text: str, *, source: str = "notes") -> tuple[list[Note], list[RowFailure]]:
    """Notes and per-row failures from the text of a notes CSV (see the module's docstring for its form).

    Raises NotesError when the text has no header, no in-point or clip column, or no rows at all.
    """
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise NotesError(f"{source}: the notes file is empty")
    delim = _detect_delimiter(lines[first])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, skipinitialspace=True)
    header: list[str] | None = None
    cols: dict[str, tuple[int, str | None]] = {}
    notes: list[Note] = []
    failures: list[RowFailure] = []
    prev = 0
    count = 0
    for cells in reader:
        line = prev + 1
        prev = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank line (or a row of empty cells)
        if header is None:
            header = cells
            cols = _map_columns(header, source)
            continue
        if delim == ";" and len(cells) > len(header):
            cells = _repair_split_timecodes(cells, len(header))
        last = len(header) - 1
        if len(cells) > len(header) and cols.get("note", (None,))[0] == last:
            cells = cells[:last] + [delim.join(cells[last:])]  # an unquoted separator inside the last column's note
        count += 1

        def cell(key: str, cells: list[str] = cells, cols: dict = cols) -> str | None:
            return _cell(cells, cols, key)

        tc_in, clip = cell("in"), cell("clip")
        note = Note(line=line, id=cell("id") or str(count), tc_in=tc_in, tc_out=cell("out"),
                    note=cell("note") or "", clip=clip, duration=cell("dur"))
        if tc_in is None and clip is None:
            failures.append(RowFailure(line, "no in point (tc_in)" + (" and no clip file" if "clip" in cols else "")))
        notes.append(note)
    if header is None:
        raise NotesError(f"{source}: the notes file is empty")
    if not notes:
        raise NotesError(f"{source}: no notes: the file has a header row but no rows under it")
    return notes, failures


def _cell(cells: list[str], cols: dict[str, tuple[int, str | None]], key: str) -> str | None:
    """A row's stripped cell for a known field, None when absent or empty; "300" -> "300f" in a frames column."""
    if key not in cols:
        return None
    idx, unit = cols[key]
    value = cells[idx].strip() if idx < len(cells) else ""
    if not value:
        return None
    if unit == "f" and value.isdigit():
        value += "f"
    return value


def _map_columns(header: list[str], source: str) -> dict[str, tuple[int, str | None]]:
    """Column index (and unit) of each known field, by the first header that names it."""
    found: dict[str, tuple[int, str | None]] = {}
    normed = [_norm_header(h) for h in header]
    for key, names in (("in", _IN_NAMES), ("out", _OUT_NAMES), ("dur", _DUR_NAMES), ("id", _ID_NAMES),
                       ("note", _NOTE_NAMES), ("clip", _CLIP_NAMES)):
        for name in names:  # priority order of the names, then of the columns
            for idx, h in enumerate(normed):
                base, unit = _unit_of(h) if key in ("in", "out", "dur") else (h, None)
                if (base == name or h == name) and idx not in {i for i, _ in found.values()}:
                    found[key] = (idx, unit if base == name else None)
                    break
            if key in found:
                break
    if "in" not in found and "clip" not in found:
        shown = ", ".join(repr(h) for h in header)
        raise NotesError(
            f"{source}: no in-point column in the header ({shown}); name one tc_in, in, start or timecode "
            "(or give a clip/file column)"
        )
    return found


def read_notes(path: str | Path) -> tuple[list[Note], list[RowFailure]]:
    """parse_notes() of a file; a missing or unreadable file raises NotesError."""
    path = Path(path)
    if not path.exists():
        raise NotesError(f"{path}: notes file not found")
    if path.is_dir():
        raise NotesError(f"{path}: is a folder, not a notes CSV")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NotesError(f"{path}: cannot read the notes file ({exc.strerror or exc})") from None
    return parse_notes(_decode(data), source=str(path))


# --------------------------------------------------------------------------------------- the run's clock


@dataclass(frozen=True)
class _Clock:
    """The mix's timeline: rate, samplerate, start (samples since midnight) and length."""

    rate: object  # timecode.FrameRate
    samplerate: int
    start: int
    frames: int

    def label(self, pos: int) -> str:
        from whichsound.timecode import samples_to_timecode

        return samples_to_timecode(self.start + pos, self.rate, self.samplerate)

    def instant(self, text: str, line: int) -> int:
        """Mix-relative sample of a time cell: labels are on the mix's clock, seconds/frames from its start."""
        from whichsound.timecode import parse_time

        try:
            secs = parse_time(text, self.rate)
        except TimecodeError as exc:
            raise TimecodeError(exc.text, exc.problem, line) from None
        samples = round(secs * self.samplerate)
        if not (":" in text or ";" in text):
            return samples
        pos = samples - self.start
        if pos < 0:  # a label after midnight on a reel that starts before it
            day = round(Fraction(self.rate.frames_per_day) / self.rate.fps * self.samplerate)
            if pos + day < self.frames:
                pos += day
        return pos

    def length(self, text: str, line: int) -> int:
        from whichsound.timecode import parse_time

        try:
            secs = parse_time(text, self.rate)
        except TimecodeError as exc:
            raise TimecodeError(exc.text, exc.problem, line) from None
        return round(secs * self.samplerate)


def _frame_rate(fps: str | None, info) -> object:
    from whichsound.timecode import FrameRate, parse_frame_rate

    if fps is not None:
        return parse_frame_rate(fps)
    if info is not None and info.fps is not None:
        f = Fraction(info.fps)
        try:
            return FrameRate(f.numerator, f.denominator, bool(info.drop_frame))
        except TimecodeError as exc:
            raise NotesError(f"the mix's iXML frame rate {f} is not a timecode rate ({exc.problem}); give --fps") from None
    raise NotesError("no frame rate: the mix carries none (iXML SPEED); give --fps, e.g. --fps 24 or --fps 29.97DF")


def _mix_clock(mix: str, fps: str | None, start_tc: str | None) -> _Clock:
    from whichsound.audio import probe
    from whichsound.bwf import read_bwf_info
    from whichsound.errors import AudioReadError
    from whichsound.timecode import timecode_to_samples

    info = probe(mix)
    try:
        meta = read_bwf_info(mix)
    except AudioReadError:
        meta = None
    rate = _frame_rate(fps, meta)
    if start_tc is not None:
        start = timecode_to_samples(start_tc, rate, info.samplerate)
    elif meta is not None and meta.time_reference is not None:
        start = int(meta.time_reference)
    else:
        raise NotesError(f"{mix}: the mix has no start timecode (bext TimeReference); give --start-tc, "
                         "e.g. --start-tc 01:00:00:00")
    return _Clock(rate, info.samplerate, start, info.frames)


def _with_mix_clock(discovery, clock: _Clock | None):
    """Timeline stems without a clock of their own get the mix's: its start (no bext) and rate (no iXML).

    So their verdicts carry a stem timecode. Production takes keep theirs (they run on time of day).
    """
    from dataclasses import replace

    from whichsound.stems import Discovery

    if clock is None:
        return discovery
    stems = []
    for s in discovery.stems:
        changes = {}
        if s.role != "PROD":
            if s.fps is None:
                changes.update(fps=clock.rate.fps, drop_frame=clock.rate.drop_frame)
            if s.time_reference is None:
                changes["time_reference"] = round(Fraction(clock.start, clock.samplerate) * s.samplerate)
        stems.append(replace(s, **changes) if changes else s)
    return Discovery(stems, list(discovery.warnings))


def _stem_clocks(discovery, clock: _Clock | None) -> tuple[dict[str, float], list[str]]:
    """Seconds to add to a mix-relative time to get the same instant in each timeline stem (by path).

    (mix start - stem start) from their TimeReferences; 0 (starts with the mix) for stems without one, and
    for stems whose TimeReference would put the whole mix outside them (a TimeReference left at 0).
    """
    offsets: dict[str, float] = {}
    warnings: list[str] = []
    if clock is None:
        return offsets, warnings
    mix_start = clock.start / clock.samplerate
    mix_len = clock.frames / clock.samplerate
    for s in discovery.stems:
        if s.role == "PROD":
            continue
        off = 0.0
        if s.time_reference is not None:
            off = mix_start - s.time_reference / s.samplerate
            if off + mix_len <= 0 or off >= s.duration_s:
                warnings.append(f"{s.rel}: its TimeReference puts the whole mix outside it; taken to start with the mix")
                off = 0.0
        offsets[str(s.path)] = off
    return offsets, warnings


# ------------------------------------------------------------------------------------------- the work


@dataclass(frozen=True)
class _Task:
    index: int
    note: Note
    start: int | None = None  # mix samples; None for a clip row
    frames: int | None = None
    tc_in_label: str | None = None
    tc_out_label: str | None = None
    near: tuple[float, float] | None = None
    clip_path: str | None = None
    warnings: tuple[str, ...] = ()
    handle: int = 0  # mix samples cut on each side of the note and dropped again by locate's handle rule


@dataclass(frozen=True)
class _State:
    discovery: object
    roots: tuple[str, ...]
    mix: str | None
    samplerate: int | None
    stem_offsets: dict[str, float]
    fps: float | None
    index: str | None = None  # the analysis index's cache folder, None for full-rate scans


_STATE: _State | None = None


def _init_worker(state: _State) -> None:
    """Process-pool initializer: the run's discovery and clocks, once per worker; one search thread per
    worker, the workers already sharing the cores."""
    import whichsound.locate
    from whichsound.memory import keep_freed_memory

    global _STATE
    keep_freed_memory()
    _STATE = state
    whichsound.locate.SEARCH_THREADS = 1


def _worker(task: _Task) -> RowResult:
    assert _STATE is not None
    return _process(task, _STATE)


def _process(task: _Task, st: _State) -> RowResult:
    """Locate one note (or clip row); any failure becomes the row's error."""
    t0 = time.perf_counter()
    note = task.note
    base = {"note": note, "tc_in_label": task.tc_in_label, "tc_out_label": task.tc_out_label}
    handle_s = task.handle / st.samplerate if task.handle else 0.0  # 0 for a clip row
    if task.start is not None:
        base["start_s"] = round(task.start / st.samplerate, 6)
        base["end_s"] = round((task.start + task.frames) / st.samplerate, 6)
    try:
        from whichsound.audio import Clip, read_clip, read_segment
        from whichsound.locate import locate
        from whichsound.report import match_json, verdict_json

        if task.clip_path is not None:
            clip = read_clip(task.clip_path)
            result = locate(clip.path, list(st.roots), discovery=st.discovery, clip=clip, index=st.index)
        else:
            h = task.handle
            samples = read_segment(st.mix, task.start - h, task.frames + 2 * h)
            clip = Clip(Path(f"{Path(st.mix).name}@{task.tc_in_label}"), samples, st.samplerate)
            # A window cut from the mix runs at the mix's speed: no PAL rescans (they could only find false
            # matches, at three times the work for every note whose sound is in no stem).
            # The noise is the sound that starts and ends inside the note's marks (as locate finds the sound
            # a clip is cut around), the marks taken as true to MARK_FRAMES: a line running through the
            # window is what the noise sits in, even where it holds more of the window than the noise.
            air = handle_s + MARK_FRAMES / st.fps  # a window row has the mix's clock
            result = locate(clip.path, list(st.roots), discovery=st.discovery, clip=clip, near=task.near,
                            rescan_speeds=(), index=st.index, speed_known=True, event_air_s=air)
        if task.handle:
            result = _without_handle(result, handle_s, st.discovery)
    except WhichsoundError as exc:
        return RowResult(**base, failure=RowFailure(note.line, str(exc)), seconds=time.perf_counter() - t0)
    except Exception as exc:  # a bug must not lose the other rows; it is named in the row
        problem = f"internal error: {type(exc).__name__}: {exc}"
        return RowResult(**base, failure=RowFailure(note.line, problem), seconds=time.perf_counter() - t0)

    v = result.verdict
    aligned = v.match
    ev = v.evidence or {}
    if aligned is None and result.matches and ev.get("z", 0.0) >= ev.get("z_critical", float("inf")):
        aligned = result.matches[0]  # in no stem, but the window did align: keep it for the sync offset
    known = set(st.discovery.warnings)
    warnings = tuple(task.warnings) + tuple(w for w in result.warnings if w not in known)
    expected = sync = sync_text = None
    if aligned is not None and task.start is not None and aligned.stem.role != "PROD":
        off = st.stem_offsets.get(str(aligned.stem.path))
        if off is not None:
            expected = task.start / st.samplerate + off
            sync = aligned.offset_s - expected
            if abs(sync) > SYNC_REPORT_S:
                sync_text = _sync_words(aligned.stem.rel, sync, st.fps)
    shares = {rel: round(v, 4) for rel, v in result.shares.items()}
    return RowResult(
        **base,
        verdict=verdict_json(v),
        matches=tuple(match_json(m) for m in result.matches),
        expected_offset_s=None if expected is None else round(expected, 7),
        sync_offset_s=None if sync is None else round(sync, 7),
        sync_text=sync_text,
        shares=dict(sorted(shares.items(), key=lambda kv: -kv[1])),
        residual_share=None if v.residual_share is None else round(v.residual_share, 4),
        focus_s=None if result.focus is None else tuple(round(t - handle_s, 4) for t in result.focus),
        focus_by=result.focus_by,
        warnings=warnings,
        seconds=time.perf_counter() - t0,
    )


def _without_handle(result, handle_s: float, discovery):
    """The result with every offset moved from the cut's first sample to the note's in point, `handle_s` later
    (the verdict's text too)."""
    from dataclasses import replace

    from whichsound.locate import take_words, where_words
    from whichsound.report import stem_timecode

    def moved(m):
        return replace(m, offset=m.offset + handle_s * m.speed * m.stem.samplerate)

    matches = [moved(m) for m in result.matches]
    v = result.verdict
    if v.match is not None:
        new = moved(v.match)
        text = v.text.replace(where_words(v.match), where_words(new))
        prod = v.production
        if prod and prod.get("file") is not None:
            take = next((s for s in discovery.stems if s.rel == prod["file"] and s.root == prod["root"]), None)
            if take is not None:
                off = prod["offset_s"] + handle_s * new.speed
                new_prod = {**prod, "offset_s": round(off, 7), "timecode": stem_timecode(take, off * take.samplerate)}
                text = text.replace(take_words(prod), take_words(new_prod))
                prod = new_prod
        v = replace(v, match=new, text=text, production=prod)
    return replace(result, verdict=v, matches=matches)


def _sync_words(stem: str, sync: float, fps: float | None) -> str:
    frames = f"{abs(sync) * fps:.1f} frames" if fps else ""
    side = "later" if sync > 0 else "earlier"
    size = f"{abs(sync) * 1000:.1f} ms" + (f" ({frames})" if frames else "")
    return f"{stem} holds this sound {size} {side} than the mix's timecode says"


def _plan(notes: list[Note], failures: dict[int, RowFailure], clock: _Clock | None, csv_dir: Path,
          stem_offsets: dict[str, float], window_s: float) -> tuple[list[_Task], dict[int, RowResult]]:
    """Each note's window and search range; rows that fail here get their RowResult at once."""
    tasks: list[_Task] = []
    done: dict[int, RowResult] = {}
    sr = clock.samplerate if clock else None
    for i, note in enumerate(notes):
        if note.line in failures:
            done[i] = RowResult(note, failure=failures[note.line])
            continue
        if note.tc_in is None or clock is None:
            if note.clip is None:
                done[i] = RowResult(note, failure=RowFailure(note.line, "no in point (tc_in) and no clip file"))
                continue
            p = Path(note.clip).expanduser()
            tasks.append(_Task(i, note, clip_path=str(p if p.is_absolute() else csv_dir / p)))
            continue
        if note.clip is not None:  # a clip with an in point: searched in full like locate
            p = Path(note.clip).expanduser()
            label = None
            try:
                label = clock.label(clock.instant(note.tc_in, note.line))
            except TimecodeError:
                pass
            tasks.append(_Task(i, note, tc_in_label=label, clip_path=str(p if p.is_absolute() else csv_dir / p)))
            continue
        try:
            start = clock.instant(note.tc_in, note.line)
            warn: list[str] = []
            if note.tc_out is not None:
                end = clock.instant(note.tc_out, note.line)
                if end <= start:
                    raise _RowProblem(f"tc_out {note.tc_out!r} is not after tc_in {note.tc_in!r}")
            elif note.duration is not None:
                n = clock.length(note.duration, note.line)
                if n <= 0:
                    raise _RowProblem(f"duration {note.duration!r} is not positive")
                end = start + n
            else:
                end = start + round(DEFAULT_NOTE_S * sr)
            span = f"{clock.label(start)}-{clock.label(end)}"
            mix_span = f"{clock.label(0)} to {clock.label(clock.frames)}"
            if end <= 0 or start >= clock.frames:
                raise _RowProblem(f"the note's window {span} lies outside the mix ({mix_span})")
            if start < 0:
                raise _RowProblem(f"the note's window {span} starts before the mix ({mix_span})")
            if end > clock.frames:
                if note.tc_out is not None or note.duration is not None:
                    warn.append(f"the window was cut at the end of the mix ({clock.label(clock.frames)})")
                end = clock.frames
        except TimecodeError as exc:
            done[i] = RowResult(note, failure=RowFailure(note.line, f"timecode {exc.text!r}: {exc.problem}"))
            continue
        except _RowProblem as exc:
            done[i] = RowResult(note, failure=RowFailure(note.line, str(exc)))
            continue
        handle = _handle(end - start, sr)
        near = None
        if stem_offsets:  # where the cut's first sample (the in point less the handle) should be in the stems
            expect = [(start - handle) / sr + off for off in stem_offsets.values()]
            near = (min(expect) - window_s, max(expect) + window_s)
        tasks.append(_Task(i, note, start, end - start, clock.label(start), clock.label(end), near,
                           warnings=tuple(warn), handle=handle))
    return tasks, done


def _handle(frames: int, sr: int) -> int:
    """Samples of mix to cut on each side of a note's window so that locate's handle rule (up to HANDLE_S,
    at most a quarter of the clip, at each end is taken as air around the noise) drops exactly them and
    attributes the note's own window: min(HANDLE_S, half the window). The context helps the alignment too.
    """
    from whichsound.locate import HANDLE_S

    return int(round(min(HANDLE_S, 0.5 * frames / sr) * sr))


class _RowProblem(Exception):
    pass


@one_blas_thread
def run_batch(
    notes_path: str | Path,
    roots: list[str],
    *,
    mix: str | None = None,
    fps: str | None = None,
    start_tc: str | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    index="auto",
) -> BatchReport:
    """Answer every note of `notes_path` against the stems under `roots`; see the module docstring.

    `progress(done, total)` is called once the notes are planned and after each row completes. `index`
    is the analysis index (as for locate: "auto", a cache folder, an Index or None): the stems are
    decimated into it once, before the notes run, and every note's coarse search reads that copy.
    """
    from whichsound.stems import discover

    t0 = time.perf_counter()
    notes_path = Path(notes_path)
    notes, row_failures = read_notes(notes_path)
    needs_mix = any(n.tc_in is not None and n.clip is None for n in notes)
    clock = None
    if mix is not None:
        clock = _mix_clock(mix, fps, start_tc)
    elif needs_mix:
        raise NotesError(f"{notes_path}: the notes give timecodes: give the mix they refer to with --mix")
    discovery = discover(list(roots))
    if not discovery.stems:
        raise NotesError("no readable stems: " + "; ".join(discovery.warnings))
    discovery = _with_mix_clock(discovery, clock)
    stem_offsets, warnings = _stem_clocks(discovery, clock)
    tasks, done = _plan(notes, {f.line: f for f in row_failures}, clock, notes_path.parent, stem_offsets,
                        window_s)
    rows: dict[int, RowResult] = dict(done)

    def tick() -> None:
        if progress is not None:
            progress(len(rows), len(notes))

    tick()
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks) or 1))
    cache_dir = None
    if index is not None and tasks:
        from whichsound.locate import open_index, prepare_index

        idx = open_index(index, warnings)
        if idx is not None:
            built, problems = prepare_index(idx, list(discovery.stems), jobs=jobs)
            warnings.extend(problems)
            cache_dir = str(idx.dir)
    state = _State(discovery, tuple(roots), mix, clock.samplerate if clock else None, stem_offsets,
                   float(clock.rate.fps) if clock else None, cache_dir)
    if jobs == 1:
        for t in tasks:
            rows[t.index] = _process(t, state)
            tick()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(state,)) as pool:
            futures = {pool.submit(_worker, t): t for t in tasks}
            for fut in as_completed(futures):
                t = futures[fut]
                try:
                    r = fut.result()
                except Exception as exc:  # a worker that died (out of memory, killed)
                    r = RowResult(t.note, failure=RowFailure(t.note.line, f"worker failed: {type(exc).__name__}: {exc}"))
                rows[t.index] = r
                tick()
    ordered = [rows[i] for i in range(len(notes))]
    return BatchReport(
        notes_path=notes_path,
        rows=ordered,
        mix=mix,
        fps=str(clock.rate) if clock else None,
        mix_start=clock.label(0) if clock else None,
        window_s=window_s,
        jobs=jobs,
        stems=len(discovery.stems),
        seconds=time.perf_counter() - t0,
        warnings=list(discovery.warnings) + warnings,
    )


def notes_per_second(report: BatchReport) -> float | None:
    """Notes answered per second of the whole run (discovery included)."""
    return len(report.rows) / report.seconds if report.seconds > 0 else None
