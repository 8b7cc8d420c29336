"""Tests for `whichsound scan DIR... [--json]`: what whichsound sees in the folders.

Files are written in the test: a recorder-like production take (Broadcast WAV with bext and iXML), plain
soundfile WAV and FLAC files without metadata, and corrupt files. In-process with click's CliRunner.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from whichsound.bwf import write_bwf
from whichsound.cli import Exit, main

SR = 48000
# 14:22:31:07 at 23.976 fps: frames since midnight (24 labels a second), each 1001/24000 s = 2002 samples.
TAKE_FRAMES = ((14 * 60 + 22) * 60 + 31) * 24 + 7
TAKE_TR = TAKE_FRAMES * 2002
# 01:00:00;00 at 29.97 drop-frame is frame 107 892 (108 000 labels less 2 x 54 dropped); a frame lasts
# 1601.6 samples at 48 kHz, so the hour's first whole sample is 172 799 828.
DF_HOUR_TR = 172_799_828


def noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((frames, channels)) * 0.1).astype(np.float32)


def run(*args, cwd=None, env=None):
    """`whichsound ARGS` in-process (optionally in `cwd`); returns click's Result."""
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        if cwd is not None:
            mp.chdir(cwd)
        return runner.invoke(main, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """production/ (a BWF take with bext+iXML, a 29.97 DF take) and stems/ (plain WAV and FLAC, two
    corrupt WAVs, one with ': ' in its name, and a text file that is no audio)."""
    base = tmp_path_factory.mktemp("scan")
    prod = base / "production"
    stems = base / "stems"
    (stems / "music").mkdir(parents=True)
    prod.mkdir()
    write_bwf(prod / "12A_T03.wav", noise(3 * SR, 2), SR, subtype="PCM_24", time_reference=TAKE_TR,
              fps=Fraction(24000, 1001), drop_frame=False, project="FILM", scene="12A", take="3",
              tape="SR004", track_names=["BOOM", "LAV 1"])
    write_bwf(prod / "12A_T04.wav", noise(SR, 1, 1), SR, subtype="PCM_16", time_reference=DF_HOUR_TR,
              fps=Fraction(30000, 1001), drop_frame=True, scene="12A", take="4", track_names=["MIX"])
    sf.write(stems / "R1_FX.wav", noise(2 * SR, 2, 2), SR, subtype="PCM_16")
    sf.write(stems / "music" / "R1_MX.flac", noise(SR // 2, 1, 3), 44100, format="FLAC", subtype="PCM_24")
    (stems / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk" + bytes(64))
    (stems / "odd: name.wav").write_bytes(b"not a wave file at all")
    (stems / "notes.txt").write_text("not audio")
    return base


@pytest.fixture(scope="module")
def listing(folders):
    """`whichsound scan production stems --json` run in the parent folder: (result, document)."""
    result = run("scan", "production", "stems", "--json", cwd=folders)
    return result, json.loads(result.stdout)


def by_path(doc) -> dict:
    return {f["path"]: f for f in doc["files"]}


def test_json_is_the_only_output_and_exit_is_zero(listing):
    result, doc = listing
    assert result.exit_code == Exit.FOUND, result.output
    assert result.stderr == ""
    assert set(doc) == {"files", "unreadable", "summary"}
    assert list(by_path(doc)) == ["12A_T03.wav", "12A_T04.wav", "R1_FX.wav", "music/R1_MX.flac"]


def test_recorder_take_has_its_clock_provenance_and_tracks(listing):
    f = by_path(listing[1])["12A_T03.wav"]
    assert f == {
        "path": "12A_T03.wav", "root": "production", "role": "PROD", "format": "WAV", "subtype": "PCM_24",
        "samplerate": SR, "channels": 2, "frames": 3 * SR, "duration_s": 3.0, "duration": "0:00:03.000",
        "time_reference": TAKE_TR, "timecode": "14:22:31:07", "fps": "23.976", "drop_frame": False,
        "scene": "12A", "take": "3", "tape": "SR004", "tracks": ["BOOM", "LAV 1"], "speakers": ["L", "R"],
    }


def test_drop_frame_take_is_printed_with_semicolon(listing):
    f = by_path(listing[1])["12A_T04.wav"]
    assert (f["timecode"], f["fps"], f["drop_frame"]) == ("01:00:00;00", "29.97 DF", True)
    assert (f["subtype"], f["channels"], f["tracks"]) == ("PCM_16", 1, ["MIX"])


def test_plain_files_have_no_clock_and_no_names(listing):
    files = by_path(listing[1])
    wav, flac = files["R1_FX.wav"], files["music/R1_MX.flac"]
    assert (wav["root"], wav["role"], wav["format"], wav["subtype"]) == ("stems", "FX", "WAV", "PCM_16")
    assert (wav["samplerate"], wav["channels"], wav["duration_s"]) == (SR, 2, 2.0)
    assert (flac["role"], flac["format"], flac["subtype"]) == ("MX", "FLAC", "PCM_24")
    assert (flac["samplerate"], flac["channels"]) == (44100, 1)
    assert flac["duration_s"] == pytest.approx(SR // 2 / 44100, abs=1e-6)
    for f in (wav, flac):
        assert f["timecode"] is None and f["time_reference"] is None
        assert f["fps"] is None and f["drop_frame"] is None
        assert f["scene"] is None and f["take"] is None and f["tape"] is None
        assert f["tracks"] == [None] * f["channels"]


def test_corrupt_files_are_listed_as_unreadable_with_their_problem(listing):
    _, doc = listing
    bad = {u["path"]: u for u in doc["unreadable"]}
    assert set(bad) == {"bad.wav", "odd: name.wav"}  # a ': ' inside the name does not split it
    for u in bad.values():
        assert u["root"] == "stems"
        assert u["problem"].startswith("cannot read audio header")  # the path is split off
    assert "notes.txt" not in json.dumps(doc)  # not audio: not looked at


def test_summary_counts_roles_and_total_duration(listing):
    s = listing[1]["summary"]
    assert s["roles"] == {"PROD": 2, "FX": 1, "MX": 1}
    assert (s["files"], s["unreadable"]) == (4, 2)
    assert s["duration_s"] == pytest.approx(3 + 1 + 2 + SR // 2 / 44100, abs=1e-5)
    assert s["duration"] == "0:00:06.544"


def test_table_shows_each_folder_file_timecode_and_unreadable(folders):
    result = run("scan", "production", "stems", cwd=folders, env={"COLUMNS": "100"})
    assert result.exit_code == Exit.FOUND, result.output
    out = result.stdout
    for text in ("production", "stems", "12A_T03.wav", "R1_FX.wav", "music/R1_MX.flac", "14:22:31:07",
                 "01:00:00;00", "23.976", "29.97 DF", "12A/3", "SR004", "BOOM | LAV 1", "WAV 24", "FLAC 24",
                 "0:00:03.000", "bad.wav", "odd: name.wav", "unreadable"):
        assert text in out, text
    assert out.index("12A_T03.wav") < out.index("R1_FX.wav")  # grouped by folder, in the order given
    assert max(len(line) for line in out.splitlines()) <= 100


def test_missing_folder_is_a_one_line_error(tmp_path):
    result = run("scan", tmp_path / "nowhere")
    assert result.exit_code == Exit.ERROR
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("whichsound: error: ")
    assert "nowhere" in lines[0] and "Traceback" not in result.output
    assert result.stdout == ""


def test_folder_without_audio_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    result = run("scan", tmp_path, "--json")
    assert result.exit_code == Exit.ERROR
    assert len(result.stderr.splitlines()) == 1 and "no audio" in result.stderr
    assert result.stdout == ""


def test_scan_needs_a_folder():
    result = run("scan")
    assert result.exit_code == 2
    assert "DIR" in result.stderr
