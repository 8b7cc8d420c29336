"""Rendering results: the JSON contract, rich tables and verdict sentences. No computation beyond formatting.

The JSON of `locate` is a contract read by other tools (the benchmark among them): keys are only ever added.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["hms", "locate_json", "match_json", "render_locate", "stem_timecode", "verdict_json", "write_atomic"]


def hms(seconds: float | None) -> str:
    """Seconds as H:MM:SS.mmm (negative with a leading '-'); '' for None."""
    if seconds is None:
        return ""
    sign = "-" if seconds < 0 else ""
    ms = round(abs(seconds) * 1000)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{sign}{h}:{m:02d}:{s:02d}.{ms:03d}"


def stem_timecode(stem, offset_samples: float | None) -> str | None:
    """Timecode on the stem's own clock (bext start + offset) when the file says its start and frame rate."""
    if offset_samples is None or stem.time_reference is None or stem.fps is None:
        return None
    try:
        from whichsound.timecode import FrameRate, samples_to_timecode
    except ImportError:  # pragma: no cover
        return None
    fps = stem.fps
    rate = FrameRate(fps.numerator, fps.denominator, bool(stem.drop_frame))
    return samples_to_timecode(stem.time_reference + round(offset_samples), rate, stem.samplerate)


def match_json(m) -> dict:
    """One match as the contract's dict."""
    stem = m.stem
    return {
        "stem": stem.rel,
        "root": stem.root,
        "role": stem.role,
        "channel": m.channel,
        "track": stem.track_name(m.channel),
        "offset_s": round(m.offset_s, 7),
        "offset_samples": round(m.offset, 3),
        "timecode": stem_timecode(stem, m.offset),
        "speed": m.speed,
        "score": round(m.score, 4),
        "z": round(m.z, 2),
        "share": None if m.share is None else round(m.share, 4),
        "confidence": round(m.confidence, 4),
        "samplerate": stem.samplerate,
        "timeline_disagrees": m.timeline_offset_disagrees,
        "scene": stem.scene,
        "take": stem.take,
        "tape": stem.tape,
    }


def verdict_json(v) -> dict:
    """The verdict as the contract's dict."""
    m = v.match
    out = {
        "stem": m.stem.rel if m else None,
        "root": m.stem.root if m else None,
        "role": m.stem.role if m else None,
        "origin": v.origin,
        "offset_s": round(m.offset_s, 7) if m else None,
        "timecode": stem_timecode(m.stem, m.offset) if m else None,
        "channel": m.channel if m else None,
        "speed": m.speed if m else None,
        "confidence": round(float(min(max(v.confidence, 0.0), 1.0)), 4),
        "residual_share": None if v.residual_share is None else round(v.residual_share, 4),
        "text": v.text,
    }
    if v.production is not None:
        out["production"] = v.production
    if v.evidence is not None:
        out["evidence"] = v.evidence
    return out


def locate_json(result) -> dict:
    """The whole `locate --json` document."""
    clip = result.clip
    return {
        "clip": {
            "path": str(clip.path),
            "duration_s": round(clip.duration_s, 6),
            "samplerate": clip.samplerate,
            "channels": clip.channels,
        },
        "verdict": verdict_json(result.verdict),
        "matches": [match_json(m) for m in result.matches],
        "timeline": [[round(t, 3), {k: round(s, 4) for k, s in sh.items()}, round(r, 4)] for t, sh, r in result.timeline],
        "focus_s": list(result.focus) if result.focus else None,
        "focus_by": result.focus_by,
        "band_hz": list(result.band) if result.band else None,
        "warnings": list(result.warnings),
        "index": dict(result.index),
    }


_FOCUS_WORDS = {"event": "the sound the clip is cut around", "handles": "the clip less its handles",
                "at": "the pointed instant"}


def render_locate(result, console, *, top: int = 10) -> None:
    """Print the matches table and the verdict sentence to a rich console."""
    from rich.table import Table

    table = Table(title=f"{result.clip.path.name}  ({result.clip.duration_s:.2f} s)", title_justify="left",
                  box=None, header_style="bold", pad_edge=False)
    table.add_column("stem", overflow="fold")
    table.add_column("role")
    table.add_column("ch", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    table.add_column("h:mm:ss.mmm", justify="right", no_wrap=True)
    table.add_column("timecode", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    for m in result.matches[:top]:
        name = m.stem.track_name(m.channel)
        bold = m is result.verdict.match or (result.verdict.match is not None and m.stem is result.verdict.match.stem)
        table.add_row(
            m.stem.rel,
            m.stem.role,
            f"{m.channel + 1}" + (f" {name}" if name else ""),
            f"{m.offset_s:.4f}",
            hms(m.offset_s),
            stem_timecode(m.stem, m.offset) or "-",
            f"{m.score:.3f}",
            "" if m.share is None else f"{m.share:.2f}",
            style="bold" if bold else None,
        )
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    info = result.index
    if info.get("built"):
        console.print(f"[dim]indexed {info['built']} file(s) into {info['cache']} (first search of them; "
                      "later searches reuse it)[/]")
    if info.get("fallback") and info.get("cache"):
        console.print(f"[dim]{info['fallback']}[/]")
    if info.get("presearch") not in (None, "used"):
        console.print(f"[dim]envelope pre-search {info['presearch']}[/]")
    console.print(table)
    if result.focus and result.focus_by in _FOCUS_WORDS:
        console.print(f"[dim]attributed over {_FOCUS_WORDS[result.focus_by]}: {result.focus[0]:.2f} to "
                      f"{result.focus[1]:.2f} s into the clip[/]")
    style = "bold green" if result.found else "bold yellow"
    console.print(f"[{style}]{result.verdict.text}[/] Confidence {result.verdict.confidence:.2f}.")


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(obj):
    """Replace non-finite floats by None, so the output is standard JSON (no NaN / Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(doc: dict) -> str:
    """Standard JSON (non-finite numbers become null), indented, UTF-8 text kept as is."""
    return json.dumps(_finite(doc), indent=2, ensure_ascii=False, allow_nan=False)


# --- `whichsound scan`: what whichsound sees in the folders -------------------------------------------

_SUBTYPE_SHORT = {"PCM_S8": "8", "PCM_U8": "8", "PCM_16": "16", "PCM_24": "24", "PCM_32": "32",
                  "FLOAT": "32f", "DOUBLE": "64f"}


def stem_format(stem) -> tuple[str | None, str | None]:
    """(format, subtype) of a stem's file from its header, e.g. ("WAV", "PCM_24"); (None, None) if unreadable."""
    from whichsound.audio import probe
    from whichsound.errors import WhichsoundError

    try:
        info = probe(stem.path)
    except WhichsoundError:
        return None, None
    return info.format, info.subtype


def stem_fps(stem) -> str | None:
    """The stem's timecode rate as printed ("23.976", "25", "29.97 DF"), or None without one."""
    if stem.fps is None:
        return None
    from whichsound.errors import WhichsoundError
    from whichsound.timecode import FrameRate

    fps = stem.fps
    for drop in dict.fromkeys((bool(stem.drop_frame), False)):
        try:
            return str(FrameRate(fps.numerator, fps.denominator, drop))
        except (WhichsoundError, ValueError, TypeError):
            continue
    return f"{float(fps):.3f}".rstrip("0").rstrip(".")


def _start_timecode(stem) -> str | None:
    """Time-of-day (or timeline) timecode of the stem's first sample, or None when it has none."""
    from whichsound.errors import WhichsoundError

    try:
        return stem_timecode(stem, 0)
    except (WhichsoundError, ValueError, TypeError):  # a frame rate without a timecode (e.g. 12.5 fps)
        return None


def _split_warning(text: str, roots) -> dict:
    """A discovery warning "<path>: <problem>" as {"path", "root", "problem"}.

    The path is the longest prefix ending before a ': ' that names an existing file (paths may hold ': '
    themselves); it is made relative to the first root that holds it. A warning that cannot be split this
    way is kept whole as the problem, with path and root null.
    """
    start = 0
    candidates = []
    while (i := text.find(": ", start)) != -1:
        candidates.append(i)
        start = i + 1
    for i in reversed(candidates):
        path = Path(text[:i])
        if path.is_file():
            for root in roots:
                try:
                    return {"path": path.relative_to(Path(root)).as_posix(), "root": root,
                            "problem": text[i + 2:]}
                except ValueError:
                    continue
            return {"path": text[:i], "root": None, "problem": text[i + 2:]}
    return {"path": None, "root": None, "problem": text}


def scan_file_json(stem) -> dict:
    """One discovered file as `scan --json` lists it."""
    fmt, subtype = stem_format(stem)
    fps = stem_fps(stem)
    return {
        "path": stem.rel,
        "root": stem.root,
        "role": stem.role,
        "format": fmt,
        "subtype": subtype,
        "samplerate": stem.samplerate,
        "channels": stem.channels,
        "frames": stem.frames,
        "duration_s": round(stem.duration_s, 6),
        "duration": hms(stem.duration_s),
        "time_reference": stem.time_reference,
        "timecode": _start_timecode(stem),
        "fps": fps,
        "drop_frame": None if fps is None else bool(stem.drop_frame) and fps.endswith("DF"),
        "scene": stem.scene,
        "take": stem.take,
        "tape": stem.tape,
        "tracks": [stem.track_name(c) for c in range(stem.channels)],
        "speakers": list(stem.speakers) if stem.speakers is not None else None,
    }


def scan_json(discovery, roots) -> dict:
    """The whole `scan --json` document: files, unreadable files and a summary, from discover(roots)."""
    from whichsound.stems import ROLES

    files = [scan_file_json(s) for s in discovery.stems]
    unreadable = [_split_warning(w, list(roots)) for w in discovery.warnings]
    counts = {r: sum(f["role"] == r for f in files) for r in ROLES}
    total = sum(s.duration_s for s in discovery.stems)
    return {
        "files": files,
        "unreadable": unreadable,
        "summary": {
            "files": len(files),
            "unreadable": len(unreadable),
            "roles": {r: n for r, n in counts.items() if n},
            "duration_s": round(total, 6),
            "duration": hms(total),
        },
    }


def _format_cell(f: dict) -> str:
    if f["format"] is None:
        return "?"
    sub = _SUBTYPE_SHORT.get(f["subtype"] or "", (f["subtype"] or "").lower().replace("_", " "))
    return f"{f['format']} {sub}".strip()


def _provenance_cell(f: dict) -> str:
    parts = []
    if f["scene"] or f["take"]:
        parts.append(f"{f['scene'] or '?'}/{f['take'] or '?'}")
    if f["tape"]:
        parts.append(f["tape"])
    return " ".join(parts)


def render_scan(doc: dict, console) -> None:
    """Print a `scan_json` document as one compact table per folder, then the unreadable files."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    roots = list(dict.fromkeys([f["root"] for f in doc["files"]] +
                               [u["root"] for u in doc["unreadable"] if u["root"] is not None]))
    for root in roots:
        files = [f for f in doc["files"] if f["root"] == root]
        bad = [u for u in doc["unreadable"] if u["root"] == root]
        total = sum(f["duration_s"] for f in files)
        title = f"[bold]{escape(root)}[/]  {len(files)} file{'s' * (len(files) != 1)}, {hms(total)}"
        if bad:
            title += f", [yellow]{len(bad)} unreadable[/]"
        table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
        width = min(max([len(f["path"]) for f in files] + [4]), 32)
        table.add_column("file", overflow="fold", min_width=width)
        table.add_column("role", no_wrap=True)
        table.add_column("format", no_wrap=True)
        table.add_column("kHz", justify="right", no_wrap=True)
        table.add_column("ch", justify="right", no_wrap=True)
        table.add_column("length", justify="right", no_wrap=True)
        table.add_column("start TC", no_wrap=True)
        table.add_column("fps", no_wrap=True)
        table.add_column("scene/take", overflow="fold")
        table.add_column("tracks", overflow="fold")
        for f in files:
            tracks = " | ".join(t or "-" for t in f["tracks"]) if any(f["tracks"]) else ""
            if f["channels"] > 2 and f["speakers"] and not any(f["tracks"]):
                tracks = " ".join(f["speakers"]) + " (taken as)"
            table.add_row(
                Text(f["path"]),
                f["role"],
                _format_cell(f),
                f"{f['samplerate'] / 1000:g}",
                str(f["channels"]),
                hms(f["duration_s"]),
                f["timecode"] or "-",
                f["fps"] or "-",
                Text(_provenance_cell(f)),
                Text(tracks),
            )
        console.print(table)
        for u in bad:
            console.print(Text(f"unreadable: {u['path']}: {u['problem']}", style="yellow"))
        console.print()
    for u in doc["unreadable"]:
        if u["root"] is None:
            console.print(Text(f"unreadable: {(u['path'] + ': ') if u['path'] else ''}{u['problem']}",
                               style="yellow"))
    s = doc["summary"]
    roles = ", ".join(f"{r} {n}" for r, n in s["roles"].items())
    line = f"{s['files']} file{'s' * (s['files'] != 1)}"
    line += f" ({roles})" if roles else ""
    line += f", {s['duration']} in all"
    if s["unreadable"]:
        line += f"; {s['unreadable']} unreadable"
    console.print(Text(line, style="bold"))


__all__ += ["render_scan", "scan_file_json", "scan_json", "stem_format", "stem_fps"]


# --- `whichsound batch`: one row per review note -------------------------------------------------------

BATCH_CSV_COLUMNS = (
    "id", "line", "tc_in", "tc_out", "note", "source stem", "root", "role", "origin", "offset_s",
    "stem timecode", "confidence", "shares", "sync_offset_s", "production take", "production timecode", "error",
)


def batch_row_json(row) -> dict:
    """One batch row as the report's dict: the note, locate's verdict and matches, the sync offset, the error."""
    n = row.note
    return {
        "id": n.id,
        "line": n.line,
        "tc_in": n.tc_in,
        "tc_out": n.tc_out,
        "note": n.note,
        "clip": n.clip,
        "window": None if row.start_s is None else {
            "start_s": row.start_s, "end_s": row.end_s, "tc_in": row.tc_in_label, "tc_out": row.tc_out_label},
        "verdict": row.verdict,
        "matches": list(row.matches),
        "shares": dict(row.shares),
        "residual_share": row.residual_share,
        "focus_s": None if row.focus_s is None else list(row.focus_s),
        "focus_by": row.focus_by,
        "expected_offset_s": row.expected_offset_s,
        "sync_offset_s": row.sync_offset_s,
        "sync": row.sync_text,
        "warnings": list(row.warnings),
        "seconds": round(row.seconds, 3),
        "error": row.error,
    }


def batch_summary(report) -> dict:
    """Counts by origin and role, failed rows, speed and what the run used."""
    answered = [r for r in report.rows if r.failure is None and r.verdict is not None]
    by_origin: dict[str, int] = {}
    by_role: dict[str, int] = {}
    for r in answered:
        by_origin[r.verdict["origin"]] = by_origin.get(r.verdict["origin"], 0) + 1
        role = r.verdict["role"] or "none"
        by_role[role] = by_role.get(role, 0) + 1
    failed = [r for r in report.rows if r.failure is not None]
    synced = [r for r in answered if r.sync_text]
    return {
        "notes": len(report.rows),
        "answered": len(answered),
        "found": sum(r.verdict["stem"] is not None for r in answered),
        "none": sum(r.verdict["stem"] is None for r in answered),
        "failed": len(failed),
        "failed_lines": [r.note.line for r in failed],
        "by_origin": by_origin,
        "by_role": by_role,
        "sync_offsets": len(synced),
        "seconds": round(report.seconds, 3),
        "notes_per_second": None if report.seconds <= 0 else round(len(report.rows) / report.seconds, 4),
        "jobs": report.jobs,
        "notes_file": str(report.notes_path),
        "mix": report.mix,
        "fps": report.fps,
        "mix_start": report.mix_start,
        "window_s": report.window_s,
        "stems": report.stems,
        "warnings": list(report.warnings),
    }


def batch_json(report) -> dict:
    """The whole `batch` JSON report: {"rows": [...], "summary": {...}}."""
    return {"rows": [batch_row_json(r) for r in report.rows], "summary": batch_summary(report)}


def _shares_cell(row) -> str:
    roles = {m["stem"]: m["role"] for m in row.matches}
    labels = [roles.get(rel, rel) for rel in row.shares]
    parts = [f"{(roles.get(rel, rel) if labels.count(roles.get(rel, rel)) == 1 else rel)} {v:.2f}"
             for rel, v in row.shares.items() if v >= 0.005]
    if row.residual_share is not None:
        parts.append(f"residual {row.residual_share:.2f}")
    return "; ".join(parts)


def _production_cells(v: dict | None) -> tuple[str, str]:
    """(take, timecode) of a verdict's production provenance; the take itself for a take verdict."""
    if v is None:
        return "", ""
    if v.get("role") == "PROD":
        return v["stem"] or "", v.get("timecode") or ""
    prod = v.get("production")
    if prod is None:
        return "", ""
    if prod.get("file") is None:
        return "in no take given", ""
    track = prod.get("track") or (f"ch {prod['channel'] + 1}" if prod.get("channel") is not None else None)
    return prod["file"] + (f" ({track})" if track else ""), prod.get("timecode") or ""


def batch_table_rows(report) -> list[dict[str, str]]:
    """One dict of text cells per note, keyed by BATCH_CSV_COLUMNS: the CSV report and the terminal table."""
    out = []
    for r in report.rows:
        v = r.verdict or {}
        take, take_tc = _production_cells(r.verdict)
        out.append({
            "id": r.note.id,
            "line": str(r.note.line),
            "tc_in": r.tc_in_label or r.note.tc_in or "",
            "tc_out": r.tc_out_label or r.note.tc_out or "",
            "note": r.note.note,
            "source stem": ("(none)" if r.verdict and v.get("stem") is None else v.get("stem") or ""),
            "root": v.get("root") or "",
            "role": v.get("role") or "",
            "origin": v.get("origin") or "",
            "offset_s": "" if v.get("offset_s") is None else f"{v['offset_s']:.6f}",
            "stem timecode": v.get("timecode") or "",
            "confidence": "" if not v else f"{v['confidence']:.2f}",
            "shares": _shares_cell(r) if r.verdict else "",
            "sync_offset_s": "" if r.sync_offset_s is None else f"{r.sync_offset_s:.6f}",
            "production take": take,
            "production timecode": take_tc,
            "error": r.error or "",
        })
    return out


def batch_csv(report) -> str:
    """The CSV report: a header row and one row per note (columns BATCH_CSV_COLUMNS)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=BATCH_CSV_COLUMNS, lineterminator="\r\n")
    w.writeheader()
    w.writerows(batch_table_rows(report))
    return buf.getvalue()


def render_batch(report, console) -> None:
    """Print one table row per note, then the sync offsets, the failed rows and a summary line."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, kw in (("id", {"no_wrap": True}), ("tc_in", {"no_wrap": True}),
                     ("note", {"overflow": "fold", "min_width": 10}),
                     ("source stem", {"overflow": "fold", "min_width": 10}), ("role/origin", {"no_wrap": True}),
                     ("stem TC", {"no_wrap": True}), ("conf", {"justify": "right", "no_wrap": True}),
                     ("production take", {"overflow": "fold"}), ("sync", {"justify": "right", "no_wrap": True}),
                     ("error", {"overflow": "fold"})):
        table.add_column(name, **kw)
    for r, cells in zip(report.rows, batch_table_rows(report), strict=True):
        role = f"{cells['role'] or '-'}/{cells['origin']}" if cells["origin"] else ""
        take = " ".join(x for x in (cells["production take"], cells["production timecode"]) if x)
        sync = "" if not r.sync_text else f"{r.sync_offset_s * 1000:+.1f} ms"
        style = "red" if r.failure else ("yellow" if r.verdict and r.verdict["stem"] is None else None)
        table.add_row(Text(cells["id"]), cells["tc_in"], Text(cells["note"]), Text(cells["source stem"]), role,
                      cells["stem timecode"], cells["confidence"], Text(take), sync, Text(cells["error"]),
                      style=style)
    console.print(table)
    for w in report.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    for r in report.rows:
        if r.sync_text:
            console.print(Text(f"{r.note.id} (line {r.note.line}): sync: {r.sync_text}", style="yellow"))
    s = batch_summary(report)
    origins = ", ".join(f"{k} {n}" for k, n in sorted(s["by_origin"].items()))
    line = f"{s['notes']} notes: {s['answered']} answered ({origins or 'none'}), {s['failed']} failed"
    if s["notes_per_second"]:
        line += f"; {s['notes_per_second']:.2f} notes/s with {s['jobs']} job{'s' * (s['jobs'] != 1)}"
    console.print(Text(line, style="bold"))


__all__ += ["BATCH_CSV_COLUMNS", "batch_csv", "batch_json", "batch_row_json", "batch_summary",
            "batch_table_rows", "render_batch"]
