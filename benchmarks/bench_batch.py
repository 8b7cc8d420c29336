"""Speed and peak memory of `whichsound batch`: N notes (default 100) against a 20-minute reel of 5 stereo stems.

The reel is built from the real recordings in ../shared/sounds, slot by slot (so this script stays small):
a quiet ambience bed runs under everything (BG); each slot holds one noted event, a dialogue line (DX, mono
in the centre), a sound effect (FX), a few footsteps (FOL), a music sting (MX) or a room noise that is only
in the mix (none). The stems are 48 kHz 24-bit stereo WAV without metadata, so the run passes --fps 24 and
--start-tc 01:00:00:00. The command runs as a child process; its peak RSS (and its worker processes') comes
from os.wait4. The report's verdicts are checked against the planted events, as a sanity check.

    python benchmarks/bench_batch.py [--minutes 20] [--notes 100] [--jobs N] [--workdir /tmp/ws-bench-batch]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 48000
FPS = 24
HERE = Path(__file__).resolve().parent
DEFAULT_SOURCES = HERE.parent.parent / "shared" / "sounds"
KINDS = ("DX", "FX", "FOL", "MX", "none")
STEMS = ("DX", "FX", "FOL", "BG", "MX")


def _load(path: Path, mono: bool = True) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    if mono:
        x = x.mean(axis=1, keepdims=True)
    if sr != SR:
        x = soxr.resample(x, sr, SR)
    x = np.asarray(x, dtype=np.float32)
    peak = float(np.max(np.abs(x))) or 1.0
    return x / peak


def load_pools(sources: Path) -> dict[str, list[np.ndarray]]:
    """Recordings by kind, normalised to peak 1: speech, effects, footsteps, room noises, music, ambience."""
    sfx = sorted((sources / "sfx").glob("*.flac"))
    steps = [p for p in sfx if "step" in p.name or "footstep" in p.name]
    room = [p for p in sfx if any(w in p.name.lower() for w in ("cough", "sneeze", "knock", "laugh"))]
    fx = [p for p in sfx if p not in steps and p not in room][:60]
    speech = sorted((sources / "speech").rglob("*.flac"))[:60]
    return {
        "DX": [_load(p) for p in speech],
        "FX": [_load(p) for p in fx],
        "FOL": [_load(p) for p in steps],
        "none": [_load(p) for p in room],
        "MX": [_load(p, mono=False) for p in sorted((sources / "music").glob("*.flac"))[:4]],
        "BG": [_load(sources / "amb" / "btanks__country.flac", mono=False)],
    }


def _stereo(x: np.ndarray, pan: float) -> np.ndarray:
    if x.shape[1] == 2:
        return x
    return np.concatenate([x * np.cos(pan * np.pi / 2), x * np.sin(pan * np.pi / 2)], axis=1)


def make_reel(work: Path, minutes: float, notes: int, sources: Path, seed: int) -> list[dict]:
    """Write stems/R1_<role>.wav and mix.wav slot by slot; return the planted events (one per note)."""
    rng = np.random.default_rng(seed)
    pools = load_pools(sources)
    total = int(minutes * 60 * SR)
    slot = total // notes
    (work / "stems").mkdir(parents=True, exist_ok=True)
    files = {r: sf.SoundFile(work / "stems" / f"R1_{r}.wav", "w", SR, 2, subtype="PCM_24") for r in STEMS}
    mix = sf.SoundFile(work / "mix.wav", "w", SR, 2, subtype="PCM_24")
    events = []
    bg = pools["BG"][0]
    bg_pos = 0
    try:
        for k in range(notes):
            n = slot if k < notes - 1 else total - slot * (notes - 1)
            parts = {r: np.zeros((n, 2), dtype=np.float32) for r in STEMS}
            idx = (bg_pos + np.arange(n)) % bg.shape[0]
            parts["BG"][:] = 0.03 * bg[idx]
            bg_pos += n
            kind = KINDS[k % len(KINDS)]
            src = pools[kind][rng.integers(len(pools[kind]))]
            length = min(src.shape[0], int(rng.uniform(0.6, 2.0) * SR), n - 2 * SR)
            start = int(rng.uniform(0.5, 0.5 + (n - length) / SR - 1.5) * SR)
            start -= start % (SR // FPS)  # on a frame boundary: the note's tc_in names it exactly
            ev = _stereo(src[:length], rng.uniform(0.2, 0.8)) * (0.5 if kind != "none" else 0.6)
            fade = np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / 240.0)[:, None]
            ev = (ev * fade).astype(np.float32)
            noise = np.zeros((n, 2), dtype=np.float32)
            if kind == "none":
                noise[start : start + length] = ev
            else:
                parts[kind][start : start + length] += ev
            block = sum(parts.values()) + noise
            for r in STEMS:
                files[r].write(parts[r])
            mix.write(np.clip(block, -1.0, 1.0))
            at = k * slot + start
            events.append({"id": f"N{k + 1:03d}", "kind": kind, "start": at, "end": at + length})
    finally:
        for f in files.values():
            f.close()
        mix.close()
    return events


def tc(samples: int) -> str:
    frames = 3600 * FPS + samples // (SR // FPS)
    s, f = divmod(frames, FPS)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{f:02d}"


def write_notes(path: Path, events: list[dict]) -> None:
    frame = SR // FPS
    rows = ["id,tc_in,tc_out,note"]
    for e in events:
        end = -(-e["end"] // frame) * frame
        rows.append(f"{e['id']},{tc(e['start'])},{tc(end)},planted {e['kind']}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def run(cmd: list[str]) -> tuple[float, float, float, int, str]:
    """(wall s, CPU s, peak RSS MB, exit status, stderr) of the child and its waited-for workers (os.wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - t0, cpu, usage.ru_maxrss / 1024.0, os.waitstatus_to_exitcode(status), err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--notes", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=None, help="batch --jobs (default: its own, all cores)")
    ap.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ws-bench-batch"))
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    work = args.workdir / f"{args.minutes:g}min_{args.notes}notes_seed{args.seed}"
    meta = work / "events.json"
    if not meta.exists():
        t0 = time.perf_counter()
        events = make_reel(work, args.minutes, args.notes, args.sources, args.seed)
        write_notes(work / "notes.csv", events)
        meta.write_text(json.dumps(events))
        size = sum(p.stat().st_size for p in work.rglob("*.wav")) / 1e6
        print(f"made the reel: 5 stereo stems + mix, {args.minutes:g} min, {size:.0f} MB in {time.perf_counter() - t0:.1f} s")
    events = json.loads(meta.read_text())
    out = work / "report.json"
    cmd = [sys.executable, "-m", "whichsound", "batch", str(work / "notes.csv"), "--mix", str(work / "mix.wav"),
           "--stems", str(work / "stems"), "--fps", str(FPS), "--start-tc", "01:00:00:00", "--out", str(out)]
    if args.jobs:
        cmd += ["--jobs", str(args.jobs)]
    for p in work.rglob("*.wav"):  # warm the page cache
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    load = os.getloadavg()[0]
    wall, cpu, rss, rc, err = run(cmd)
    doc = json.loads(out.read_text()) if out.exists() else {"rows": [], "summary": {}}
    want = {e["id"]: (None if e["kind"] == "none" else f"R1_{e['kind']}.wav") for e in events}
    rows = doc["rows"]
    right = sum(r["verdict"] is not None and r["verdict"]["stem"] == want[r["id"]] for r in rows)
    failed = sum(r["error"] is not None for r in rows)
    s = doc["summary"]
    print(f"reel: {args.minutes:g} min, 5 stereo stems, 48 kHz 24-bit; {len(events)} notes; jobs {s.get('jobs')}")
    print(f"whichsound batch: {wall:6.1f} s wall   {len(events) / wall:5.2f} notes/s   peak RSS {rss:6.0f} MB   exit {rc}")
    print(f"CPU: {cpu:6.1f} s in all, {cpu / len(events):5.2f} s per note (load average {load:.1f} before the run)")
    print(f"verdicts: {right}/{len(rows)} name the planted stem (or none); {failed} rows failed")
    if rc not in (0, 3):
        print(err[-2000:])


if __name__ == "__main__":
    main()
