"""More scenes and clip conditions for the public benchmark (../shared/bench), beyond its eight: the
material of issue 4 the generator does not make, and surround stems. Not part of the product: it is loaded
by the benchmark's own generator, in the benchmark's environment (numpy, scipy, pedalboard, soxr, PyAV).

    cd ../shared/bench
    ~/benchenv/bin/python make_scenes.py --sources ../sounds --out /tmp/xscenes --seed 11 --scenes 3 \\
        --extra /path/to/whichsound/benchmarks/bench_extra.py --variants surround51,plain \\
        --conditions clean,pal_speedup,aac_96,tv_room
    ~/benchenv/bin/python score.py --scenes /tmp/xscenes --cmd whichsound --mode locate --out /tmp/x.json

Conditions (the clip's truth offset is the source position of its first sample, whatever its speed):
  pal_speedup  WAV 48 kHz, 25/24 fast (4.17 %): a 24 fps film played at 25 fps, pitch up
  pullup       WAV 48 kHz, 1001/1000 fast: 23.976 material played at 24
  drift        WAV 48 kHz, a random speed 0.2-0.8 % off either way (a deck or a resampler slightly off)
  aac_96       AAC-LC 96 kb/s stereo in .m4a, 48 kHz (a streamed or messaged review copy)
  aac_pal_44k  25/24 fast, 44.1 kHz, AAC-LC 128 kb/s .m4a (a European web screener)
  sr16k_mono   WAV 16 kHz 16-bit mono, no other damage (a voice-note export)
  tv_room      a recorder in the room: mono, 120 Hz-9 kHz speaker band, room reverb, noise 20 dB down, 48 kHz
  noisy        the excerpt with pink noise 8 dB under it (a loud venue), stereo 48 kHz
  broadcast    a 4:1 compressor 20 dB deep, 12 dB make-up and a limiter (a broadcast chain's dynamics)
  pal_pitchfix 25/24 fast with the pitch kept (Rubber Band time-stretch): a PAL copy made pitch-correct
  mp3_48mono   MP3 48 kb/s mono: frames too small for LAME's encoder-delay header (offsets 1105 samples early)
  laptop_eq    a small speaker's EQ: 4th-order high-pass at 250 Hz, a 10 dB cut above 4 kHz, no noise
  clipped      driven 15 dB into a soft clipper (a hot review copy)
  polarity     the excerpt inverted (a wiring or a plug-in's polarity flip)
Scene variants:
  surround51   effects, backgrounds and music stems in 5.1 (L R C LFE Ls Rs), folded to the stereo
               printmaster with the ITU coefficients; foley stays stereo
  surround71   the same with 7.1 music (L R C LFE Ls Rs Lrs Rrs)
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
from benchlib import dsp
from benchlib.conditions import SR, mp3_bytes, pcm16, speed_change
from benchlib.layouts import Layout

# ------------------------------------------------------------------------------------------------ conditions


def _aac_bytes(x: np.ndarray, sr: int, kbps: int) -> bytes:
    """AAC-LC in an MP4 (.m4a) container through PyAV/ffmpeg; x is float (frames, channels)."""
    import av

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    buf = io.BytesIO()
    layout = "mono" if x.shape[1] == 1 else "stereo"
    with av.open(buf, "w", format="mp4") as out:
        st = out.add_stream("aac", rate=sr)
        st.bit_rate = kbps * 1000
        st.layout = layout
        frame_n = 1024
        pts = 0
        for a in range(0, len(x), frame_n):
            chunk = np.ascontiguousarray(x[a : a + frame_n].T)
            fr = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            fr.sample_rate = sr
            fr.pts = pts
            pts += chunk.shape[1]
            for pkt in st.encode(fr):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return buf.getvalue()


def pal_speedup(x, ctx):
    speed = 25 / 24
    return speed_change(x, speed), SR, "wav", speed


def pullup(x, ctx):
    speed = float(Fraction(1001, 1000))
    return speed_change(x, speed), SR, "wav", speed


def drift(x, ctx):
    speed = 1.0 + float(ctx.rng.choice([-1, 1])) * float(ctx.rng.uniform(0.002, 0.008))
    ctx.info["drift"] = round(speed - 1.0, 6)
    return speed_change(x, speed), SR, "wav", speed


def aac_96(x, ctx):
    return _aac_bytes(x, SR, 96), SR, "m4a", 1.0


def aac_pal_44k(x, ctx):
    speed = 25 / 24
    y = dsp.to_rate(speed_change(x, speed), SR, 44100)
    return _aac_bytes(y, 44100, 128), 44100, "m4a", speed


def sr16k_mono(x, ctx):
    return pcm16(dsp.to_rate(dsp.mono(x), SR, 16000)), 16000, "wav", 1.0


def tv_room(x, ctx):
    rng = ctx.rng
    y = dsp.butter(dsp.mono(x), "bandpass", (120.0, 9000.0), order=2, zero_phase=True)
    y = dsp.convolve(y, dsp.room_ir(rng, rt60=rng.uniform(0.3, 0.6), drr_db=rng.uniform(0.0, 6.0)))
    noise = dsp.pink_noise(len(y), rng) * np.sqrt(np.mean(y**2)) * dsp.undb(-20.0)
    return y + noise, SR, "wav", 1.0


def noisy(x, ctx):
    rng = ctx.rng
    n = np.stack([dsp.pink_noise(len(x), rng), dsp.pink_noise(len(x), rng)], axis=1)
    n *= np.sqrt(np.mean(x**2) / max(np.mean(n**2), 1e-30)) * dsp.undb(-8.0)
    y = x + n
    peak = np.max(np.abs(y))
    return (y / peak * 0.9 if peak > 0.99 else y), SR, "wav", 1.0


def broadcast(x, ctx):
    """A broadcast or streaming chain's dynamics: a 4:1 compressor 20 dB into it, make-up gain and a
    brick-wall limiter (levels move with the programme, unlike any static gain or EQ)."""
    from pedalboard import Compressor, Gain, Limiter, Pedalboard

    board = Pedalboard([Compressor(threshold_db=-32.0, ratio=4.0, attack_ms=5.0, release_ms=120.0),
                        Gain(gain_db=12.0), Limiter(threshold_db=-1.0, release_ms=60.0)])
    y = board(np.ascontiguousarray(np.asarray(x, dtype=np.float32).T), SR).T
    return np.ascontiguousarray(y, dtype=np.float64), SR, "wav", 1.0


def pal_pitchfix(x, ctx):
    """PAL's speed-up made pitch-correct: 25/24 faster, the pitch kept (Rubber Band through pedalboard)."""
    from pedalboard import time_stretch

    speed = 25 / 24
    y = time_stretch(np.ascontiguousarray(np.asarray(x, dtype=np.float32).T), SR, stretch_factor=speed).T
    return np.ascontiguousarray(y, dtype=np.float64), SR, "wav", speed


def mp3_48mono(x, ctx):
    return mp3_bytes(dsp.mono(np.asarray(x)), SR, 48), SR, "mp3", 1.0


def laptop_eq(x, ctx):
    y = dsp.butter(np.asarray(x), "highpass", 250.0, order=4)
    return dsp.high_shelf(y, 4000.0, -10.0), SR, "wav", 1.0


def clipped(x, ctx):
    return dsp.soft_clip(np.asarray(x) * dsp.undb(15.0), 0.5) * 0.9, SR, "wav", 1.0


def polarity(x, ctx):
    return -np.asarray(x), SR, "wav", 1.0


CONDITIONS = {
    "broadcast": broadcast,
    "pal_pitchfix": pal_pitchfix,
    "mp3_48mono": mp3_48mono,
    "laptop_eq": laptop_eq,
    "clipped": clipped,
    "polarity": polarity,
    "pal_speedup": pal_speedup,
    "pullup": pullup,
    "drift": drift,
    "aac_96": aac_96,
    "aac_pal_44k": aac_pal_44k,
    "sr16k_mono": sr16k_mono,
    "tv_room": tv_room,
    "noisy": noisy,
}

# ------------------------------------------------------------------------------------------------ layouts

_G = np.sqrt(0.5)  # -3 dB, the ITU fold of centre and surrounds


def _fold(names: tuple[str, ...]) -> np.ndarray:
    """(channels x 2) ITU-style fold-down: L/R as they are, centre and surrounds at -3 dB, LFE left out."""
    to = {"L": (1, 0), "R": (0, 1), "C": (_G, _G), "LFE": (0, 0), "Ls": (_G, 0), "Rs": (0, _G),
          "Lrs": (_G, 0), "Rrs": (0, _G)}
    return np.array([to[c] for c in names], dtype=np.float64)


def _surround(names: tuple[str, ...], mask: int) -> Layout:
    k = len(names)
    idx = {c: i for i, c in enumerate(names)}

    def place(rng):
        """A mono element panned across the front (L C R) with a little in the surrounds."""
        g = np.zeros(k)
        pos = rng.uniform(-0.8, 0.8)
        a, b, t = ("L", "C", pos + 1.0) if pos < 0 else ("C", "R", pos)
        th = t * np.pi / 2
        g[idx[a]], g[idx[b]] = np.cos(th), np.sin(th)
        sur = rng.uniform(0.0, 0.3)
        g[idx["Ls"]] = g[idx["Rs"]] = sur
        return g / np.sqrt(np.sum(g**2))

    def place_event(rng):
        g = place(rng)
        if rng.uniform() < 0.3:  # now and then a hard surround effect (a fly-by, a door behind)
            g = np.zeros(k)
            g[idx[rng.choice(["Ls", "Rs"])]] = 1.0
        return g

    def place_stereo(x, alt):
        """Stereo material in L/R, a quieter decorrelated stretch (or a delayed copy) in the surrounds,
        a little of its sum in the centre, its low end in the LFE."""
        out = np.zeros((len(x), k))
        out[:, idx["L"]], out[:, idx["R"]] = x[:, 0], x[:, 1]
        back = alt if alt is not None else np.roll(x, int(0.015 * SR), axis=0)
        for c in ("Ls", "Rs", "Lrs", "Rrs"):
            if c in idx:
                out[:, idx[c]] = back[:, 0 if c[0] == "L" else 1] * 0.5
        out[:, idx["C"]] = 0.25 * (x[:, 0] + x[:, 1])
        out[:, idx["LFE"]] = dsp.butter(x.mean(axis=1), "lowpass", 100.0) * 0.5
        return out

    return Layout(channels=names, downmix=_fold(names), place=place, place_event=place_event,
                  place_stereo=place_stereo, channel_mask=mask)


SURROUND_51 = _surround(("L", "R", "C", "LFE", "Ls", "Rs"), 0x3F)
SURROUND_71 = _surround(("L", "R", "C", "LFE", "Ls", "Rs", "Lrs", "Rrs"), 0x63F)


def surround51(plan, rng):
    plan.layouts.update(FX=SURROUND_51, BG=SURROUND_51, MX=SURROUND_51)


def surround71(plan, rng):
    plan.layouts.update(FX=SURROUND_51, BG=SURROUND_51, MX=SURROUND_71)


SCENE_VARIANTS = {"surround51": surround51, "surround71": surround71}
