"""Stem discovery: every audio file under the --stems folders, its role, its timeline and its metadata.

Roles come from folder and file-name tokens (DX, FX, FOL, BG, MX, production folders and take-like names)
and can be overridden by a manifest file ``whichsound-roles.txt`` in a stems folder, one rule a line::

    # pattern (glob on the path relative to the folder) = role
    R1_*.wav = FX
    dialogue/** = DX
    ADR_*.wav = DX

Roles (JSON `role`): DX dialogue, PROD production take, FX effects, FOL foley, BG backgrounds, MX music,
OTHER. The first matching rule wins; rules beat the name heuristics.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from whichsound.audio import AUDIO_EXTENSIONS, probe
from whichsound.errors import AudioReadError, InputError, WhichsoundError

__all__ = ["MANIFEST_NAME", "ROLES", "ROLE_NAMES", "Discovery", "Stem", "discover", "infer_role", "origin_of",
           "speakers_of", "stereo_fold"]

ROLES = ("DX", "PROD", "FX", "FOL", "BG", "MX", "OTHER")
ROLE_NAMES = {
    "DX": "dialogue",
    "PROD": "production",
    "FX": "effects",
    "FOL": "foley",
    "BG": "backgrounds",
    "MX": "music",
    "OTHER": "other",
}
MANIFEST_NAME = "whichsound-roles.txt"

_TOKENS = {
    "DX": {"dx", "dia", "dial", "dialog", "dialogue", "dlg", "adr", "vo"},
    "PROD": {"prod", "production", "location", "loc", "dailies", "sound_rolls", "soundrolls", "rolls"},
    "FX": {"fx", "sfx", "effects", "efx", "hfx", "pfx"},
    "FOL": {"fol", "foley", "fs", "footsteps"},
    "BG": {"bg", "bgs", "amb", "ambience", "ambiences", "atmos", "backgrounds", "background"},
    "MX": {"mx", "mus", "music", "score", "songs", "song"},
}
_ROLE_ALIASES = {name: role for role, name in ROLE_NAMES.items()} | {r.lower(): r for r in ROLES}
_ROLE_ALIASES |= {"effects": "FX", "sfx": "FX", "take": "PROD", "takes": "PROD", "dialog": "DX"}
# "12A_T03", "sc12_tk3", "T004", "12-3" : recorder take names.
_TAKE_RE = re.compile(r"(^|[_\-\s])(t|tk|take)\d+($|[_\-\s])|^\d+[a-z]?[_\-]\d+$|^sc\d+", re.IGNORECASE)


#: WAVE_FORMAT_EXTENSIBLE speaker bits in order, as the short names used below.
_MASK_SPEAKERS = ("L", "R", "C", "LFE", "Lrs", "Rrs", "Lc", "Rc", "Cs", "Ls", "Rs", "Ts",
                  "Ltf", "Ctf", "Rtf", "Ltr", "Ctr", "Rtr")
#: Channel-name spellings (an iXML track name's last word, lower case) -> speaker.
_SPEAKER_NAMES = {
    "l": "L", "left": "L", "fl": "L", "lf": "L",
    "r": "R", "right": "R", "fr": "R", "rf": "R",
    "c": "C", "ctr": "C", "center": "C", "centre": "C", "fc": "C", "cntr": "C",
    "lfe": "LFE", "sub": "LFE", "lfe1": "LFE",
    "ls": "Ls", "lss": "Ls", "sl": "Ls", "lsd": "Ls",
    "rs": "Rs", "rss": "Rs", "sr": "Rs", "rsd": "Rs",
    "lsr": "Lrs", "lrs": "Lrs", "bl": "Lrs", "lb": "Lrs", "lbs": "Lrs",
    "rsr": "Rrs", "rrs": "Rrs", "br": "Rrs", "rb": "Rrs", "rbs": "Rrs",
    "lc": "Lc", "rc": "Rc", "cs": "Cs", "bc": "Cs", "s": "Cs",
}
#: The WAV standard's channel order when a file names none (SMPTE: L R C LFE, then the surrounds).
_DEFAULT_SPEAKERS = {1: ("C",), 2: ("L", "R"), 3: ("L", "R", "C"), 4: ("L", "R", "Lrs", "Rrs"),
                     5: ("L", "R", "C", "Lrs", "Rrs"), 6: ("L", "R", "C", "LFE", "Lrs", "Rrs"),
                     8: ("L", "R", "C", "LFE", "Lrs", "Rrs", "Ls", "Rs")}
_G = 0.5**0.5  # -3 dB
#: Each speaker's gains into a two-channel (Lo/Ro) fold, as ITU-R BS.775 folds 5.1: centre and surrounds
#: at -3 dB, the LFE left out; the centre-back and top centre channels at -6 dB into both sides.
_FOLD = {"L": (1.0, 0.0), "R": (0.0, 1.0), "C": (_G, _G), "LFE": (0.0, 0.0), "Ls": (_G, 0.0), "Rs": (0.0, _G),
         "Lrs": (_G, 0.0), "Rrs": (0.0, _G), "Lc": (1.0, 0.0), "Rc": (0.0, 1.0), "Cs": (0.5, 0.5),
         "Ts": (0.5, 0.5), "Ltf": (_G, 0.0), "Ctf": (0.5, 0.5), "Rtf": (0.0, _G), "Ltr": (_G, 0.0),
         "Ctr": (0.5, 0.5), "Rtr": (0.0, _G)}


def speakers_of(channels: int, names: tuple[str | None, ...] = (), mask: int | None = None) -> tuple[str, ...] | None:
    """The speaker each channel feeds (L, R, C, LFE, Ls, Rs, Lrs, Rrs ...): from the channel names (an
    iXML track name's last word: "FX Ls", "Left"), else the WAVE_FORMAT_EXTENSIBLE mask, else the WAV
    standard's order for the channel count (a mono file: a centre; names that are not speakers, a poly
    take's BOOM and LAV, say nothing). None when none of them says (7 channels, unnamed)."""
    words = [re.split(r"[\s_.\-]+", n.strip())[-1].lower() if n else "" for n in names]
    by_name = tuple(_SPEAKER_NAMES.get(w) for w in words)
    if len(by_name) == channels and all(by_name) and len(set(by_name)) == channels:
        return by_name  # type: ignore[return-value]
    if mask:
        bits = tuple(sp for b, sp in enumerate(_MASK_SPEAKERS) if mask >> b & 1)
        if len(bits) == channels:
            return bits
    return _DEFAULT_SPEAKERS.get(channels)


def stereo_fold(channels: int, names: tuple[str | None, ...] = (), mask: int | None = None):
    """(channels, 2) gains that fold a file's channels into a two-channel mix: a mono file as a phantom
    centre (-3 dB into each side), a stereo one as it is, a surround one as ITU-R BS.775 folds it (see
    _FOLD). A layout nothing gives (speakers_of is None) keeps each channel apart: the identity, as if
    each were its own channel of the mix."""
    import numpy as np

    speakers = speakers_of(channels, names, mask)
    if speakers is None:
        return np.eye(channels)
    return np.array([_FOLD[sp] for sp in speakers], dtype=np.float64)


def origin_of(role: str | None) -> str:
    """The verdict's origin for a role: production (takes, dialogue), post (FX/FOL/BG), music, or other."""
    if role in ("DX", "PROD"):
        return "production"
    if role in ("FX", "FOL", "BG"):
        return "post"
    if role == "MX":
        return "music"
    return "post" if role == "OTHER" else "none"


@dataclass(frozen=True)
class Stem:
    """One audio file to search: where it was found, its role and format, and its metadata clock."""

    path: Path
    root: str  # the --stems folder exactly as the user gave it
    rel: str  # path relative to root, with '/' separators
    role: str
    samplerate: int
    channels: int
    frames: int
    track_names: tuple[str | None, ...] = ()
    time_reference: int | None = None  # samples since midnight (bext)
    fps: Fraction | None = None
    drop_frame: bool | None = None
    scene: str | None = None
    take: str | None = None
    tape: str | None = None
    channel_mask: int | None = None  # WAVE_FORMAT_EXTENSIBLE speaker bits, when the file gives them

    @property
    def duration_s(self) -> float:
        return self.frames / self.samplerate

    @property
    def origin(self) -> str:
        return origin_of(self.role)

    @property
    def speakers(self) -> tuple[str, ...] | None:
        """The speaker each channel feeds, from its names, mask or count (see speakers_of())."""
        return speakers_of(self.channels, self.track_names, self.channel_mask)

    def stereo_fold(self):
        """(channels, 2) gains that fold this file into a two-channel mix (see stereo_fold())."""
        return stereo_fold(self.channels, self.track_names, self.channel_mask)

    def track_name(self, channel: int) -> str | None:
        """The recorder's or editor's name for a channel (0-based), when the file carries one."""
        return self.track_names[channel] if channel < len(self.track_names) else None

    def timeline_key(self) -> tuple:
        """Files with the same key were printed on one timeline and share one offset to a clip.

        Production takes are each their own timeline; other stems share one per folder, rate and length
        (to the frame at 24 fps). Different bext start times split it further (see group_timelines).
        """
        if self.role == "PROD":
            return ("take", str(self.path))
        return (self.root, self.samplerate, round(self.frames / (self.samplerate / 24)))


@dataclass
class Discovery:
    """What discover() found: searchable stems and one warning per file it had to skip."""

    stems: list[Stem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _tokens(text: str) -> set[str]:
    """Lower-case name tokens, each also without trailing digits (FX1, DX2 and BG3 are split stems)."""
    toks = {t for t in re.split(r"[^a-z0-9]+", text.lower()) if t}
    return toks | {t.rstrip("0123456789") for t in toks if t[-1].isdigit() and t[0].isalpha()}


def infer_role(rel_path: str, root: str = "") -> str:
    """Role of a file from its name tokens first, then its folders' (nearest first), then the root's."""
    parts = Path(rel_path).parts
    name = Path(rel_path).stem
    candidates = [name, *reversed(parts[:-1]), Path(root).name]
    in_production = False
    for i, part in enumerate(candidates):
        toks = _tokens(part)
        for role in ("DX", "FOL", "BG", "MX", "FX", "PROD"):
            if toks & _TOKENS[role]:
                if role == "PROD" and i == 0:
                    return "PROD"
                if role == "PROD":
                    in_production = True
                    break
                return role
        if in_production:
            break
    return "PROD" if in_production else "OTHER"


def _read_manifest(root: Path) -> list[tuple[str, str]]:
    """Rules (glob, role) from the folder's manifest; a bad line raises InputError naming it."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return []
    rules = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise InputError(f"{path}: line {n}: expected 'pattern = role', got {line!r}")
        pattern, role = (s.strip() for s in line.rsplit("=", 1))
        canon = _ROLE_ALIASES.get(role.lower())
        if canon is None:
            raise InputError(f"{path}: line {n}: unknown role {role!r} (use one of {', '.join(ROLES)})")
        rules.append((pattern, canon))
    return rules


def _manifest_role(rules: list[tuple[str, str]], rel: str) -> str | None:
    for pattern, role in rules:
        if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(Path(rel).name, pattern):
            return role
    return None


def discover(roots: list[str], *, read_metadata: bool = True) -> Discovery:
    """Find every audio file under each root (recursively, sorted), with role, format and BWF/iXML metadata.

    A missing root or one without audio raises InputError; an unreadable file becomes a warning.
    """
    found = Discovery()
    seen: set[Path] = set()
    for root in roots:
        base = Path(root)
        if not base.exists():
            raise InputError(f"{root}: stems folder not found")
        if not base.is_dir():
            raise InputError(f"{root}: not a folder (give --stems a folder of stems)")
        rules = _read_manifest(base)
        files = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith(".") or Path(fn).suffix.lower() not in AUDIO_EXTENSIONS:
                    continue
                files.append(Path(dirpath) / fn)
        if not files:
            raise InputError(f"{root}: no audio files in this folder")
        for path in files:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            rel = path.relative_to(base).as_posix()
            try:
                found.stems.append(_make_stem(path, root, rel, rules, read_metadata))
            except WhichsoundError as exc:
                found.warnings.append(str(exc))
    return found


def _make_stem(path: Path, root: str, rel: str, rules, read_metadata: bool) -> Stem:
    info = probe(path)
    role = _manifest_role(rules, rel) or infer_role(rel, root)
    meta = None
    if read_metadata and path.suffix.lower() in {".wav", ".wave", ".bwf", ".rf64"}:
        try:
            from whichsound.bwf import read_bwf_info

            meta = read_bwf_info(path)
        except AudioReadError:
            raise
        except Exception:  # metadata is a bonus: never lose a stem over it
            meta = None
    names: tuple[str | None, ...] = ()
    kwargs = {}
    if meta is not None:
        names = tuple(meta.track_names)[: info.channels]
        kwargs = {
            "time_reference": meta.time_reference,
            "fps": meta.fps,
            "drop_frame": meta.drop_frame,
            "scene": meta.scene,
            "take": meta.take,
            "tape": meta.tape,
            "channel_mask": meta.channel_mask,
        }
        if role == "OTHER" and (meta.scene or meta.take) and _TAKE_RE.search(path.stem):
            role = "PROD"
    return Stem(path, root, rel, role, info.samplerate, info.channels, info.frames, names, **kwargs)


def apply_clock_defaults(found: Discovery, *, start_tc: str | None = None, fps: str | None = None) -> Discovery:
    """Give files that carry no clock of their own a start timecode and frame rate (--start-tc, --fps).

    A file's own bext TimeReference and iXML rate always win; `fps` (e.g. "23.976", "29.97 DF") also sets
    the rate `start_tc` is read at. Raises TimecodeError for an unreadable rate or timecode.
    """
    from dataclasses import replace

    from whichsound.timecode import parse_frame_rate, timecode_to_samples

    if start_tc is None and fps is None:
        return found
    rate = parse_frame_rate(fps) if fps is not None else None
    stems = []
    for stem in found.stems:
        own_rate = rate
        if stem.fps is not None:
            from whichsound.timecode import FrameRate

            own_rate = FrameRate(stem.fps.numerator, stem.fps.denominator, bool(stem.drop_frame))
        changes = {}
        if stem.fps is None and rate is not None:
            changes.update(fps=rate.fps, drop_frame=rate.drop_frame)
        if stem.time_reference is None and start_tc is not None:
            if own_rate is None:
                from whichsound.errors import TimecodeError

                raise TimecodeError(start_tc, "needs a frame rate: give --fps")
            changes["time_reference"] = timecode_to_samples(start_tc, own_rate, stem.samplerate)
        stems.append(replace(stem, **changes) if changes else stem)
    return Discovery(stems, list(found.warnings))


def group_timelines(stems: list[Stem]) -> dict[tuple, list[int]]:
    """Indices of the stems printed on one timeline, by group: same timeline_key() and the same start.

    A file without a start of its own (a FLAC, a WAV without bext) joins the folder's most common start:
    a missing start is not a different one. Two known starts that differ are two timelines.
    """
    from collections import Counter

    by_key: dict[tuple, list[int]] = {}
    for i, stem in enumerate(stems):
        by_key.setdefault(stem.timeline_key(), []).append(i)
    out: dict[tuple, list[int]] = {}
    for key, members in by_key.items():
        starts = Counter(stems[i].time_reference for i in members if stems[i].time_reference is not None)
        if len(starts) <= 1:
            out[key] = members
            continue
        common = starts.most_common(1)[0][0]
        for i in members:
            tr = stems[i].time_reference
            out.setdefault((*key, common if tr is None else tr), []).append(i)
    return out


def share_clocks(stems: list[Stem], groups: dict[tuple, list[int]]) -> list[Stem]:
    """Stems without a clock of their own take their timeline's (start and rate of its other files).

    A FLAC effects stem printed with a bext-stamped dialogue WAV runs on the same clock, so its positions
    can be given in the same timecode. Files with their own start or rate keep it.
    """
    from dataclasses import replace

    out = list(stems)
    for members in groups.values():
        clocked = [stems[i] for i in members if stems[i].time_reference is not None and stems[i].fps is not None]
        if not clocked:
            continue
        ref = clocked[0]
        for i in members:
            st = stems[i]
            if st.role == "PROD" or (st.time_reference is not None and st.fps is not None):
                continue
            out[i] = replace(
                st,
                time_reference=st.time_reference if st.time_reference is not None else ref.time_reference,
                fps=st.fps if st.fps is not None else ref.fps,
                drop_frame=st.drop_frame if st.fps is not None else ref.drop_frame,
            )
    return out
