#!/usr/bin/env python3
"""Build the small film-scene fixture in ``fixtures/scene`` from real recordings, deterministically.

Usage (from the repository root)::

    python scripts/make_fixture.py --sources ../shared/sounds --out fixtures/scene

The sources folder is the project's shared sound set (``manifest.csv``, ``LICENSES.md`` and FLAC
files).  Only recordings whose licences allow redistribution of derived audio are used (public
domain, CC0, CC-BY-SA-3.0); ``LICENSES.md`` in the output lists each one with its source package,
licence and attribution.  Everything random comes from numpy generators seeded with ``--seed``,
resampling is soxr, files are written by soundfile and :func:`whichsound.bwf.write_bwf`, so the same
sources and seed give the same files.

Scene "12A", reel 1, 48 kHz, timeline 01:00:00:00 at 24 fps NDF:

* ``production/12A_T01.wav``, ``12A_T02.wav``: 2-channel poly BWF takes (ch1 BOOM: speech through a
  synthetic small-room reverb, 5 ms later than the lav, plus room tone and hum; ch2 LAV: the same
  speech drier and brighter, less room).  Take 2 has a crew cough after its line.
* ``stems/R1_DX.wav`` (mono BWF): the dialogue edit, regions of the takes' channels with equal-power
  crossfades, gaps filled with the takes' own room tone (their pre-roll, looped).
* ``stems/R1_FX.flac``, ``R1_BG.flac``, ``R1_MX.flac``: stereo effects (panned), a rain bed with a
  distant dog, a music cue under the dialogue and a sting.
* ``printmaster.wav``: the stems summed, DX centred at -3 dB per side.
* ``clips/``: questioned clips (one per origin, a 'none' clip, a 44.1 kHz one and an MP3), with
  their valid answers in ``truth.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from whichsound.bwf import write_bwf

SR = 48000
FPS = Fraction(24)
DEFAULT_SEED = 12
REPO = Path(__file__).resolve().parents[1]
TIMELINE_S = 12.0
TIMELINE_TC = "01:00:00:00"
TIMELINE_REF = 3600 * SR
TAKE_S = 6.0
BOOM_DELAY = 240  # samples (5 ms): the boom is about 1.7 m further from the mouth than the lav
XFADE = 480  # 10 ms equal-power crossfades in the dialogue edit
DX_PAN = 10 ** (-3 / 20)  # DX is centred at -3 dB per side in the printmaster
MIN_CLIP_S = 0.5

#: Recordings used, by role in the scene -> path in the sound set's manifest.
SOURCES = {
    "line_a": "speech/en_librivox_reader_pocketsphinx/sense_and_sensibility_01_austen_64kb-0880.flac",
    "line_b": "speech/en_librivox_reader_pocketsphinx/sense_and_sensibility_01_austen_64kb-0930.flac",
    "cough": "sfx/scratch__Human__Cough-male.flac",
    "door": "sfx/flare__door_open.flac",
    "glass_door": "sfx/minetest__doors__sounds__doors_glass_door_close.flac",
    "step1": "sfx/flare__steps__step_leather1.flac",
    "step2": "sfx/flare__steps__step_leather2.flac",
    "step3": "sfx/flare__steps__step_leather3.flac",
    "rain": "amb/ardentryst__Rain_Loop.flac",
    "dog1": "sfx/scratch__Animal__Dog1.flac",
    "dog2": "sfx/scratch__Animal__Dog2.flac",
    "cue": "music/asterisk_moh__macroform-the_simplicity.flac",
    "sting": "music/asterisk_moh__macroform-cold_day.flac",
    "sneeze": "sfx/scratch__Human__Sneeze-male.flac",
}

#: Per-file licence where the package licence is mixed (manifest says "partly CC0").
LICENCE_OVERRIDES = {
    "sfx/minetest__doors__sounds__doors_glass_door_close.flac": (
        "CC0-1.0 (minetest-data copyright: doors_glass_door_open/close are CC0-1.0)"
    ),
}

TAKES = [
    # file, take, tape, start timecode (24 fps NDF), line, line start in the take (s)
    {"file": "12A_T01.wav", "take": "1", "tape": "DAY03", "tc": "14:22:31:00",
     "line": "line_a", "line_at_s": 1.10},
    {"file": "12A_T02.wav", "take": "2", "tape": "DAY03", "tc": "14:25:07:12",
     "line": "line_b", "line_at_s": 0.90, "noise": "cough", "noise_at_s": 4.45},
]

#: The dialogue edit: (timeline start s, timeline end s, take index, channel, take start s, gain dB).
DX_REGIONS = [
    (0.80, 4.30, 0, 0, 0.90, 1.5),  # take 1 BOOM, line A
    (5.00, 10.00, 1, 1, 0.70, 1.0),  # take 2 LAV, line B and the cough after it
]
#: Room-tone fills: (timeline start s, timeline end s, take index, channel).
DX_FILLS = [
    (0.00, 0.80, 0, 0),
    (4.30, 5.00, 0, 0),
    (10.00, TIMELINE_S, 1, 1),
]
PRE_ROLL_S = (0.03, 0.82)  # speech-free part of each take (the lines start at 0.9 s or later)


# --------------------------------------------------------------------------------------------
# small DSP helpers


def _db(x: float) -> float:
    return 10 ** (x / 20)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _active_rms(x: np.ndarray, *, floor_db: float = -30.0) -> float:
    """RMS over the 10-ms blocks within `floor_db` of the loudest block (speech level without pauses)."""
    mono = x if x.ndim == 1 else x.mean(axis=1)
    n = len(mono) // 480
    blocks = np.sqrt(np.mean(mono[: n * 480].reshape(n, 480) ** 2, axis=1))
    keep = blocks > blocks.max() * _db(floor_db)
    return float(np.sqrt(np.mean(blocks[keep] ** 2)))


def _fftconv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution of 1-D `x` and `h`, truncated to len(x) + len(h) - 1."""
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:n]


def _fft_filter(x: np.ndarray, gain_of_hz) -> np.ndarray:
    """Zero-phase filter of 1-D `x` with the real gain curve `gain_of_hz(f)`."""
    size = 1 << (len(x) + 4096 - 1).bit_length()
    f = np.fft.rfftfreq(size, 1 / SR)
    y = np.fft.irfft(np.fft.rfft(x, size) * gain_of_hz(f), size)
    return y[: len(x)]


def _room_ir(rng: np.random.Generator, *, rt60: float, wet: float, length_s: float = 0.6) -> np.ndarray:
    """A small-room impulse response: unit direct sound, a few early reflections, a noise tail.

    `wet` is the energy of everything after the direct sound relative to it.
    """
    n = int(length_s * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
    tail[: int(0.004 * SR)] = 0.0
    onset = np.clip((t - 0.004) / 0.012, 0.0, 1.0)
    tail *= onset
    tail = _fft_filter(tail, lambda f: 1 / np.sqrt(1 + (f / 5000) ** 2))  # walls absorb the highs
    for delay_ms, g in ((3.1, 0.45), (5.7, 0.33), (8.9, 0.25), (12.6, 0.2)):
        tail[int(delay_ms * SR / 1000)] += g * rng.choice([-1.0, 1.0])
    tail *= math.sqrt(wet / float(np.sum(tail**2)))
    ir = tail
    ir[0] = 1.0
    return ir


def _room_tone(rng: np.random.Generator, n: int, *, level_db: float, hum_db: float) -> np.ndarray:
    """Pink-ish air noise (HVAC-like, rolled off below 40 Hz and above 8 kHz) plus 50 Hz hum."""
    white = rng.standard_normal(n + 8192)

    def shape(f: np.ndarray) -> np.ndarray:
        ff = np.maximum(f, 1.0)
        return (1 / np.sqrt(ff)) / np.sqrt(1 + (40 / ff) ** 4) / np.sqrt(1 + (ff / 8000) ** 2)

    noise = _fft_filter(white, shape)[4096: 4096 + n]
    noise *= _db(level_db) / _rms(noise)
    t = np.arange(n) / SR
    phase = rng.uniform(0, 2 * np.pi, 3)
    hum = sum(a * np.sin(2 * np.pi * 50 * k * t + p) for k, a, p in zip((1, 2, 3), (1.0, 0.5, 0.3), phase, strict=True))
    hum *= _db(hum_db) / _rms(hum)
    return noise + hum


def _brighter(x: np.ndarray) -> np.ndarray:
    """Lav colour: a high shelf (+4 dB above about 4 kHz) and less low end (chest mic)."""
    return _fft_filter(x, lambda f: (1 + 0.6 * f**2 / (f**2 + 4000**2)) / np.sqrt(1 + (150 / np.maximum(f, 1)) ** 2))


def _fade(x: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    y = x.copy()
    if fade_in:
        ramp = np.sin(np.linspace(0, np.pi / 2, fade_in)) ** 2
        y[:fade_in] *= ramp if y.ndim == 1 else ramp[:, None]
    if fade_out:
        ramp = np.cos(np.linspace(0, np.pi / 2, fade_out)) ** 2
        y[-fade_out:] *= ramp if y.ndim == 1 else ramp[:, None]
    return y


def _pan(x: np.ndarray, pos: float) -> np.ndarray:
    """Constant-power pan of mono `x`: pos -1 (left) .. +1 (right)."""
    a = (pos + 1) * np.pi / 4
    return np.stack([x * math.cos(a), x * math.sin(a)], axis=1)


def _envelope_db(x: np.ndarray) -> np.ndarray:
    """10-ms RMS envelope (dB), one value per sample (centred moving average of the power)."""
    mono = x if x.ndim == 1 else np.mean(x**2, axis=1)
    power = mono**2 if x.ndim == 1 else mono
    kernel = np.ones(480) / 480
    return 10 * np.log10(np.convolve(power, kernel, mode="same") + 1e-20)


def _event_window(x: np.ndarray, *, range_db: float = 20.0) -> tuple[int, int]:
    """[first, last) sample where the planted sound is within `range_db` of its peak (10-ms envelope)."""
    env = _envelope_db(x)
    idx = np.flatnonzero(env >= env.max() - range_db)
    return int(idx[0]), int(idx[-1]) + 1


# --------------------------------------------------------------------------------------------
# sources


class Sources:
    """The sound set: manifest rows, licences per package, and decoded recordings at 48 kHz."""

    def __init__(self, root: Path):
        self.root = root
        with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
            self.rows = {row["path"]: row for row in csv.DictReader(fh)}
        self.packages = _parse_licences((root / "LICENSES.md").read_text(encoding="utf-8"))
        self._cache: dict[str, np.ndarray] = {}

    def row(self, key: str) -> dict:
        path = SOURCES[key]
        if path not in self.rows:
            raise SystemExit(f"{self.root}: {path} is not in manifest.csv")
        return self.rows[path]

    def load(self, key: str, *, start_s: float = 0.0, stop_s: float | None = None) -> np.ndarray:
        """The recording (mono (n,) or stereo (n, 2)) resampled to 48 kHz, float64."""
        path = SOURCES[key]
        if path not in self._cache:
            data, sr = sf.read(self.root / path, dtype="float64", always_2d=True)
            if sr != SR:
                data = soxr.resample(data, sr, SR, quality="VHQ")
            self._cache[path] = data[:, 0] if data.shape[1] == 1 else data
        x = self._cache[path]
        a = int(round(start_s * SR))
        b = len(x) if stop_s is None else int(round(stop_s * SR))
        return x[a:b].copy()

    def describe(self, key: str) -> dict:
        row = self.row(key)
        return {
            "path": row["path"],
            "name": row["speaker_or_name"],
            "category": row["category"],
            "package": row["source_package"],
            "package_version": row["package_version"],
            "source_file": row["source_file"],
            "licence": LICENCE_OVERRIDES.get(row["path"], row["license"]),
        }


def _parse_licences(text: str) -> dict[str, dict[str, str]]:
    """`## package version` sections of the sound set's LICENSES.md -> {package: {version, licence, copyright}}."""
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        name, _, version = head.strip().rpartition(" ")
        fields = dict(re.findall(r"^- (\w+): (.*)$", body, flags=re.M))
        out[name] = {"version": version, "licence": fields.get("licence", ""),
                     "copyright": fields.get("copyright", "")}
    return out


# --------------------------------------------------------------------------------------------
# the scene


def _tc_to_samples(tc: str) -> int:
    """HH:MM:SS:FF at 24 fps NDF -> samples since midnight at 48 kHz."""
    h, m, s, f = (int(v) for v in tc.split(":"))
    frames = ((h * 60 + m) * 60 + s) * 24 + f
    return frames * SR // 24


def _rng(seed: int, name: str) -> np.random.Generator:
    """An independent generator per purpose, so changing one element does not move the others."""
    return np.random.default_rng([seed, *name.encode()])


def build_takes(src: Sources, seed: int) -> list[dict]:
    """The production takes: (n, 2) BOOM/LAV arrays plus where their line and noise sit."""
    n = int(TAKE_S * SR)
    takes = []
    for i, spec in enumerate(TAKES):
        rng = _rng(seed, f"take{i}")
        speech = src.load(spec["line"])
        speech = _fade(speech, int(0.15 * SR), int(0.15 * SR))  # soften the recording's own noise floor
        speech *= _db(-24.0) / _active_rms(speech)
        at = int(round(spec["line_at_s"] * SR))
        boom_ir = _room_ir(rng, rt60=0.32, wet=0.45)
        lav_ir = _room_ir(rng, rt60=0.25, wet=0.06)
        # the boom hears everything BOOM_DELAY samples after the lav
        boom = _pad(_fftconv(speech, boom_ir) * _db(-2.0), at + BOOM_DELAY, n)
        lav = _pad(_brighter(_fftconv(speech, lav_ir)), at, n)
        noise_info = None
        if "noise" in spec:
            noise = src.load(spec["noise"])
            noise *= _db(-11.0) / np.max(np.abs(noise))  # peak before the room
            boom_noise = _pad(_fftconv(noise, _room_ir(rng, rt60=0.35, wet=0.9)),
                              int(round(spec["noise_at_s"] * SR)) + BOOM_DELAY, n)
            lav_noise = _pad(_brighter(_fftconv(noise, lav_ir)) * _db(-6.0),
                             int(round(spec["noise_at_s"] * SR)), n)
            boom += boom_noise
            lav += lav_noise
            noise_info = {"source": spec["noise"], "lav_at_s": spec["noise_at_s"],
                          "boom_at_s": spec["noise_at_s"] + BOOM_DELAY / SR,
                          "boom_only": boom_noise, "lav_only": lav_noise}
        boom += _room_tone(rng, n, level_db=-54.0, hum_db=-66.0)
        lav += _room_tone(rng, n, level_db=-60.0, hum_db=-78.0)
        audio = np.stack([boom, lav], axis=1)
        takes.append({"spec": spec, "audio": audio, "line_len_s": len(speech) / SR, "noise": noise_info})
    return takes


def _pad(x: np.ndarray, at: int, n: int) -> np.ndarray:
    out = np.zeros(n)
    seg = min(len(x), n - at)
    out[at: at + seg] = x[:seg]
    return out


def _render_segment(dst: np.ndarray, t0: int, t1: int, source: np.ndarray, s0: int, gain: float) -> None:
    """Add `source[s0 + k]` at timeline `t0 + k` over [t0, t1), with equal-power crossfades XFADE long
    centred on t0 and t1 (none at the timeline's ends)."""
    h = XFADE // 2
    a = max(t0 - h, 0)
    b = min(t1 + h, len(dst))
    seg = source[s0 + (a - t0): s0 + (b - t0)].astype(np.float64) * gain
    w = np.ones(b - a)
    if t0 > 0:
        k = np.arange(XFADE) + 0.5
        w[: XFADE] = np.sin(np.pi / 2 * k / XFADE)
    if t1 < len(dst):
        k = np.arange(XFADE) + 0.5
        w[-XFADE:] = np.cos(np.pi / 2 * k / XFADE)
    dst[a:b] += seg * w


def build_dx(takes: list[dict], seed: int) -> tuple[np.ndarray, list[dict]]:
    """The dialogue edit (mono) and its region list for truth.json."""
    n = int(TIMELINE_S * SR)
    dx = np.zeros(n)
    regions = []
    for t0, t1, ti, ch, s0, gain_db in DX_REGIONS:
        a, b, s = (int(round(v * SR)) for v in (t0, t1, s0))
        _render_segment(dx, a, b, takes[ti]["audio"][:, ch], s, _db(gain_db))
        regions.append({"kind": "region", "take": "production/" + TAKES[ti]["file"], "channel": ch,
                        "channel_name": ("BOOM", "LAV")[ch], "timeline_s": [t0, t1], "take_in_s": s0,
                        "gain_db": gain_db, "crossfade_ms": XFADE / SR * 1000})
    rng = _rng(seed, "fills")
    pr0, pr1 = (int(v * SR) for v in PRE_ROLL_S)
    for t0, t1, ti, ch in DX_FILLS:
        # loop pieces of the take's pre-roll (room tone only), each from a different place in it
        gain_db = next(g for _, _, tj, cj, _, g in DX_REGIONS if (tj, cj) == (ti, ch))
        a, b = int(round(t0 * SR)), int(round(t1 * SR))
        pieces = []
        pos = a
        while pos < b:
            length = b - pos if b - pos <= int(0.75 * SR) else int(rng.uniform(0.45, 0.6) * SR)
            start = int(rng.integers(pr0 + XFADE, pr1 - length - XFADE))
            _render_segment(dx, pos, pos + length, takes[ti]["audio"][:, ch], start, _db(gain_db))
            pieces.append({"timeline_s": [pos / SR, (pos + length) / SR], "take_in_s": start / SR})
            pos += length
        regions.append({"kind": "room_tone_fill", "take": "production/" + TAKES[ti]["file"], "channel": ch,
                        "channel_name": ("BOOM", "LAV")[ch], "timeline_s": [t0, t1], "gain_db": gain_db,
                        "pieces": pieces})
    return dx, regions


def _add(dst: np.ndarray, at_s: float, x: np.ndarray) -> tuple[int, int]:
    a = int(round(at_s * SR))
    seg = min(len(x), len(dst) - a)
    dst[a: a + seg] += x[:seg]
    return a, a + seg


def build_post(src: Sources, dialogue_rms: float) -> tuple[dict, dict]:
    """FX, BG and MX stems (n, 2) and the planted elements {name: (stem, full-length stereo array)}."""
    n = int(TIMELINE_S * SR)
    fx, bg, mx = np.zeros((n, 2)), np.zeros((n, 2)), np.zeros((n, 2))
    planted: dict[str, tuple[str, np.ndarray, str]] = {}

    def place(stem_name: str, stem: np.ndarray, key: str, at_s: float, x: np.ndarray) -> None:
        alone = np.zeros_like(stem)
        _add(alone, at_s, x)
        stem += alone
        planted[key] = (stem_name, alone, key)

    # FX: a glass door closing off right before the first line, a door opening left between the
    # lines, three soft leather footsteps under line A
    glass = src.load("glass_door")
    glass *= _db(-12.0) / np.max(np.abs(glass))
    place("FX", fx, "glass_door", 0.25, _pan(glass, 0.6))
    door = src.load("door")
    door *= _db(-10.0) / np.max(np.abs(door))
    place("FX", fx, "door", 4.40, _pan(door, -0.55))
    for i, (key, at_s) in enumerate((("step1", 1.62), ("step2", 2.17), ("step3", 2.71))):
        step = src.load(key)
        step *= _db(-30.0 - i) / np.max(np.abs(step))
        place("FX", fx, key, at_s, _pan(step, -0.25 + 0.1 * i))

    # BG: a rain bed 15 dB under the dialogue (per side, as the dialogue sits in the printmaster),
    # and a distant dog barking twice near the end
    rain = src.load("rain", start_s=2.0, stop_s=2.0 + TIMELINE_S)
    rain = _fade(rain, int(0.05 * SR), int(0.05 * SR))
    rain *= dialogue_rms * DX_PAN * _db(-15.0) / _rms(rain)
    place("BG", bg, "rain", 0.0, rain)
    for key, at_s, pos in (("dog1", 11.30, 0.7), ("dog2", 11.58, 0.65)):
        dog = src.load(key)
        dog = _fft_filter(dog, lambda f: 1 / np.sqrt(1 + (f / 3000) ** 2))  # distance takes the highs
        dog *= _db(-20.0) / np.max(np.abs(dog))
        place("BG", bg, key, at_s, _pan(dog, pos))

    # MX: a cue under the dialogue (14 dB under it), then a sting from a hit after a rest
    cue = src.load("cue", start_s=10.0, stop_s=19.0)
    cue = _fade(cue, int(0.6 * SR), int(1.0 * SR))
    cue *= dialogue_rms * DX_PAN * _db(-14.0) / _active_rms(cue)
    place("MX", mx, "cue", 0.90, _pan(cue, 0.0) * math.sqrt(2))
    sting = src.load("sting", start_s=55.69, stop_s=56.85)
    sting = _fade(sting, int(0.003 * SR), int(0.35 * SR))
    sting *= _db(-14.0) / np.max(np.abs(sting))
    place("MX", mx, "sting", 10.05, _pan(sting, 0.0) * math.sqrt(2))
    return {"FX": fx, "BG": bg, "MX": mx}, planted


# --------------------------------------------------------------------------------------------
# clips and truth


def _shares(parts: dict[str, np.ndarray], total: np.ndarray, a: int, b: int) -> dict[str, float]:
    e = float(np.sum(total[a:b] ** 2))
    return {k: round(float(np.sum(v[a:b] ** 2)) / e, 4) for k, v in parts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", type=Path, default=REPO.parent / "shared" / "sounds",
                    help="the shared sound set (manifest.csv, LICENSES.md); default ../shared/sounds")
    ap.add_argument("--out", type=Path, default=REPO / "fixtures" / "scene",
                    help="output folder; default fixtures/scene")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)
    src = Sources(args.sources)
    out = args.out
    for sub in ("stems", "production", "clips"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    n = int(TIMELINE_S * SR)

    # production takes
    takes = build_takes(src, args.seed)
    for t in takes:
        spec = t["spec"]
        peak = np.max(np.abs(t["audio"]))
        if peak >= 0.98:
            raise SystemExit(f"take {spec['file']} peaks at {peak:.3f}")
        write_bwf(out / "production" / spec["file"], t["audio"], SR, time_reference=_tc_to_samples(spec["tc"]),
                  fps=FPS, drop_frame=False, project="WHICHSOUND FIXTURE", scene="12A", take=spec["take"],
                  tape=spec["tape"], track_names=["BOOM", "LAV"],
                  description=f"sc 12A tk {spec['take']} BOOM LAV", originator="whichsound fixture")

    # the dialogue edit
    dx, regions = build_dx(takes, args.seed)
    dialogue_rms = _active_rms(dx)

    # post stems
    post, planted = build_post(src, dialogue_rms)
    stems = {"DX": dx, **post}
    in_mix = {"DX": np.stack([dx * DX_PAN, dx * DX_PAN], axis=1), **post}
    printmaster = sum(in_mix.values())
    peak = float(np.max(np.abs(printmaster)))
    if peak >= 0.9:
        raise SystemExit(f"printmaster peaks at {peak:.3f}; lower the stems")
    for role, audio in stems.items():
        if role == "DX":
            write_bwf(out / "stems" / "R1_DX.wav", audio, SR, time_reference=TIMELINE_REF, fps=FPS,
                      drop_frame=False, project="WHICHSOUND FIXTURE",
                      track_names=["DX"], description="R1 DX dialogue edit", originator="whichsound fixture")
        else:
            sf.write(out / "stems" / f"R1_{role}.flac", audio, SR, format="FLAC", subtype="PCM_24")
    write_bwf(out / "printmaster.wav", printmaster, SR, time_reference=TIMELINE_REF, fps=FPS,
              drop_frame=False, project="WHICHSOUND FIXTURE", track_names=["L", "R"],
              description="R1 printmaster", originator="whichsound fixture")

    # the production noise as it sits in the DX stem (take 2 LAV via region 2)
    t2 = takes[1]
    t0, t1, ti, ch, s0, gdb = DX_REGIONS[1]
    cough_dx = np.zeros(n)
    _render_segment(cough_dx, int(t0 * SR), int(t1 * SR), t2["noise"]["lav_only"], int(round(s0 * SR)), _db(gdb))
    planted["cough"] = ("DX", np.stack([cough_dx * DX_PAN] * 2, axis=1), "cough")

    # the line A passage (for the MP3 clip): line A as it sits in the DX stem
    line_dx = np.zeros(n)
    t0a, t1a, _, cha, s0a, gdba = DX_REGIONS[0]
    _render_segment(line_dx, int(t0a * SR), int(t1a * SR), takes[0]["audio"][:, cha], int(round(s0a * SR)),
                    _db(gdba))

    # 'none': a sneeze in the review room, recorded onto the clip during line B
    rng = _rng(args.seed, "none")
    sneeze = src.load("sneeze")
    sneeze = _fftconv(sneeze, _room_ir(rng, rt60=0.28, wet=0.5))
    sneeze *= dialogue_rms * DX_PAN * _db(6.0) / _active_rms(sneeze, floor_db=-20)
    sneeze_alone = np.zeros((n, 2))
    _add(sneeze_alone, 6.60, np.stack([sneeze, sneeze * _db(-1.0)], axis=1))
    reference = printmaster + sneeze_alone
    if np.max(np.abs(reference)) >= 0.98:
        raise SystemExit("the 'none' reference clips")

    def answers_for_dx(c0: int) -> list[dict]:
        return [{"root": "stems", "stem": "R1_DX.wav", "offset_s": round(c0 / SR, 7), "channel": 0}]

    def answers_for_take(c0: int, region: int, channel_first: bool = True) -> list[dict]:
        rt0, _, rti, rch, rs0, _ = DX_REGIONS[region]
        off = c0 - int(round(rt0 * SR)) + int(round(rs0 * SR))
        other = off + BOOM_DELAY if rch == 1 else off - BOOM_DELAY
        file = TAKES[rti]["file"]
        return [{"root": "production", "stem": file, "offset_s": round(off / SR, 7), "channel": rch,
                 "channel_name": ("BOOM", "LAV")[rch], "used_by_edit": True},
                {"root": "production", "stem": file, "offset_s": round(other / SR, 7), "channel": 1 - rch,
                 "channel_name": ("BOOM", "LAV")[1 - rch], "used_by_edit": False}]

    # clip plan: name, file, planted element, origin, extra
    plan = [
        ("fx_door", "fx_door.wav", "door", "post", {"note": "door opens, left (FX)"}),
        ("prod_cough", "prod_cough.wav", "cough", "production",
         {"note": "crew cough recorded in take 2 after the line (DX edit, take 2 LAV)"}),
        ("mx_sting", "mx_sting.wav", "sting", "music", {"note": "music sting after the dialogue (MX)"}),
        ("bg_dog", "bg_dog.wav", "dog", "post", {"note": "distant dog barks twice, right (BG)"}),
        ("none_sneeze", "none_sneeze.wav", "sneeze", "none",
         {"note": "sneeze in the review room over line B: in no stem"}),
        ("fx_glass_44k1", "fx_glass_44k1.wav", "glass_door", "post",
         {"samplerate": 44100, "note": "glass door closes, right (FX); clip resampled to 44.1 kHz"}),
    ]
    mp3_ok = "MP3" in sf.available_formats()
    if mp3_ok:
        plan.append(("dx_line_mp3", "dx_line.mp3", "line_a", "production",
                     {"format": "MP3", "note": "2 s of line A (DX edit, take 1 BOOM); MP3 CBR"}))
    pads = {"door": (0.06, 0.12), "cough": (0.08, 0.15), "sting": (0.05, 0.1), "dog": (0.08, 0.12),
            "sneeze": (0.07, 0.1), "glass_door": (0.05, 0.1)}
    parts_of = dict(in_mix)
    clips_truth = []
    for name, file, element, origin, extra in plan:
        if element == "dog":
            alone = planted["dog1"][1] + planted["dog2"][1]
            stem_role = "BG"
        elif element == "sneeze":
            alone, stem_role = sneeze_alone, None
        elif element == "line_a":
            alone, stem_role = None, "DX"
        else:
            stem_role, alone, _ = planted[element]
        if element == "line_a":
            a, b = int(1.45 * SR), int(3.45 * SR)  # a 2-s passage of line A
        else:
            a, b = _event_window(alone)
            pa, pb = pads[element]
            a, b = max(a - int(pa * SR), 0), min(b + int(pb * SR), n)
            short = int(MIN_CLIP_S * SR) - (b - a)
            if short > 0:  # at least MIN_CLIP_S: widen, a third before and the rest after
                a, b = max(a - short // 3, 0), min(b + short - short // 3, n)
        source_mix = reference if origin == "none" else printmaster
        excerpt = source_mix[a:b]
        parts = dict(parts_of)
        if origin == "none":
            parts["residual"] = sneeze_alone
        shares = _shares(parts, source_mix, a, b)
        if element == "line_a":
            element_share = round(float(np.sum(line_dx[a:b] ** 2) / np.sum(dx[a:b] ** 2)), 4)
        elif origin == "none":
            element_share = None
        else:
            own = in_mix[stem_role]
            element_share = round(float(np.sum(alone[a:b] ** 2) / np.sum(own[a:b] ** 2)), 4)
        key = "residual" if origin == "none" else stem_role
        if shares[key] < 0.5 or max(shares, key=shares.get) != key:
            raise SystemExit(f"clip {name}: {key} share {shares[key]} is not dominant: {shares}")
        sr_out = extra.get("samplerate", SR)
        path = out / "clips" / file
        if sr_out != SR:
            audio = soxr.resample(excerpt, SR, sr_out, quality="VHQ")
            sf.write(path, audio, sr_out, subtype="PCM_24")
        elif extra.get("format") == "MP3":
            sf.write(path, excerpt, SR, format="MP3", subtype="MPEG_LAYER_III",
                     bitrate_mode="CONSTANT", compression_level=0.55)
        else:
            sf.write(path, excerpt, SR, subtype="PCM_24")
        if origin == "none":
            answers = []
        elif origin == "production":
            answers = answers_for_dx(a) + answers_for_take(a, 1 if element == "cough" else 0)
        else:
            answers = [{"root": "stems", "stem": f"R1_{stem_role}.flac", "offset_s": round(a / SR, 7),
                        "channel": None}]
        sources_used = {"dog": ["dog1", "dog2"], "line_a": ["line_a"]}.get(element, [element])
        clips_truth.append({
            "id": name, "file": f"clips/{file}", "origin": origin, "note": extra["note"],
            "planted_role": stem_role if origin != "none" else None,
            "sources": [SOURCES[s] for s in sources_used],
            "window_s": [round(a / SR, 7), round(b / SR, 7)],
            "duration_s": round((b - a) / SR, 6),
            "samplerate": sr_out, "format": extra.get("format", "WAV"),
            "answers": answers, "shares": shares, "element_share": element_share,
        })

    truth = {
        "generator": "scripts/make_fixture.py", "seed": args.seed, "samplerate": SR,
        "fps": str(FPS), "drop_frame": False, "timeline_tc": TIMELINE_TC, "time_reference": TIMELINE_REF,
        "duration_s": TIMELINE_S,
        "stems": [
            {"file": "stems/R1_DX.wav", "role": "DX", "channels": 1, "printmaster_gains": [DX_PAN, DX_PAN]},
            {"file": "stems/R1_FX.flac", "role": "FX", "channels": 2, "printmaster_gains": [1.0, 1.0]},
            {"file": "stems/R1_BG.flac", "role": "BG", "channels": 2, "printmaster_gains": [1.0, 1.0]},
            {"file": "stems/R1_MX.flac", "role": "MX", "channels": 2, "printmaster_gains": [1.0, 1.0]},
        ],
        "printmaster": {"file": "printmaster.wav", "channels": 2,
                        "note": "sum of the stems, DX centred at -3 dB per side; no trim, no limiter",
                        "peak_dbfs": round(20 * math.log10(peak), 2)},
        "takes": [{
            "file": f"production/{t['spec']['file']}", "scene": "12A", "take": t["spec"]["take"],
            "tape": t["spec"]["tape"], "tc_start": t["spec"]["tc"],
            "time_reference": _tc_to_samples(t["spec"]["tc"]), "tracks": ["BOOM", "LAV"],
            "boom_delay_ms": BOOM_DELAY / SR * 1000, "duration_s": TAKE_S,
            "line": {"source": SOURCES[t["spec"]["line"]], "at_s": t["spec"]["line_at_s"],
                     "length_s": round(t["line_len_s"], 6)},
            "noise": None if t["noise"] is None else {
                "source": SOURCES[t["noise"]["source"]], "lav_at_s": t["noise"]["lav_at_s"],
                "boom_at_s": t["noise"]["boom_at_s"]},
        } for t in takes],
        "dx_regions": regions,
        "levels": {"dialogue_active_rms_dbfs": round(20 * math.log10(dialogue_rms), 2)},
        "clips": clips_truth,
        "mp3_written": mp3_ok,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    (out / "LICENSES.md").write_text(_licences_md(src), encoding="utf-8")
    print(f"wrote {out} ({len(clips_truth)} clips, printmaster peak {20 * math.log10(peak):.1f} dBFS)")
    return 0


def _licences_md(src: Sources) -> str:
    lines = [
        "# Licences of the fixture scene",
        "",
        "Every sound in this folder is derived from the real recordings below, taken from the project's",
        "shared sound set (`shared/sounds`, which copies them from Debian bookworm packages) and processed",
        "by `scripts/make_fixture.py` (resampling, gain, pan, synthetic room reverb and room tone, mixing).",
        "Only recordings that are public domain (the LibriVox speech, packaged by CMU under BSD-2-Clause),",
        "CC0-1.0 or CC-BY-SA-3.0 were chosen (no GPL material), so that the derived audio can be",
        "redistributed under one licence.",
        "",
        "**Licence of the derived audio** (every `.wav`, `.flac` and `.mp3` here): because it includes",
        "CC-BY-SA-3.0 material, the audio in this folder is distributed under",
        "[CC-BY-SA-3.0](https://creativecommons.org/licenses/by-sa/3.0/), with the attributions below.",
        "The code that makes it (`scripts/make_fixture.py`) is under the project's MIT licence;",
        "`truth.json` and this file are facts about the audio.",
        "",
        "| file used (shared/sounds) | original file in the package | source package | licence | attribution |",
        "|---|---|---|---|---|",
    ]
    for key in SOURCES:
        d = src.describe(key)
        pkg = src.packages.get(d["package"], {})
        attribution = pkg.get("copyright", "")
        if d["path"].startswith("speech/en_librivox"):
            attribution = ("LibriVox volunteer reading of Jane Austen, *Sense and Sensibility*, ch. 1 "
                           "(public domain); excerpt packaged by Carnegie Mellon University "
                           "(pocketsphinx test data, BSD-2-Clause)")
        elif d["path"].startswith("sfx/scratch__"):
            attribution = "Massachusetts Institute of Technology, Scratch media library"
        elif d["path"].startswith("sfx/flare__"):
            attribution = "Flare (flare-game): Clint Bellanger and others"
        elif d["path"].startswith("sfx/minetest__doors"):
            attribution = "Minetest Game doors mod (minetest-data); dedicated to the public domain (CC0-1.0)"
        elif d["path"].startswith("amb/ardentryst"):
            attribution = "Ardentryst: Kendra Pietruszewski (see the package's copyright for freesound.org contributors)"
        elif d["path"].startswith("music/asterisk_moh__macroform"):
            attribution = "Paul Shuler (Macroform), via the Asterisk opsound music-on-hold package"
        lines.append(f"| `{d['path']}` | `{d['source_file']}` | {d['package']} {d['package_version']} | "
                     f"{d['licence']} | {attribution} |")
    lines += [
        "",
        "Synthetic parts (no licence restriction): the room tone and hum of the takes, the room impulse",
        "responses, pans and fades, all generated from seeded numpy random numbers.",
        "",
        "Package copyright notices, as in `shared/sounds/LICENSES.md`:",
        "",
    ]
    used = sorted({src.row(k)["source_package"] for k in SOURCES})
    for pkg in used:
        info = src.packages.get(pkg, {})
        lines.append(f"- **{pkg} {info.get('version', '')}**: {info.get('licence', '')}; "
                     f"{info.get('copyright', '')}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
