"""Command line: parse, call the library, print, exit. No signal processing here.

Exit statuses: 0 a source was found, 1 the sound is in no stem, 2 usage or input error.
"""

from __future__ import annotations

import os
import sys
from enum import IntEnum

import click

from whichsound import __version__

# Set before numpy loads: the matrix products here are small (a few stem channels by a band's frames),
# and BLAS threads only spin on them, taking the cores the FFTs and the other batch worker need
# (feature-length bench, 20 notes: 8.2 s and 15.5 CPU-s with them, 4.5 s and 8.1 CPU-s without).
# A value the user set is kept.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


class Exit(IntEnum):
    FOUND = 0
    NONE = 1
    ERROR = 2


def _versions() -> str:
    import importlib.metadata as md

    parts = [f"whichsound {__version__}"]
    for pkg in ("numpy", "scipy", "soundfile", "soxr", "librosa"):
        try:
            parts.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    # Not click.version_option: its message is built at import, and reading five packages' metadata
    # there cost every run 45 ms.
    if value and not ctx.resilient_parsing:
        click.echo(_versions())
        ctx.exit()


class _Group(click.Group):
    """Turns WhichsoundError into a one-line message and exit 2; tracebacks only with --debug."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            from whichsound.errors import WhichsoundError

            debug = bool(ctx.meta.get("whichsound.debug"))
            if isinstance(exc, WhichsoundError) and not debug:
                click.echo(f"whichsound: error: {exc}", err=True)
                ctx.exit(Exit.ERROR)
            if debug:
                raise
            click.echo(f"whichsound: internal error: {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
            ctx.exit(Exit.ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version of whichsound and of the libraries it runs on, and exit.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """whichsound: is that sound from post or from the production recording?

    Aligns a questioned clip against the film's stems and production takes and says which stem the
    sound came from, where (seconds and timecode), and how sure it is.
    """
    ctx.meta["whichsound.debug"] = debug
    from whichsound.memory import keep_freed_memory

    keep_freed_memory()


def _parse_band(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.lower().replace("hz", "").split("-", 1))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected LO-HI in Hz, e.g. 2000-8000") from None
    if not 0 <= lo < hi:
        raise click.BadParameter(f"{value!r}: need 0 <= LO < HI")
    return lo, hi


@main.command()
@click.argument("clip", type=click.Path(dir_okay=False, path_type=str))
@click.option("--stems", "roots", multiple=True, required=True, metavar="DIR",
              help="Folder of stems or production takes (searched recursively); repeat for more.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON result on stdout.")
@click.option("--top", default=10, show_default=True, help="Rows in the matches table.")
@click.option("--min-score", type=float, default=None,
              help="Lowest NCC (0-1) a match may have; default: significance over the search only.")
@click.option("--at", "at", type=float, default=None, metavar="SECONDS",
              help="Attribute only the sound around this instant of the clip (seconds).")
@click.option("--at-width", "at_width", type=click.FloatRange(min=0.0), default=0.01, show_default=True,
              metavar="SECONDS", help="How far either side of --at counts (widen it when the instant is rough).")
@click.option("--band", default=None, metavar="LO-HI", help="Attribute only this band (Hz), e.g. 40-120.")
@click.option("--stream", type=int, default=None, help="Audio stream of a media container (0-based).")
@click.option("--start-tc", default=None, metavar="TC",
              help="Start timecode for stems that carry none (no bext TimeReference), e.g. 01:00:00:00.")
@click.option("--fps", default=None, metavar="RATE",
              help="Frame rate for stems that carry none (no iXML speed), e.g. 23.976, 25, 29.97DF.")
@click.option("--cache", "cache_dir", default=None, metavar="DIR",
              help="Analysis index folder (default: the per-user cache, or $WHICHSOUND_CACHE).")
@click.option("--no-index", is_flag=True, help="Scan the stem files at full rate; neither read nor build the index.")
@click.pass_context
def locate(ctx, clip, roots, as_json, top, min_score, at, at_width, band, stream, start_tc, fps, cache_dir,
           no_index):
    """Find which stem CLIP comes from, where, and how sure that is.

    The coarse search reads the analysis index (see `whichsound index`): stems not in it yet are indexed
    first, which takes a while once per file; candidates are then refined at full rate.
    """
    import os

    from whichsound.locate import locate as run_locate
    from whichsound.report import dumps, locate_json, render_locate
    from whichsound.stems import apply_clock_defaults, discover

    found = apply_clock_defaults(discover(list(roots)), start_tc=start_tc, fps=fps)
    result = run_locate(clip, list(roots), at=at, focus_s=at_width, band=_parse_band(band), min_score=min_score,
                        stream=stream,
                        discovery=found, index=None if no_index else (cache_dir or "auto"),
                        build_jobs=os.cpu_count() or 1)
    if as_json:
        click.echo(dumps(locate_json(result)))
    else:
        from rich.console import Console

        render_locate(result, Console(), top=top)
    ctx.exit(Exit.FOUND if result.found else Exit.NONE)


@main.command()
@click.argument("dirs", nargs=-1, required=True, metavar="DIR...")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON listing on stdout.")
def scan(dirs, as_json):
    """List what whichsound sees in the folders DIR... (searched recursively).

    Each audio file's role, format, rate, channels, length, start timecode (bext TimeReference at the
    iXML rate) and fps, scene/take/roll and track names; and every file it cannot read.
    """
    from whichsound.report import dumps, render_scan, scan_json
    from whichsound.stems import discover

    found = discover(list(dirs))
    doc = scan_json(found, dirs)
    if as_json:
        click.echo(dumps(doc))
    else:
        from rich.console import Console

        render_scan(doc, Console())


#: `batch` exit status when any notes row could not be answered (the others were, and the report written).
BATCH_ROWS_FAILED = 3


@main.command()
@click.argument("notes", type=click.Path(dir_okay=False, path_type=str))
@click.option("--mix", default=None, metavar="WAV",
              help="The mix the notes' timecodes refer to (printmaster or review copy).")
@click.option("--stems", "roots", multiple=True, required=True, metavar="DIR",
              help="Folder of stems or production takes (searched recursively); repeat for more.")
@click.option("--fps", default=None, metavar="RATE", help="Timecode rate of the notes (default: the mix's iXML).")
@click.option("--start-tc", default=None, metavar="TC",
              help="Timecode of the mix's first sample (default: its bext TimeReference).")
@click.option("--out", default=None, metavar="FILE", help="Write the report to FILE (.json or .csv).")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Notes run in parallel (default: all cores).")
@click.option("--window", "window_s", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              metavar="SECONDS", help="Search the timeline stems this far either side of each note's timecode.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON report on stdout.")
@click.option("--cache", "cache_dir", default=None, metavar="DIR",
              help="Analysis index folder (default: the per-user cache, or $WHICHSOUND_CACHE).")
@click.option("--no-index", is_flag=True, help="Scan the stem files at full rate; neither read nor build the index.")
@click.pass_context
def batch(ctx, notes, mix, roots, fps, start_tc, out, jobs, window_s, as_json, cache_dir, no_index):
    """Answer every review note of the CSV NOTES (timecodes of the mix) in one run.

    Each note's window [tc_in, tc_out) is cut from the mix and located in the stems near its timecode; a
    note with only an in point gets 2 s. Exit 0 when every row was answered, 3 when any row failed
    (its error names the line), 2 when the run could not start.
    """
    from pathlib import Path

    from rich.console import Console

    from whichsound.batch import run_batch
    from whichsound.report import batch_csv, batch_json, dumps, render_batch, write_atomic

    kind = None
    if out is not None:
        kind = Path(out).suffix.lower()
        if kind in (".html", ".htm"):
            raise click.UsageError("HTML reports are not available yet; use .json or .csv")
        if kind not in (".json", ".csv"):
            raise click.UsageError(f"--out {out}: unknown report type {kind or '(no extension)'!r}; use .json or .csv")
        if not Path(out).resolve().parent.is_dir():
            raise click.UsageError(f"--out {out}: the folder {Path(out).resolve().parent} does not exist")
    err = Console(stderr=True)
    args = {"mix": mix, "fps": fps, "start_tc": start_tc, "window_s": window_s, "jobs": jobs,
            "index": None if no_index else (cache_dir or "auto")}
    if err.is_terminal:
        from rich import progress as rp

        with rp.Progress(rp.TextColumn("notes"), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TimeElapsedColumn(),
                         console=err, transient=True) as bar:
            task = bar.add_task("notes", total=None)
            report = run_batch(notes, list(roots), **args,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    else:
        report = run_batch(notes, list(roots), **args)
    if kind == ".json":
        write_atomic(out, dumps(batch_json(report)) + "\n")
    elif kind == ".csv":
        write_atomic(out, batch_csv(report))
    if as_json:
        click.echo(dumps(batch_json(report)))
    else:
        import os

        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=200)  # a log or a pipe: one line per note
        render_batch(report, console)
    ctx.exit(BATCH_ROWS_FAILED if report.failed else Exit.FOUND)


@main.command("index")
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=str))
@click.option("--cache", "cache_dir", default=None, metavar="DIR",
              help="Cache folder (default: the per-user cache, e.g. ~/.cache/whichsound).")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Files built in parallel (default: all cores).")
@click.option("--rebuild", is_flag=True, help="Rebuild every entry, even valid ones.")
@click.option("--prune", "do_prune", is_flag=True, help="Also drop entries of files that are gone.")
@click.pass_context
def index_cmd(ctx, folders, cache_dir, jobs, rebuild, do_prune):
    """Build or refresh the analysis index of the stems and takes under FOLDERS.

    Each file's channels are stored decimated beside a SQLite catalog; entries of files that changed are
    rebuilt, valid ones kept. locate and batch read it (and add files it lacks on their first search).
    """
    import os

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from whichsound.index import Index
    from whichsound.locate import prepare_references
    from whichsound.stems import discover

    found = discover(list(folders))
    err = Console(stderr=True)
    for w in found.warnings:
        err.print(f"[yellow]warning:[/] {w}")
    paths = [s.path for s in found.stems]
    failed: list[str] = []
    with Index(cache_dir) as idx:
        with Progress(TextColumn("indexing"), BarColumn(), TextColumn("{task.completed}/{task.total} files"),
                      TimeRemainingColumn(), console=err, transient=True) as bar:
            task = bar.add_task("index", total=len(paths))

            def progress(done, total, path, result):
                bar.update(task, completed=done)
                if not hasattr(result, "array_path"):
                    failed.append(str(result))

            results = idx.build_many(paths, jobs=jobs or os.cpu_count() or 1, progress=progress, force=rebuild)
        pruned = idx.prune() if do_prune else None
        prepare_references(idx, found.stems, results)  # the pre-search's timeline envelopes, made once
        where = idx.dir
    for f in failed:
        err.print(f"[yellow]warning:[/] {f}")
    click.echo(f"indexed {len(paths) - len(failed)} of {len(paths)} files in {where}"
               + (f"; pruned {pruned.entries} stale entries" if pruned else ""))
    ctx.exit(Exit.FOUND if not failed else Exit.ERROR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
