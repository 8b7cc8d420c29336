"""Command line: parse, call the library, print, exit. No signal processing here.

Exit statuses: 0 a source was found, 1 the sound is in no stem, 2 usage or input error.
"""

from __future__ import annotations

import sys
from enum import IntEnum

import click

from whichsound import __version__


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
@click.version_option(__version__, "--version", message=_versions())
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """whichsound: is that sound from post or from the production recording?

    Aligns a questioned clip against the film's stems and production takes and says which stem the
    sound came from, where (seconds and timecode), and how sure it is.
    """
    ctx.meta["whichsound.debug"] = debug


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
@click.option("--band", default=None, metavar="LO-HI", help="Attribute only this band (Hz), e.g. 40-120.")
@click.option("--stream", type=int, default=None, help="Audio stream of a media container (0-based).")
@click.option("--start-tc", default=None, metavar="TC",
              help="Start timecode for stems that carry none (no bext TimeReference), e.g. 01:00:00:00.")
@click.option("--fps", default=None, metavar="RATE",
              help="Frame rate for stems that carry none (no iXML speed), e.g. 23.976, 25, 29.97DF.")
@click.pass_context
def locate(ctx, clip, roots, as_json, top, min_score, at, band, stream, start_tc, fps):
    """Find which stem CLIP comes from, where, and how sure that is."""
    from whichsound.locate import locate as run_locate
    from whichsound.report import dumps, locate_json, render_locate
    from whichsound.stems import apply_clock_defaults, discover

    found = apply_clock_defaults(discover(list(roots)), start_tc=start_tc, fps=fps)
    result = run_locate(clip, list(roots), at=at, band=_parse_band(band), min_score=min_score, stream=stream,
                        discovery=found)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
