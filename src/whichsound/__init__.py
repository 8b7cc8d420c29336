"""whichsound: find which film stem a questioned sound came from, where, and how sure that is.

The public API is imported lazily so that `whichsound --help` starts without loading numpy or scipy.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "AudioReadError",
    "ClipError",
    "InputError",
    "LocateResult",
    "Match",
    "TimecodeError",
    "Verdict",
    "WhichsoundError",
    "__version__",
    "discover",
    "locate",
]

_LAZY = {
    "locate": "whichsound.locate",
    "LocateResult": "whichsound.locate",
    "Match": "whichsound.attribute",
    "Verdict": "whichsound.attribute",
    "discover": "whichsound.stems",
    "WhichsoundError": "whichsound.errors",
    "InputError": "whichsound.errors",
    "AudioReadError": "whichsound.errors",
    "ClipError": "whichsound.errors",
    "TimecodeError": "whichsound.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'whichsound' has no attribute {name!r}")
