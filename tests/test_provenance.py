"""Production provenance: a noise in the dialogue stem traced to its take, channel and time-of-day timecode,
and stem clocks from --start-tc / --fps when files carry none. Uses the committed fixture scene."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from whichsound.cli import main
from whichsound.locate import locate
from whichsound.stems import apply_clock_defaults, discover
from whichsound.timecode import FrameRate, samples_to_timecode

SCENE = Path(__file__).resolve().parents[1] / "fixtures" / "scene"
TRUTH = json.loads((SCENE / "truth.json").read_text())


def _clip(cid: str) -> dict:
    return next(c for c in TRUTH["clips"] if c["id"] == cid)


def test_production_noise_is_traced_to_take_channel_and_time_of_day():
    clip = _clip("prod_cough")
    res = locate(SCENE / clip["file"], [str(SCENE / "stems"), str(SCENE / "production")])
    v = res.verdict
    assert v.origin == "production"
    take = next(a for a in clip["answers"] if a["root"] == "production" and a.get("used_by_edit"))
    meta = next(t for t in TRUTH["takes"] if t["file"].endswith(take["stem"]))
    if v.match.stem.role == "PROD":  # the take itself explains the clip best: the verdict names it
        prod = {"file": v.match.stem.rel, "channel": v.match.channel, "offset_s": v.match.offset_s,
                "scene": v.match.stem.scene, "take": v.match.stem.take}
    else:  # the dialogue stem: the take must be named in the production block
        assert v.match.stem.rel == "R1_DX.wav"
        prod = v.production
    assert prod["file"] == take["stem"]
    assert (prod["scene"], prod["take"]) == (meta["scene"], meta["take"])
    # 0.1 ms: the take's own correlation peak, sub-sample interpolated.
    assert prod["offset_s"] == pytest.approx(take["offset_s"], abs=1e-4)
    rate = FrameRate(24, 1, False)
    expect_tc = samples_to_timecode(meta["time_reference"] + round(take["offset_s"] * 48000), rate, 48000)
    from whichsound.report import stem_timecode

    got_tc = prod.get("timecode") or stem_timecode(v.match.stem, v.match.offset)
    assert got_tc == expect_tc
    assert got_tc.startswith("14:25:")  # time of day on the recorder, not the reel's 01:00:00:00


def test_dialogue_verdict_names_the_take_in_its_production_block():
    # A line of dialogue (an MP3 review copy): it is in the DX edit and in a take. Whichever explains it best,
    # the answer must carry the take's scene/take and its time-of-day timecode.
    clip = next(c for c in TRUTH["clips"] if c["file"].endswith(".mp3"))
    res = locate(SCENE / clip["file"], [str(SCENE / "stems"), str(SCENE / "production")])
    v = res.verdict
    assert v.origin == "production"
    takes = {a["stem"] for a in clip["answers"] if a["root"] == "production"}
    if v.match.stem.role == "DX":
        named, tc = v.production["file"], v.production["timecode"]
    else:
        from whichsound.report import stem_timecode

        named, tc = v.match.stem.rel, stem_timecode(v.match.stem, v.match.offset)
    assert named in takes
    assert tc.startswith("14:")


def test_sound_in_the_dialogue_stem_but_in_no_take_says_so(tmp_path):
    # Take 2 removed: the cough is in the DX edit but in no take given.
    prod = tmp_path / "production"
    prod.mkdir()
    shutil.copy(SCENE / "production" / "12A_T01.wav", prod / "12A_T01.wav")
    clip = _clip("prod_cough")
    res = locate(SCENE / clip["file"], [str(SCENE / "stems"), str(prod)])
    v = res.verdict
    assert v.match is not None and v.match.stem.rel == "R1_DX.wav"
    assert v.production == {"file": None}
    assert "no production take" in v.text


def test_start_tc_and_fps_fill_only_files_without_a_clock():
    found = discover([str(SCENE / "stems")])
    flac = next(s for s in found.stems if s.rel == "R1_FX.flac")
    wav = next(s for s in found.stems if s.rel == "R1_DX.wav")
    assert flac.time_reference is None and wav.time_reference == 3600 * 48000
    filled = apply_clock_defaults(found, start_tc="10:00:00:00", fps="25")
    flac2 = next(s for s in filled.stems if s.rel == "R1_FX.flac")
    wav2 = next(s for s in filled.stems if s.rel == "R1_DX.wav")
    assert flac2.time_reference == 10 * 3600 * 48000 and flac2.fps == Fraction(25)
    assert (wav2.time_reference, wav2.fps) == (wav.time_reference, wav.fps)  # its own bext/iXML win


def test_cli_start_tc_gives_flac_stems_a_timecode():
    clip = _clip("fx_door")
    runner = CliRunner()
    out = runner.invoke(main, ["locate", str(SCENE / clip["file"]), "--stems", str(SCENE / "stems"),
                               "--start-tc", "01:00:00:00", "--fps", "24", "--json"])
    assert out.exit_code == 0, out.output
    v = json.loads(out.stdout)["verdict"]
    assert v["stem"] == "R1_FX.flac"
    frames = int(clip["answers"][0]["offset_s"] * 24)  # the frame that contains the clip's first sample
    assert v["timecode"] == samples_to_timecode(3600 * 48000 + frames * 2000, FrameRate(24, 1, False), 48000)


def test_cli_bad_fps_is_a_one_line_error():
    clip = _clip("fx_door")
    out = CliRunner().invoke(main, ["locate", str(SCENE / clip["file"]), "--stems", str(SCENE / "stems"),
                                    "--start-tc", "01:00:00:00", "--fps", "twenty"])
    assert out.exit_code == 2
    assert "twenty" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_flac_stems_on_the_reel_share_the_dialogue_stems_clock():
    # The fixture's FLAC stems carry no bext; printed on the DX stem's timeline, they take its clock.
    clip = _clip("fx_door")
    res = locate(SCENE / clip["file"], [str(SCENE / "stems")])
    v = res.verdict
    assert v.match.stem.rel == "R1_FX.flac"
    frames = int(clip["answers"][0]["offset_s"] * 24)
    from whichsound.report import stem_timecode

    assert stem_timecode(v.match.stem, v.match.offset) == samples_to_timecode(
        3600 * 48000 + frames * 2000, FrameRate(24, 1, False), 48000)


def _two_mic_take(folder: Path, edit_channel: int) -> tuple[int, int]:
    """A 12 s two-track take (BOOM, LAV: iXML names) of a line and an off-mic noise the boom hears 5 ms
    after the lav and over less of the line, and a dialogue stem that cuts `edit_channel` of it into a
    24 s reel at 8 s. Returns (take sample where the noise lies in the edited track, its reel sample)."""
    from conftest import SR, sfx, speech
    from whichsound.bwf import write_bwf

    n = 12 * SR
    line = np.zeros(n, np.float32)
    say = speech("sense_and_sensibility_01_austen_64kb-0870")[: 6 * SR]
    line[3 * SR : 3 * SR + len(say)] = say
    noise = np.zeros(n, np.float32)
    knock = sfx("btanks__laugh01")[: SR]
    at = 5 * SR
    noise[at : at + len(knock)] = knock
    delay = int(0.005 * SR)
    late = np.roll(noise, delay)
    rng = np.random.default_rng(4)
    hiss = 1e-3 * rng.standard_normal((n, 2)).astype(np.float32)
    boom = 0.25 * np.roll(line, int(0.004 * SR)) + 0.5 * late + hiss[:, 0]
    lav = 0.8 * line + 0.25 * noise + hiss[:, 1]
    take = np.stack([boom, lav], axis=1)
    write_bwf(folder / "production" / "14A_T01.wav", take, SR, track_names=["BOOM", "LAV"])
    dx = np.zeros(24 * SR, np.float32)
    dx[8 * SR : 8 * SR + n] = 0.7 * take[:, edit_channel]
    (folder / "stems").mkdir(exist_ok=True)
    sf.write(folder / "stems" / "R1_DX.wav", dx, SR, subtype="PCM_24")
    where = at + (delay if edit_channel == 0 else 0)
    return where, 8 * SR + where


@pytest.mark.parametrize("edit_channel", [0, 1])
def test_a_noise_soloed_from_the_dialogue_stem_is_placed_in_the_take_track_the_edit_used(tmp_path, edit_channel):
    # The clip is the noise alone as the dialogue stem holds it. With the lav cut (edit_channel 1), the boom
    # correlates more strongly (the noise over less of the line) 5 ms later; the take must still be
    # placed where the edited track has it, to the sample, with that track named.
    from conftest import SR

    (tmp_path / "production").mkdir()
    take_at, reel_at = _two_mic_take(tmp_path, edit_channel)
    from conftest import sfx

    pre = SR // 10
    start = reel_at - pre
    clip = tmp_path / "clip.wav"
    # only the noise, at the level the dialogue stem has it: the line under it is not in the clip
    solo = np.zeros(13 * SR // 10, np.float32)
    knock = 0.7 * (0.5 if edit_channel == 0 else 0.25) * sfx("btanks__laugh01")[: SR]
    solo[pre : pre + len(knock)] = knock
    sf.write(clip, solo, SR, subtype="FLOAT")
    res = locate(clip, [str(tmp_path / "stems"), str(tmp_path / "production")], index=None)
    take = next(m for m in res.matches if m.stem.role == "PROD")
    stem = next(m for m in res.matches if m.stem.role == "DX")
    assert stem.offset == pytest.approx(start, abs=0.5)
    # the take's track the edit used, at the noise's place in it (half a sample: the parabolic peak)
    assert take.channel == edit_channel
    assert take.offset == pytest.approx(take_at - pre, abs=0.5)
