"""Time and peak memory of `whichsound locate` against one long stem (default: 60 min stereo 48 kHz 24-bit).

The stem is built from the real recordings in ../shared/sounds (speech, music, ambiences laid end to end
with random gains), written in blocks so this script itself stays small; a 5 s clip is cut from near its
end. The command runs as a child process; its peak RSS comes from os.wait4.

    python benchmarks/bench_memory.py [--minutes 60] [--channels 2] [--workdir /tmp/ws-bench-mem]
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
HERE = Path(__file__).resolve().parent
DEFAULT_SOURCES = HERE.parent.parent / "shared" / "sounds"


def load_sources(sources: Path, rng: np.random.Generator, count: int = 40) -> list[np.ndarray]:
    """Decode `count` random recordings (speech, music, amb) at 48 kHz mono."""
    files = sorted(p for sub in ("speech", "music", "amb") for p in (sources / sub).rglob("*.flac"))
    picks = rng.choice(len(files), size=min(count, len(files)), replace=False)
    out = []
    for i in picks:
        x, sr = sf.read(files[i], dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        if sr != SR:
            x = soxr.resample(x, sr, SR)
        out.append(x.astype(np.float32))
    return out


def make_stem(path: Path, minutes: float, channels: int, sources: Path, seed: int) -> tuple[int, np.ndarray]:
    """Write the long stem block by block; return (clip start sample, clip samples)."""
    rng = np.random.default_rng(seed)
    pool = load_sources(sources, rng)
    total = int(minutes * 60 * SR)
    clip_at = total - 7 * SR
    clip = None
    written = 0
    with sf.SoundFile(path, "w", SR, channels, subtype="PCM_24") as f:
        while written < total:
            x = pool[rng.integers(len(pool))]
            gain = 10 ** (rng.uniform(-18, -6) / 20)
            pan = rng.uniform(0.2, 1.0, size=channels)
            block = (x[:, None] * pan[None, :] * gain)[: total - written]
            if written <= clip_at < written + len(block) and clip_at + 5 * SR <= written + len(block):
                clip = block[clip_at - written : clip_at - written + 5 * SR].copy()
            elif clip is None and clip_at < written + len(block):
                clip_at = written + len(block)  # clip must lie inside one source: move past this one
            f.write(block)
            written += len(block)
    if clip is None:
        clip_at = written - 6 * SR
        with sf.SoundFile(path) as f:
            f.seek(clip_at)
            clip = f.read(5 * SR, dtype="float32", always_2d=True)
    return clip_at, clip


def run(cmd: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MB, exit status, stdout) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return wall, usage.ru_maxrss / 1024.0, os.waitstatus_to_exitcode(status), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ws-bench-mem"))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    stems = args.workdir / "stems"
    stems.mkdir(parents=True, exist_ok=True)
    stem = stems / f"LONG_{args.minutes:g}min_{args.channels}ch_FX.wav"
    clip_path = args.workdir / "clip.wav"
    meta = args.workdir / f"{stem.stem}.json"
    if not (stem.exists() and meta.exists()):
        t0 = time.perf_counter()
        clip_at, clip = make_stem(stem, args.minutes, args.channels, args.sources, args.seed)
        sf.write(clip_path, clip, SR, subtype="PCM_24")
        meta.write_text(json.dumps({"clip_at": clip_at}))
        print(f"made {stem.name}: {stem.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s")
    clip_at = json.loads(meta.read_text())["clip_at"]
    run(["sh", "-c", f"cat '{stem}' > /dev/null"])  # warm the page cache
    wall_cat, rss_cat, _, _ = run(["sh", "-c", f"cat '{stem}' > /dev/null"])
    cmd = [sys.executable, "-m", "whichsound", "locate", str(clip_path), "--stems", str(stems), "--json"]
    wall, rss, rc, out = run(cmd)
    doc = json.loads(out) if out.strip() else {}
    v = doc.get("verdict", {})
    err_ms = abs((v.get("offset_s") or 0) - clip_at / SR) * 1000 if v.get("offset_s") is not None else float("nan")
    size = stem.stat().st_size / 1e6
    print(f"stem: {args.minutes:g} min, {args.channels} ch, 48 kHz 24-bit, {size:.0f} MB")
    print(f"cat (warm cache):      {wall_cat:6.2f} s")
    print(f"whichsound locate:     {wall:6.2f} s   peak RSS {rss:6.0f} MB   exit {rc}")
    print(f"offset error:          {err_ms:.4f} ms   (truth {clip_at / SR:.6f} s, found {v.get('offset_s')})")


if __name__ == "__main__":
    main()
