"""Feature-length figures (issue 7): index build, warm and cold locate, warm batch, peak RSS, and a peer.

Material, generated from the real recordings in ../shared/sounds and written block by block: a reel of 5
stems (DX mono; FX, FOL, BG, MX stereo; 48 kHz 24-bit; default 60 min), its printmaster, and production
takes (2-channel poly, default 36 x 5 min = 3 h). A 5 s clip is cut from the printmaster at a known place
and 100 review notes are written at random timecodes. Every command runs as a child process; its wall time
includes process start, its peak RSS comes from os.wait4. Run as root, the page cache is emptied before
`cat` and before the cold locate, so both read the files from the disk.

    python benchmarks/bench_index.py [--minutes 60] [--take-hours 3] [--workdir /tmp/ws-bench-index]
                                     [--aof /tmp/aofenv/bin/audio-offset-finder] [--ffmpeg BIN] [--full-rate]

The peer lives in its own venv (it pins an old numpy) and calls ffmpeg from PATH:
    python3 -m venv /tmp/aofenv && /tmp/aofenv/bin/pip install audio-offset-finder imageio-ffmpeg
    --ffmpeg "$(/tmp/aofenv/bin/python -c 'import imageio_ffmpeg as f; print(f.get_ffmpeg_exe())')"

Prints one line per measurement and a summary table; --json FILE writes the figures too. The material is
kept in --workdir and reused when it is already there (delete it to regenerate).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
START_S = 3600.0  # the printmaster starts at 01:00:00:00
CLIP_S = 5.0


def _pool(sources: Path, sub: str, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    files = sorted((sources / sub).rglob("*.flac"))
    picks = rng.choice(len(files), size=min(count, len(files)), replace=False)
    out = []
    for i in picks:
        x, sr = sf.read(files[i], dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        out.append((soxr.resample(x, sr, SR) if sr != SR else x).astype(np.float32))
    return out


class _Layer:
    """An endless stream of sources from a pool, laid end to end with gaps, at random gains and pans."""

    def __init__(self, pool, rng, channels, gain_db, gap_s):
        self.pool, self.rng, self.channels = pool, rng, channels
        self.gain_db, self.gap_s = gain_db, gap_s
        self.buf = np.zeros((0, channels), np.float32)

    def take(self, n: int) -> np.ndarray:
        while len(self.buf) < n:
            x = self.pool[self.rng.integers(len(self.pool))]
            g = 10 ** (self.rng.uniform(*self.gain_db) / 20)
            pan = self.rng.uniform(0.3, 1.0, size=self.channels) if self.channels > 1 else np.ones(1)
            gap = np.zeros((int(self.rng.uniform(*self.gap_s) * SR), self.channels), np.float32)
            self.buf = np.concatenate([self.buf, x[:, None] * pan[None, :] * g, gap])
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def make_material(work: Path, minutes: float, take_hours: float, sources: Path, seed: int) -> dict:
    """Write reel/, production/, printmaster.wav, clip.wav and notes.csv under `work`; return the truth."""
    truth_path = work / "truth.json"
    if truth_path.is_file():
        return json.loads(truth_path.read_text())
    rng = np.random.default_rng(seed)
    reel, prod = work / "reel", work / "production"
    reel.mkdir(parents=True, exist_ok=True)
    prod.mkdir(parents=True, exist_ok=True)
    speech, sfx = _pool(sources, "speech", rng, 60), _pool(sources, "sfx", rng, 80)
    amb, music = _pool(sources, "amb", rng, 10), _pool(sources, "music", rng, 9)
    layers = {
        "R1_DX.wav": _Layer(speech, rng, 1, (-10, -4), (0.2, 1.5)),
        "R1_FX.wav": _Layer(sfx, rng, 2, (-20, -8), (1.0, 6.0)),
        "R1_FOL.wav": _Layer(sfx, rng, 2, (-26, -14), (2.0, 8.0)),
        "R1_BG.wav": _Layer(amb, rng, 2, (-26, -20), (0.0, 0.5)),
        "R1_MX.wav": _Layer(music, rng, 2, (-22, -14), (5.0, 20.0)),
    }
    total = int(minutes * 60 * SR)
    clip_at = int(rng.uniform(0.6, 0.9) * total)
    files = {name: sf.SoundFile(reel / name, "w", SR, lay.channels, subtype="PCM_24") for name, lay in layers.items()}
    mix = sf.SoundFile(work / "printmaster.wav", "w", SR, 2, subtype="PCM_24")
    clip = np.zeros((int(CLIP_S * SR), 2), np.float32)
    block = 60 * SR
    for lo in range(0, total, block):
        n = min(block, total - lo)
        acc = np.zeros((n, 2), np.float32)
        for name, lay in layers.items():
            x = lay.take(n)
            files[name].write(x)
            acc += x if x.shape[1] == 2 else np.repeat(x * 0.7071, 2, axis=1)
        mix.write(acc)
        a, b = max(lo, clip_at), min(lo + n, clip_at + len(clip))
        if a < b:
            clip[a - clip_at : b - clip_at] = acc[a - lo : b - lo]
    for f in (*files.values(), mix):
        f.close()
    sf.write(work / "clip.wav", clip, SR, subtype="PCM_24")
    take_s = 300.0
    n_takes = max(1, int(round(take_hours * 3600 / take_s)))
    for t in range(n_takes):
        lay = _Layer(speech, rng, 2, (-14, -6), (0.3, 2.0))
        with sf.SoundFile(prod / f"{10 + t // 4}A_T{t % 4 + 1:02d}.wav", "w", SR, 2, subtype="PCM_24") as f:
            for lo in range(0, int(take_s * SR), block):
                f.write(lay.take(min(block, int(take_s * SR) - lo)))
    notes = ["id,tc_in,tc_out,note"]
    for i, at in enumerate(sorted(rng.uniform(5, minutes * 60 - 5, size=100))):
        notes.append(f"N{i + 1:03d},{_tc(START_S + at)},{_tc(START_S + at + 2.0)},what is this?")
    (work / "notes.csv").write_text("\n".join(notes) + "\n")
    truth = {"clip_offset_s": clip_at / SR, "minutes": minutes, "takes": n_takes,
             "take_s": take_s}
    truth_path.write_text(json.dumps(truth))
    return truth


def _tc(seconds: float, fps: int = 24) -> str:
    f = int(seconds * fps)
    return f"{f // (3600 * fps):02d}:{f // (60 * fps) % 60:02d}:{f // fps % 60:02d}:{f % fps:02d}"


def run(cmd: list[str], label: str, env: dict | None = None) -> dict:
    """Run `cmd` as a child; wall seconds and peak RSS (MB) of it and its waited-for children."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss / 1024
    print(f"{label:<34} {wall:8.2f} s  {rss:7.0f} MB  exit {rc}", flush=True)
    if rc not in (0, 1):
        print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    return {"label": label, "wall_s": round(wall, 3), "rss_mb": round(rss, 1), "exit": rc,
            "stdout": out.decode(errors="replace")}


def _drop_page_cache() -> bool:
    """Empty the kernel's page cache (root only), so that the next command reads the files from the disk;
    False when not allowed (the figures are then warm-cache ones, and say so)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _compile_whichsound() -> None:
    """Compile whichsound's modules to bytecode where Python looks for it, as installing the package does:
    from an editable install with PYTHONDONTWRITEBYTECODE set, every measured command would otherwise
    compile them again (about 40 ms of each start)."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("whichsound")
    if spec is not None and spec.submodule_search_locations:
        folder = next(iter(spec.submodule_search_locations))
        compileall.compile_dir(folder, quiet=1)
        print(f"whichsound's bytecode compiled in {folder} (as an installed package has it)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--take-hours", type=float, default=3.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ws-bench-index"))
    ap.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--aof", default="/tmp/aofenv/bin/audio-offset-finder",
                    help="audio-offset-finder executable (own venv: it pins an old numpy); skipped if absent")
    ap.add_argument("--ffmpeg", default=None,
                    help="ffmpeg binary for audio-offset-finder when none is on PATH (e.g. imageio-ffmpeg's)")
    ap.add_argument("--notes", type=int, default=100, help="Notes of the batch run (the first N of 100).")
    ap.add_argument("--full-rate", action="store_true", help="Also time locate --no-index (full-rate scan).")
    ap.add_argument("--long-clips", default="",
                    help="Also time warm locate of mix excerpts this many minutes long (comma-separated, e.g. "
                         "1,5), cut from the printmaster at 10 min: bounded memory whatever the clip's length.")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.generate_only:
        make_material(work, args.minutes, args.take_hours, args.sources, args.seed)
        return
    if not (work / "truth.json").is_file():
        # In a child: the measured commands are forked from this process, and a forked child's peak RSS
        # counts the parent's pages until it execs; the generator's buffers would inflate every figure.
        subprocess.run([sys.executable, __file__, "--generate-only", "--minutes", str(args.minutes),
                        "--take-hours", str(args.take_hours), "--workdir", str(work), "--sources",
                        str(args.sources), "--seed", str(args.seed)], check=True)
    truth = json.loads((work / "truth.json").read_text())
    _compile_whichsound()
    print(f"material in {work} ({time.perf_counter() - t0:.0f} s): reel {truth['minutes']:g} min x 5 stems, "
          f"{truth['takes']} takes x {truth['take_s']:g} s")
    files = sorted(p for p in work.rglob("*.wav") if p.name != "clip.wav" and not p.name.startswith("long_"))
    gb = sum(p.stat().st_size for p in files) / 1e9
    print(f"{len(files)} files, {gb:.2f} GB")
    ws = [sys.executable, "-m", "whichsound"]
    cache = work / "cache"
    stems = ["--stems", str(work / "reel"), "--stems", str(work / "production")]
    clip = str(work / "clip.wav")
    res: dict[str, dict] = {}

    # cat and the cold locate each start from an empty page cache where this process may empty it (root):
    # both then read from the disk. Otherwise cat reads what earlier runs left cached, and so may locate.
    disk = _drop_page_cache()
    print("page cache emptied before cat and before the cold locate: both read from the disk" if disk else
          "page cache not emptied (not root): cat and the cold locate read what is cached")
    res["cat"] = run(["sh", "-c", "cat " + " ".join(str(p) for p in files if p.name != "printmaster.wav")
                      + " > /dev/null"], "cat (stems + takes)")
    if args.full_rate:
        res["full"] = run([*ws, "locate", clip, *stems, "--no-index", "--json"], "locate --no-index (full rate)")
    shutil.rmtree(cache, ignore_errors=True)
    if disk:
        _drop_page_cache()
    res["cold"] = run([*ws, "locate", clip, *stems, "--cache", str(cache), "--json"],
                      "cold locate (empty cache: indexes)")
    shutil.rmtree(cache, ignore_errors=True)
    res["build"] = run([*ws, "index", str(work / "reel"), str(work / "production"), "--cache", str(cache)],
                       "index build (all files)")
    res["warm"] = run([*ws, "locate", clip, *stems, "--cache", str(cache), "--json"], "warm locate (5 s clip)")
    res["warm2"] = run([*ws, "locate", clip, *stems, "--cache", str(cache), "--json"], "warm locate again")
    long_truth = {}
    for minutes in (float(m) for m in args.long_clips.split(",") if m.strip()):
        at = 600.0
        path = work / f"long_{minutes:g}min.wav"
        with sf.SoundFile(work / "printmaster.wav") as f:
            f.seek(int(at * SR))
            sf.write(path, f.read(int(minutes * 60 * SR), dtype="float32"), SR, subtype="PCM_24")
        key = f"long{minutes:g}"
        res[key] = run([*ws, "locate", str(path), *stems, "--cache", str(cache), "--json"],
                       f"warm locate ({minutes:g}-min clip)")
        long_truth[key] = at
    report = work / "batch.json"
    notes_csv = work / "notes.csv"
    if args.notes < 100:  # the first N notes only: a quicker measure of the rate
        lines = notes_csv.read_text().splitlines()
        notes_csv = work / f"notes_{args.notes}.csv"
        notes_csv.write_text("\n".join(lines[: args.notes + 1]) + "\n")
    res["batch"] = run([*ws, "batch", str(notes_csv), "--mix", str(work / "printmaster.wav"), *stems,
                        "--cache", str(cache), "--start-tc", "01:00:00:00", "--fps", "24", "--out", str(report),
                        "--json"], f"batch {args.notes} notes (warm)")
    if Path(args.aof).is_file():
        env = dict(os.environ)
        if args.ffmpeg:  # audio-offset-finder calls `ffmpeg` from PATH
            bindir = work / "ffbin"
            bindir.mkdir(exist_ok=True)
            link = bindir / "ffmpeg"
            if not link.exists():
                link.symlink_to(Path(args.ffmpeg).resolve())
            env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
        res["aof"] = run([args.aof, "--find-offset-of", clip, "--within", str(work / "reel" / "R1_DX.wav"),
                          "--json"], "audio-offset-finder, DX stem only", env)
        print(f"  audio-offset-finder says: {res['aof']['stdout'].strip()[-200:]}")
    else:
        print(f"audio-offset-finder not found at {args.aof}: skipped")

    # Correctness of the warm answer, and the batch rate.
    doc = json.loads(res["warm"]["stdout"])
    v = doc["verdict"]
    err_ms = abs(v["offset_s"] - truth["clip_offset_s"]) * 1000 if v["offset_s"] is not None else None
    # The clip is a mix excerpt: any stem of the reel at the right offset (all share the timeline) is right.
    ok = v["stem"] is not None and (work / "reel" / v["stem"]).is_file() and err_ms is not None and err_ms < 1.0
    rows = json.loads(report.read_text())["rows"] if report.is_file() else []
    answered = sum(r["error"] is None for r in rows)
    rate = len(rows) / res["batch"]["wall_s"] if rows else 0.0
    print()
    print(f"warm locate answer: {v['stem']} at {v['offset_s']} s (truth: the reel's stems at "
          f"{truth['clip_offset_s']:.4f} s; error {err_ms if err_ms is None else round(err_ms, 3)} ms) "
          f"-> {'right' if ok else 'WRONG'}")
    print(f"batch: {answered}/{len(rows)} notes answered, {rate:.1f} notes/s (process start included)")
    for key, at in long_truth.items():
        lv = json.loads(res[key]["stdout"])["verdict"] if res[key]["exit"] in (0, 1) else {}
        off = lv.get("offset_s")
        right = lv.get("stem") is not None and off is not None and abs(off - at) < 0.001
        print(f"{res[key]['label']}: {lv.get('stem')} at {off} s (truth: the reel at {at:g} s) "
              f"-> {'right' if right else 'WRONG'}")
    print()
    print(f"{'measure':<34} {'wall s':>8} {'RSS MB':>8}  target")
    targets = {"build": "<= 60 s", "warm": "<= 1.0 s", "warm2": "<= 1.0 s", "batch": ">= 20 notes/s",
               "cold": f"<= 3x cat = {3 * res['cat']['wall_s']:.1f} s"}
    for k, r in res.items():
        print(f"{r['label']:<34} {r['wall_s']:8.2f} {r['rss_mb']:8.0f}  {targets.get(k, '')}")
    standard = [r["rss_mb"] for k, r in res.items() if k not in ("cat", "aof") and k not in long_truth]
    print(f"peak RSS over whichsound runs: {max(standard):.0f} MB (target <= 1024)"
          + (f"; long clips: {max(res[k]['rss_mb'] for k in long_truth):.0f} MB" if long_truth else ""))
    if args.json:
        for r in res.values():
            r.pop("stdout", None)
        args.json.write_text(json.dumps({"results": res, "warm_right": ok, "warm_error_ms": err_ms,
                                         "batch_notes_per_s": rate, "gb": gb}, indent=1))


if __name__ == "__main__":
    main()
