"""User-facing error types: each becomes a one-line message and exit status 2 in the CLI."""

from __future__ import annotations

from pathlib import Path


class WhichsoundError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""


class InputError(WhichsoundError):
    """A missing or unusable argument, folder or file (not an audio decoding problem)."""


class AudioReadError(WhichsoundError):
    """An audio file that cannot be opened or decoded; carries the file's path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ClipError(WhichsoundError):
    """A questioned clip that cannot be searched (empty, silent, longer than every stem)."""


class TimecodeError(WhichsoundError):
    """A timecode or frame rate that cannot be parsed; `line` is the CSV line when known."""

    def __init__(self, text: str, problem: str, line: int | None = None):
        self.text = text
        self.problem = problem
        self.line = line
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}timecode {text!r}: {problem}")


class NotesError(WhichsoundError):
    """A notes CSV that cannot be read at all (a single bad row is reported, not raised)."""
