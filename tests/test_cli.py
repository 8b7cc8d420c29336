"""Tests for the command line: `whichsound locate`, its JSON contract, exit statuses and error messages.

In-process with click's CliRunner (stdout and stderr apart); one subprocess run of `python -m whichsound`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SR, digests, encode_aac, load_sound, speech, write_wav
from whichsound.bwf import write_bwf
from whichsound.cli import Exit, main
from whichsound.errors import AudioReadError

HOUR = 3600 * SR  # bext TimeReference of 01:00:00:00
CLIP_KEYS = {"path", "duration_s", "samplerate", "channels"}
VERDICT_KEYS = {"stem", "root", "role", "origin", "offset_s", "timecode", "channel", "confidence", "text",
                "residual_share"}
MATCH_KEYS = {"stem", "root", "role", "channel", "offset_s", "timecode", "speed", "score", "share", "confidence"}


def run(*args, cwd=None):
    """`whichsound ARGS` in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, [str(a) for a in args])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        return runner.invoke(main, [str(a) for a in args])


def strict_json(text: str):
    """Parse standard JSON only: NaN and Infinity (Python's json extensions) break other readers."""
    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


def assert_one_line_error(result, *names):
    """Exit 2, one `whichsound: error: ...` line on stderr naming each of `names`, no traceback, no stdout."""
    assert result.exit_code == Exit.ERROR, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("whichsound: error: ")
    for name in names:
        assert str(name) in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def timecode_24(samples: int) -> str:
    """The 24-fps frame label (HH:MM:SS:FF) of a sample count since midnight at 48 kHz, by hand."""
    frames = samples // (SR // 24)
    ff, s = frames % 24, frames // 24
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{ff:02d}"


@pytest.fixture(scope="module")
def delivery(reel, tmp_path_factory):
    """A stems folder laid out like a delivery: dialogue/R1_DX.wav (BWF at 01:00:00:00, 24 fps) and
    music/R1_MX.wav, given to the CLI by the relative path `stems`."""
    base = tmp_path_factory.mktemp("cli")
    stems = base / "stems"
    (stems / "dialogue").mkdir(parents=True)
    write_bwf(stems / "dialogue" / "R1_DX.wav", reel.audio["R1_DX.wav"], SR, time_reference=HOUR,
              fps=Fraction(24))
    write_wav(stems / "music" / "R1_MX.wav", reel.audio["R1_MX.wav"])
    return base


@pytest.fixture(scope="module")
def found(reel, delivery):
    """`locate --json` on a dialogue clip: (clip start in the stem, result, input digests before the run)."""
    start = reel.dx_spans[1][0] + 54_321
    clip = write_wav(delivery / "q_dx.wav", reel.audio["R1_DX.wav"][start : start + SR, 0], subtype="FLOAT")
    before = digests(delivery, reel.reel2)
    result = run("locate", clip.name, "--stems", "stems", "--stems", reel.reel2, "--json", cwd=delivery)
    return start, result, before


def test_json_is_the_only_output_and_has_the_contract_keys(found):
    _, result, _ = found
    assert result.exit_code == Exit.FOUND, result.output
    assert result.stderr == ""
    doc = strict_json(result.stdout)  # nothing but the JSON document on stdout
    assert CLIP_KEYS <= doc["clip"].keys()
    assert VERDICT_KEYS <= doc["verdict"].keys()
    assert doc["matches"] and all(MATCH_KEYS <= m.keys() for m in doc["matches"])
    assert doc["clip"] == {"path": "q_dx.wav", "duration_s": 1.0, "samplerate": SR, "channels": 1}
    assert doc["focus_by"] in ("event", "handles") and len(doc["focus_s"]) == 2


def test_json_verdict_names_the_stem_its_folder_and_its_timecode(found, reel):
    start, result, _ = found
    doc = strict_json(result.stdout)
    v = doc["verdict"]
    assert (v["stem"], v["root"], v["role"], v["origin"], v["channel"]) == (
        "dialogue/R1_DX.wav", "stems", "DX", "production", 0)
    assert v["offset_s"] == pytest.approx(start / SR, abs=1e-6)  # sub-sample (1 sample = 2.1e-5 s)
    assert v["timecode"] == timecode_24(HOUR + start)  # the stem's own clock: bext start + offset
    assert 0.5 < v["confidence"] <= 1.0
    assert 0.0 <= v["residual_share"] < 0.05
    assert "dialogue/R1_DX.wav" in v["text"]
    by_stem = {m["stem"]: m for m in doc["matches"]}
    assert set(by_stem) == {"dialogue/R1_DX.wav", "music/R1_MX.wav", "R2_DX.wav"}
    assert doc["matches"][0]["stem"] == "dialogue/R1_DX.wav"  # best first
    assert by_stem["R2_DX.wav"]["root"] == str(reel.reel2)  # each folder exactly as given
    # No bext of its own, but printed on the DX stem's timeline (same folder and length): it shares its clock.
    assert by_stem["music/R1_MX.wav"]["timecode"] == timecode_24(HOUR + start)
    assert by_stem["dialogue/R1_DX.wav"]["score"] == pytest.approx(1.0, abs=1e-3)
    assert by_stem["dialogue/R1_DX.wav"]["speed"] == 1.0


def test_inputs_are_never_modified(found, delivery, reel):
    _, result, before = found
    assert result.exit_code == Exit.FOUND
    after = digests(delivery, reel.reel2)
    assert after == before  # same files, same bytes, same mtimes; nothing written next to them


def test_clip_in_no_stem_exits_1_with_a_null_stem(small, tmp_path):
    clip = write_wav(tmp_path / "q_none.wav", 0.8 * speech("demo-nogo", "en_f_allison_asterisk")[:SR])
    result = run("locate", clip, "--stems", small / "stems", "--json")
    assert result.exit_code == Exit.NONE, result.output
    v = strict_json(result.stdout)["verdict"]
    assert v["stem"] is None and v["root"] is None and v["offset_s"] is None
    assert v["origin"] == "none"
    assert v["text"].startswith("In no stem")


def test_negative_offset_in_json(reel, tmp_path):
    pre = 12_000  # 0.25 s of the previous shot, then the reel from its first sample
    a = reel.audio
    reel_start = a["R1_DX.wav"][: SR - pre, 0] + 0.5 * a["R1_MX.wav"][: SR - pre].mean(axis=1) \
        + 0.5 * a["R1_BG.wav"][: SR - pre].mean(axis=1)
    clip = np.concatenate([0.1 * load_sound("amb/btanks__city.flac", pre / SR, start_s=4.0), reel_start])
    path = write_wav(tmp_path / "q_pre.wav", clip, subtype="FLOAT")
    result = run("locate", path, "--stems", reel.reel1, "--json")
    assert result.exit_code == Exit.FOUND, result.output
    doc = strict_json(result.stdout)
    assert doc["verdict"]["offset_s"] == pytest.approx(-0.25, abs=1e-6)
    assert all(m["offset_s"] == pytest.approx(-0.25, abs=1e-6) for m in doc["matches"])


def test_table_output_and_top(found, delivery, reel):
    result = run("locate", "q_dx.wav", "--stems", "stems", "--stems", reel.reel2, "--top", "1", cwd=delivery)
    assert result.exit_code == Exit.FOUND, result.output
    out = result.stdout
    assert "R1_DX.wav" in out
    assert "In the dialogue stem dialogue/R1_DX.wav at" in " ".join(out.split())  # the verdict sentence
    assert "R2_DX.wav" not in out  # --top 1: one row only
    assert result.stderr == ""


def test_corrupt_stem_among_good_ones_is_a_warning_and_exit_0(reel, tmp_path):
    stems = tmp_path / "stems"
    shutil.copytree(reel.reel1, stems)
    bad = stems / "R1_FOL.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt \x00" + bytes(20))
    start = reel.dx_spans[0][0] + 30_000
    clip = write_wav(tmp_path / "q.wav", reel.audio["R1_DX.wav"][start : start + SR, 0], subtype="FLOAT")
    result = run("locate", clip, "--stems", stems, "--json")
    assert result.exit_code == Exit.FOUND, result.output
    doc = strict_json(result.stdout)
    assert doc["verdict"]["stem"] == "R1_DX.wav"
    assert len(doc["warnings"]) == 1 and str(bad) in doc["warnings"][0]
    assert "R1_FOL.wav" not in {m["stem"] for m in doc["matches"]}


def test_stream_selects_the_audio_stream_of_a_container(reel, small, tmp_path):
    start = reel.dx_spans[0][0] + 60_000  # inside the 4-s stem of `small`
    other_voice = 0.8 * speech("demo-nogo", "en_f_allison_asterisk")[:SR]
    path = tmp_path / "review_two_mixes.mp4"
    encode_aac(path, [other_voice, reel.audio["R1_DX.wav"][start : start + SR, 0]])
    picked = run("locate", path, "--stems", small / "stems", "--stream", "1", "--json")
    assert picked.exit_code == Exit.FOUND, picked.output
    v = strict_json(picked.stdout)["verdict"]
    assert v["stem"] == "R1_DX.wav"
    assert abs(v["offset_s"] - start / SR) < 1e-3  # AAC: within 1 ms
    default = run("locate", path, "--stems", small / "stems", "--json")  # the first stream: the other voice
    assert default.exit_code == Exit.NONE, default.output


# ---- every bad input: exit 2, one line naming the file, no traceback ---------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory, reel):
    """A folder with one short stem, and a good clip of it, for the error cases."""
    base = tmp_path_factory.mktemp("bad")
    write_wav(base / "stems" / "R1_DX.wav", reel.audio["R1_DX.wav"][: 4 * SR])
    write_wav(base / "good.wav", reel.audio["R1_DX.wav"][SR : 2 * SR, 0])
    return base


def test_missing_clip(small):
    clip = small / "no_such_clip.wav"
    assert_one_line_error(run("locate", clip, "--stems", small / "stems"), clip, "not found")


def test_missing_stems_folder(small):
    folder = small / "no_such_stems"
    assert_one_line_error(run("locate", small / "good.wav", "--stems", small / "stems", "--stems", folder),
                          folder, "not found")


def test_stems_folder_without_audio(small, tmp_path):
    folder = tmp_path / "paperwork"
    folder.mkdir()
    (folder / "cue_sheet.txt").write_text("R1 1m01 ...")
    assert_one_line_error(run("locate", small / "good.wav", "--stems", folder), folder, "no audio files")


def test_stems_given_a_file(small):
    assert_one_line_error(run("locate", small / "good.wav", "--stems", small / "good.wav"), small / "good.wav",
                          "not a folder")


def test_empty_clip(small, tmp_path):
    clip = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    assert_one_line_error(run("locate", clip, "--stems", small / "stems"), clip, "empty")


def test_zero_byte_clip(small, tmp_path):
    clip = tmp_path / "zero.wav"
    clip.write_bytes(b"")
    assert_one_line_error(run("locate", clip, "--stems", small / "stems"), clip)


def test_silent_clip(small, tmp_path):
    clip = write_wav(tmp_path / "silence.wav", np.zeros(SR, np.float32))
    assert_one_line_error(run("locate", clip, "--stems", small / "stems"), clip, "silent")


def test_clip_longer_than_every_stem(small, reel, tmp_path):
    clip = write_wav(tmp_path / "long.wav", reel.audio["R1_DX.wav"][: 5 * SR, 0])  # 5 s > the 4-s stem
    assert_one_line_error(run("locate", clip, "--stems", small / "stems"), clip, "longer than every stem",
                          "R1_DX.wav")


def test_unreadable_container(small, tmp_path):
    clip = tmp_path / "phone_video.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(2).bytes(3000))
    assert_one_line_error(run("locate", clip, "--stems", small / "stems"), clip)


def test_folder_of_only_corrupt_stems(small, tmp_path):
    stems = tmp_path / "stems"
    stems.mkdir()
    bad = stems / "R1_DX.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt \x00" + bytes(20))
    assert_one_line_error(run("locate", small / "good.wav", "--stems", stems), bad)


def test_stream_that_does_not_exist(small, tmp_path, reel):
    clip = tmp_path / "review.m4a"
    encode_aac(clip, [reel.audio["R1_DX.wav"][SR : 2 * SR, 0]], fmt="ipod")
    assert_one_line_error(run("locate", clip, "--stems", small / "stems", "--stream", "3"), clip,
                          "no audio stream 3")


def test_bad_manifest_line(small, tmp_path):
    stems = tmp_path / "stems"
    shutil.copytree(small / "stems", stems)
    manifest = stems / "whichsound-roles.txt"
    manifest.write_text("R1_DX.wav = DX\nR1_FX.wav => FX?\n")
    assert_one_line_error(run("locate", small / "good.wav", "--stems", stems), manifest, "line 2")


def test_at_outside_the_clip(small):
    assert_one_line_error(run("locate", small / "good.wav", "--stems", small / "stems", "--at", "7"), "--at 7")


def test_directory_as_clip_is_a_usage_error(small):
    result = run("locate", small / "stems", "--stems", small / "stems")
    assert result.exit_code == Exit.ERROR
    assert str(small / "stems") in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("band", ["2000", "8000-2000", "low-high"])
def test_bad_band_is_a_usage_error(small, band):
    result = run("locate", small / "good.wav", "--stems", small / "stems", "--band", band)
    assert result.exit_code == Exit.ERROR
    assert f"'{band}'" in result.stderr and "LO" in result.stderr  # the bad value and the expected form
    assert "Traceback" not in result.output


def test_debug_lets_the_error_through(small):
    clip = small / "no_such_clip.wav"
    result = run("--debug", "locate", clip, "--stems", small / "stems")
    assert isinstance(result.exception, AudioReadError)
    assert result.exception.path == clip


def test_unexpected_exception_is_a_one_line_internal_error(small, monkeypatch):
    import whichsound.locate

    def boom(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(whichsound.locate, "locate", boom)
    result = run("locate", small / "good.wav", "--stems", small / "stems")
    assert result.exit_code == Exit.ERROR
    assert result.stderr.splitlines() == [
        "whichsound: internal error: ZeroDivisionError: float division by zero (run with --debug for details)"]


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_clip_with_a_non_finite_sample(reel, small, tmp_path, bad):
    start = reel.dx_spans[0][0] + 30_000  # inside the 4-s stem of `small`
    x = reel.audio["R1_DX.wav"][start : start + SR, 0].copy()
    x[1000] = bad  # one broken sample in a float WAV from a plug-in blow-up
    clip = tmp_path / "q_broken.wav"
    import soundfile as sf

    sf.write(str(clip), x, SR, subtype="FLOAT")
    result = run("locate", clip, "--stems", small / "stems", "--json")
    if result.exit_code == Exit.ERROR:  # refused: a one-line message naming the clip
        assert_one_line_error(result, clip)
    else:  # or searched without the broken sample: the right stem, in standard JSON
        assert result.exit_code == Exit.FOUND, result.output
        assert strict_json(result.stdout)["verdict"]["stem"] == "R1_DX.wav"


def test_stem_with_a_nan_sample_still_gives_standard_json(reel, tmp_path):
    import soundfile as sf

    stems = tmp_path / "stems"
    write_wav(stems / "R1_DX.wav", reel.audio["R1_DX.wav"])
    mx = reel.audio["R1_MX.wav"][: 6 * SR].mean(axis=1)  # mono, another length: its own timeline
    mx[5000] = np.nan  # one broken sample of a float stem
    sf.write(str(stems / "R1_MX_v2.wav"), mx, SR, subtype="FLOAT")
    start = reel.dx_spans[1][0]
    clip = write_wav(tmp_path / "q.wav", reel.audio["R1_DX.wav"][start : start + SR, 0], subtype="FLOAT")
    result = run("locate", clip, "--stems", stems, "--json")
    assert result.exit_code == Exit.FOUND, result.output
    doc = strict_json(result.stdout)
    assert doc["verdict"]["stem"] == "R1_DX.wav"


# ---- entry points ----------------------------------------------------------------------------------------


def test_python_m_whichsound_help():
    proc = subprocess.run([sys.executable, "-m", "whichsound", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "locate" in proc.stdout
    assert proc.stderr == ""


def test_locate_help_lists_the_options():
    result = run("locate", "--help")
    assert result.exit_code == 0
    for opt in ("--stems", "--json", "--top", "--min-score", "--at", "--band", "--stream"):
        assert opt in result.stdout


def test_version_names_the_libraries():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("whichsound ")
    for lib in ("numpy", "scipy", "soundfile"):
        assert lib in result.stdout


@pytest.mark.parametrize("preset", [None, "2"])
def test_the_command_line_keeps_blas_to_one_thread_unless_told(preset):
    # BLAS threads only spin on the library's small products (they doubled a batch's CPU time): the command
    # line sets one thread before numpy loads, and leaves a value the user chose alone.
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    code = ("import sys, os, whichsound.cli; print('numpy' in sys.modules, os.environ['OPENBLAS_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", preset or "1"]


def test_loading_the_command_line_reads_no_package_metadata():
    # --version names the libraries' versions; reading their metadata at import cost every run 45 ms.
    code = "import sys, whichsound.cli; print('importlib.metadata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
