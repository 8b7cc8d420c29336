"""Where a warm batch note's time goes (issue 7): each search stage's CPU milliseconds per note.

Runs `whichsound batch` in this process on bench_index.py's material (its 60-min reel, 3 h of takes and
notes; generated first when absent), one note at a time on one thread (as each of batch's worker processes
runs them), with a timer around each stage of the search. Prints milliseconds per note for each stage and
the budget a rate of --target notes per second leaves on this machine's cores (less the run's fixed start
cost, measured by a run of --fixed-notes notes as a child process):

    python benchmarks/batch_stages.py [--notes 30] [--workdir /tmp/ws-bench-index] [--target 20]

The stages nest (a fit's transforms inside the fit); "other" is what no timer covers. The timers wrap
module functions by name, so a renamed stage shows as missing, not as zero.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (module, function, label, nested under another stage)
STAGES = [
    ("whichsound.locate", "_scan_all", "coarse scan of the reel (window)", False),
    ("whichsound.locate", "_presearch", "takes pre-search (envelopes + scans)", False),
    ("whichsound.locate", "_refine_group", "full-rate refinement", False),
    ("whichsound.locate", "_fit", "fits (decompose + focus)", False),
    ("whichsound.attribute", "_stft_of_span", "  of which STFTs", True),
    ("whichsound.locate", "_edit_channels", "take channel the edit used", False),
]


def _timed(spent: dict, calls: collections.Counter, label: str, fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[label] += time.perf_counter() - t
            calls[label] += 1
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ws-bench-index"))
    ap.add_argument("--notes", type=int, default=30, help="Notes timed (the first N of the material's 100).")
    ap.add_argument("--target", type=float, default=20.0, help="Notes per second the budget is worked out for.")
    ap.add_argument("--fixed-notes", type=int, default=2, help="Notes of the child run that measures the fixed cost.")
    args = ap.parse_args()

    work = args.workdir
    if not (work / "truth.json").is_file():
        subprocess.run([sys.executable, str(HERE / "bench_index.py"), "--generate-only", "--workdir", str(work)],
                       check=True)
    lines = (work / "notes.csv").read_text().splitlines()
    notes = work / f"notes_first_{args.notes}.csv"
    notes.write_text("\n".join(lines[: args.notes + 1]) + "\n")
    few = work / f"notes_first_{args.fixed_notes}.csv"
    few.write_text("\n".join(lines[: args.fixed_notes + 1]) + "\n")
    roots = [str(work / "reel"), str(work / "production")]
    cache = work / "cache"
    cli = [sys.executable, "-m", "whichsound", "batch", "--mix", str(work / "printmaster.wav"), "--fps", "24",
           "--start-tc", "01:00:00:00", "--stems", roots[0], "--stems", roots[1], "--cache", str(cache), "--json"]

    # Index built and warm; then the fixed cost: a child run of a few notes, less their share of the work.
    subprocess.run([*cli, str(few)], check=True, stdout=subprocess.DEVNULL)
    t = time.perf_counter()
    subprocess.run([*cli, str(few)], check=True, stdout=subprocess.DEVNULL)
    few_s = time.perf_counter() - t

    import importlib

    import whichsound.locate as locate_mod
    from whichsound.batch import run_batch

    locate_mod.SEARCH_THREADS = 1  # as in batch's workers
    kw = dict(mix=str(work / "printmaster.wav"), fps="24", start_tc="01:00:00:00", jobs=1, index=str(cache))
    run_batch(notes, roots, **kw)  # warm: this process's imports, plans and envelope references
    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    missing = []
    for module, name, label, _ in STAGES:
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            missing.append(f"{module}.{name}")
            continue
        setattr(mod, name, _timed(spent, calls, label, getattr(mod, name)))
    cpu0, t0 = time.process_time(), time.perf_counter()
    report = run_batch(notes, roots, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = len(report.rows)
    per_note = 1000 * wall / n
    print(f"{n} notes in one process, one thread: {wall:.2f} s wall, {cpu:.2f} s CPU, {per_note:.0f} ms per note")
    covered = 0.0
    for _, _, label, nested in STAGES:
        if label in spent:
            print(f"  {label:40s} {1000 * spent[label] / n:7.1f} ms/note  ({calls[label]} calls)")
            covered += 0.0 if nested else spent[label]
    print(f"  {'other (planning, reads, verdicts ...)':40s} {1000 * (wall - covered) / n:7.1f} ms/note")
    for m in missing:
        print(f"  (no stage {m}: renamed?)")
    cores = os.cpu_count() or 1
    fixed = max(0.0, few_s - args.fixed_notes * per_note / 1000 / min(cores, args.fixed_notes))
    budget = 1000 * cores * (100 / args.target - fixed) / 100
    print(f"fixed cost of a run (process start, discovery, workers): about {fixed:.2f} s "
          f"({args.fixed_notes} notes took {few_s:.2f} s)")
    print(f"{args.target:g} notes/s over 100 notes on {cores} cores leaves {budget:.0f} ms of CPU per note; "
          f"measured {per_note:.0f} ({per_note / budget:.1f}x the budget)")


if __name__ == "__main__":
    main()
