"""Shared test material: real recordings from ../shared/sounds at 48 kHz, and a film reel of stems.

The recordings (speech, sound effects, ambiences, music; FLAC at 8-48 kHz) are read with soundfile and
resampled with soxr to 48 kHz, the stems' rate.  The session-scoped `reel` fixture writes one small reel
of stems with known content (where every sound effect was placed), so tests can cut questioned clips with
a known truth.  Tests that need ../shared skip with a clear reason when it is absent.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SOUNDS = SHARED / "sounds"
EXTERNAL = SHARED / "external"
SR = 48000

# Dialogue of reel 1 and reel 2: one reader, different lines (the same voice in both reels makes reel 2 a
# hard distractor for a clip of reel 1).
READER = "en_librivox_reader_pocketsphinx"
R1_SPEECH = ("sense_and_sensibility_01_austen_64kb-0870", "sense_and_sensibility_01_austen_64kb-0890",
             "sense_and_sensibility_01_austen_64kb-0880")
R2_SPEECH = ("sense_and_sensibility_01_austen_64kb-0920", "sense_and_sensibility_01_austen_64kb-0930")
# The 5.1 effects stem: each channel gets its own effects, every file used once, so a clip of one channel
# is in no other channel.
FX_CHANNELS = (
    ("btanks__train", "scratch__Effects__DoorCreak", "scratch__Animal__Rooster"),
    ("btanks__building-explosion1", "scratch__Effects__CarPassing", "scratch__Human__BabyCry"),
    ("scratch__Effects__MotorcyclePassing", "btanks__cow", "minetest__tnt__sounds__tnt_ignite"),
    ("btanks__explosion", "pygame__boom", "minetest__tnt__sounds__tnt_explode"),
    ("btanks__helicopter", "scratch__Animal__WolfHowl", "scratch__Effects__BellToll"),
    ("minetest__fire__sounds__fire_large", "scratch__Animal__Crickets", "btanks__submarine"),
)
REEL_S = 12.0


@pytest.fixture(autouse=True, scope="session")
def _private_index_cache(tmp_path_factory):
    """locate and batch keep an analysis index in the per-user cache: point it at a fresh folder per run."""
    old = os.environ.get("WHICHSOUND_CACHE")
    os.environ["WHICHSOUND_CACHE"] = str(tmp_path_factory.mktemp("index-cache"))
    yield
    if old is None:
        os.environ.pop("WHICHSOUND_CACHE", None)
    else:
        os.environ["WHICHSOUND_CACHE"] = old


def require_sounds() -> None:
    """Skip the calling test when ../shared/sounds (the real recordings) is not next to the repo."""
    if not (SOUNDS / "manifest.csv").is_file():
        pytest.skip(f"real recordings not found: {SOUNDS} (the shared/ folder next to the repo) is absent")


@functools.cache
def _decoded(rel: str, mono: bool) -> np.ndarray:
    import soxr

    data, sr = sf.read(str(SOUNDS / rel), dtype="float32", always_2d=True)
    if mono:
        data = data.mean(axis=1, keepdims=True)
    if sr != SR:
        data = soxr.resample(data, sr, SR, quality="VHQ")
    out = np.ascontiguousarray(data[:, 0] if mono else data, dtype=np.float32)
    out.setflags(write=False)
    return out


def load_sound(rel: str, seconds: float | None = None, *, start_s: float = 0.0, mono: bool = True) -> np.ndarray:
    """A recording from ../shared/sounds (path relative to it) at 48 kHz, float32, a private copy.

    Mono (n,) by default (channels averaged), else (n, ch).  `start_s`/`seconds` cut an excerpt.
    """
    require_sounds()
    x = _decoded(rel, mono)
    a = int(round(start_s * SR))
    b = None if seconds is None else a + int(round(seconds * SR))
    return np.array(x[a:b], dtype=np.float32)


def speech(name: str, speaker: str = READER) -> np.ndarray:
    return load_sound(f"speech/{speaker}/{name}.flac")


def sfx(name: str) -> np.ndarray:
    return load_sound(f"sfx/{name}.flac")


def rms_db(x: np.ndarray) -> float:
    """Level in dB relative to full scale squared (mean square; -200 dB for silence)."""
    return 10 * np.log10(np.mean(np.asarray(x, dtype=np.float64) ** 2) + 1e-20)


def lay_out(sounds: list[np.ndarray], seconds: float, rng: np.random.Generator,
            gap_s: tuple[float, float] = (0.2, 0.8)) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Place recordings one after the other with random gaps of digital silence, cut to `seconds`.

    Returns the track and the (start, end) sample of every placed recording (end clipped to the track).
    """
    n = int(round(seconds * SR))
    out = np.zeros(n, dtype=np.float32)
    spans = []
    pos = int(rng.uniform(*gap_s) * SR)
    for s in sounds:
        if pos >= n:
            break
        k = min(len(s), n - pos)
        out[pos : pos + k] = s[:k]
        spans.append((pos, pos + k))
        pos += k + int(rng.uniform(*gap_s) * SR)
    return out, spans


def write_wav(path: Path, data: np.ndarray, samplerate: int = SR, subtype: str = "PCM_24") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if peak > 0.999:
        raise ValueError(f"{path.name}: test signal would clip (peak {peak:.3f})")
    sf.write(str(path), data, samplerate, subtype=subtype)
    return path


def read_back(path: Path) -> np.ndarray:
    """A written file's samples as the library will read them: float32 (n, ch)."""
    return sf.read(str(path), dtype="float32", always_2d=True)[0]


def digest(path: Path) -> tuple[int, str]:
    """(mtime in ns, sha256) of a file: to check that a run modified no input."""
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def digests(*roots: Path) -> dict[Path, tuple[int, str]]:
    return {p: digest(p) for r in roots for p in ([r] if r.is_file() else sorted(r.rglob("*"))) if p.is_file()}


def encode_aac(path, streams: list[np.ndarray], samplerate: int = SR, fmt: str | None = None) -> None:
    """Write mono float signals as AAC audio streams of an MP4/M4A with PyAV (FFmpeg's native encoder)."""
    av = pytest.importorskip("av")
    if "aac" not in av.codecs_available:
        pytest.skip("this PyAV/FFmpeg build has no AAC encoder")
    try:
        out = av.open(str(path), "w", format=fmt)
        try:
            encoders = []
            for data in streams:
                st = out.add_stream("aac", rate=samplerate)
                st.layout = "mono"
                st.bit_rate = 128_000
                encoders.append((st, data))
            for st, data in encoders:
                for i in range(0, len(data), 1024):
                    chunk = np.ascontiguousarray(data[None, i : i + 1024], dtype=np.float32)
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                    frame.sample_rate, frame.pts = samplerate, i
                    for packet in st.encode(frame):
                        out.mux(packet)
                for packet in st.encode(None):
                    out.mux(packet)
        finally:
            out.close()
    except Exception as exc:  # an FFmpeg without a working AAC encoder or MP4 muxer
        pytest.skip(f"PyAV cannot encode AAC in MP4 here: {exc}")


@dataclass
class Reel:
    """Three folders of stems with known content, REEL_S (12 s) long unless said.

    reel1/: R1_DX.wav (mono dialogue), R1_MX.wav (stereo music), R1_BG.wav (stereo ambience), printed on one
    timeline.  reel2/: R2_DX.wav, the same reader's other lines, 10 s.  fx51/: R1_FX.wav, a 5.1 effects stem
    (L R C LFE Ls Rs), `fx_spans[ch]` lists where each effect of channel ch was placed.  `audio[name]` holds
    each stem's samples exactly as written and read back (float32 (n, ch)).
    """

    base: Path
    audio: dict[str, np.ndarray] = field(default_factory=dict)
    dx_spans: list[tuple[int, int]] = field(default_factory=list)
    fx_spans: list[list[tuple[int, int]]] = field(default_factory=list)

    @property
    def reel1(self) -> Path:
        return self.base / "reel1"

    @property
    def reel2(self) -> Path:
        return self.base / "reel2"

    @property
    def fx51(self) -> Path:
        return self.base / "fx51"

    def stem(self, name: str) -> Path:
        folder = {"R1_FX.wav": self.fx51, "R2_DX.wav": self.reel2}.get(name, self.reel1)
        return folder / name


@pytest.fixture(scope="session")
def reel(tmp_path_factory) -> Reel:
    require_sounds()
    rng = np.random.default_rng(20240611)
    r = Reel(tmp_path_factory.mktemp("reel"))
    dx, r.dx_spans = lay_out([0.8 * speech(n) for n in R1_SPEECH], REEL_S, rng)
    mx = 0.5 * load_sound("music/lincity__02_-_Robert_van_Herk_-_City_Blues.flac", REEL_S, start_s=5.0, mono=False)
    bg = 0.7 * load_sound("amb/ardentryst__AMB_Intro_4.flac", REEL_S, start_s=2.0, mono=False)
    fx = np.zeros((int(round(REEL_S * SR)), 6), dtype=np.float32)
    for ch, names in enumerate(FX_CHANNELS):
        track, spans = lay_out([0.7 * sfx(n) for n in names], REEL_S, rng)
        fx[:, ch] = track
        r.fx_spans.append(spans)
    dx2, _ = lay_out([0.8 * speech(n) for n in R2_SPEECH], 10.0, rng)
    for name, data in (("R1_DX.wav", dx), ("R1_MX.wav", mx), ("R1_BG.wav", bg), ("R1_FX.wav", fx),
                       ("R2_DX.wav", dx2)):
        path = write_wav(r.stem(name), data)
        r.audio[name] = read_back(path)
    return r


def phone_in_a_room(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mono `y` as a phone held up in a room hears it: 300-3400 Hz, a reverberant tail (RT60 0.35 s,
    the direct sound 4 dB over it), a pink-ish hiss 15 dB under; the same length, float64."""
    from scipy import signal

    n = len(y)
    y = signal.sosfiltfilt(signal.butter(4, [300, 3400], btype="bandpass", fs=SR, output="sos"), y)
    t = np.arange(int(0.6 * SR)) / SR
    tail = rng.standard_normal(len(t)) * 10 ** (-3 * t / 0.35)
    tail[: int(0.002 * SR)] = 0.0
    ir = tail * np.sqrt(10 ** (-4 / 10) / np.sum(tail**2))
    ir[0] = 1.0
    y = signal.fftconvolve(y, ir)[:n]
    hiss = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    return y + hiss * np.sqrt(np.mean(y**2) / np.mean(hiss**2)) * 10 ** (-15 / 20)
