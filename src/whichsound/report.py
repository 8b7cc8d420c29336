"""Rendering results: the JSON contract, rich tables and verdict sentences. No computation beyond formatting.

The JSON of `locate` is a contract read by other tools (the benchmark among them): keys are only ever added.
"""

from __future__ import annotations

import json
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
        "band_hz": list(result.band) if result.band else None,
        "warnings": list(result.warnings),
    }


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
    console.print(table)
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


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)
