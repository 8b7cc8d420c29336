"""Tests for whichsound.stems: roles from names and folders, the role manifest, discovery of stem files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import SR, load_sound, write_wav
from whichsound.bwf import write_bwf
from whichsound.errors import InputError
from whichsound.stems import MANIFEST_NAME, ROLES, discover, infer_role, origin_of

ROOM = "amb/btanks__forest.flac"


@pytest.fixture(scope="module")
def tone() -> np.ndarray:
    """0.2 s of a real recording: the content of every stem file written here (roles come from names)."""
    return 0.5 * load_sound(ROOM, 0.2, start_s=1.0)


@pytest.mark.parametrize(
    ("rel", "role"),
    [
        ("R1_DX.wav", "DX"),
        ("R1_Dialog.wav", "DX"),
        ("dialogue/R1.wav", "DX"),
        ("dialogue/ADR/line12.wav", "DX"),
        ("R1_ADR.wav", "DX"),
        ("R1_FX.wav", "FX"),
        ("SFX_door_slam.wav", "FX"),
        ("door_SFX.wav", "FX"),
        ("effects/R1.wav", "FX"),
        ("R1_FOL.wav", "FOL"),
        ("Foley/steps_gravel.wav", "FOL"),
        ("R1_BG.wav", "BG"),
        ("AMB_city_night.wav", "BG"),
        ("BGs/R1.wav", "BG"),
        ("R1_MX.wav", "MX"),
        ("MUS_cue_1m01.wav", "MX"),
        ("SCORE/1m01.wav", "MX"),
        ("music/R1.wav", "MX"),
        ("production/12A_T03.wav", "PROD"),
        ("Sound_Rolls/day3/12A_T03.wav", "PROD"),
        ("location/sc12_tk3.wav", "PROD"),
        ("dailies/T004.wav", "PROD"),
        ("FX/R1_DX.wav", "DX"),  # the file's own name beats its folder
        ("mix/printmaster.wav", "OTHER"),
    ],
)
def test_infer_role_from_names_and_folders(rel, role):
    assert infer_role(rel, "/mnt/film/reel1") == role


@pytest.mark.parametrize(("root", "role"), [("/mnt/film/FX", "FX"), ("/mnt/film/FX/", "FX"),
                                           ("/mnt/film/production", "PROD"), ("/mnt/film/stems", "OTHER")])
def test_infer_role_falls_back_to_the_stems_folder_name(root, role):
    assert infer_role("R1.wav", root) == role


@pytest.mark.parametrize(("rel", "role"), [("R1_FX1.wav", "FX"), ("R1_DX2.wav", "DX"), ("R1_BG3.wav", "BG")])
def test_numbered_stems_keep_their_role(rel, role):
    assert infer_role(rel, "/mnt/film/reel1") == role


def test_take_name_with_bwf_scene_and_take_is_production(tmp_path, tone):
    """A recorder file (scene/take in iXML) with a take-like name is a production take in any folder."""
    root = tmp_path / "stems"
    root.mkdir()
    write_bwf(root / "12A_T03.wav", tone, SR, scene="12A", take="3", time_reference=3600 * SR, fps=Fraction(25))
    write_bwf(root / "R1_print.wav", tone, SR, scene="12A", take="3")  # not a take-like name
    found = discover([str(root)])
    roles = {s.rel: s.role for s in found.stems}
    assert roles == {"12A_T03.wav": "PROD", "R1_print.wav": "OTHER"}
    take = next(s for s in found.stems if s.rel == "12A_T03.wav")
    assert (take.scene, take.take, take.time_reference, take.fps) == ("12A", "3", 3600 * SR, Fraction(25))
    assert take.origin == "production"


@pytest.mark.parametrize(("role", "origin"), [("DX", "production"), ("PROD", "production"), ("FX", "post"),
                                              ("FOL", "post"), ("BG", "post"), ("MX", "music"),
                                              ("OTHER", "post"), (None, "none")])
def test_origin_of_each_role(role, origin):
    assert origin_of(role) == origin


# ---- manifest -----------------------------------------------------------------------------------------------


def _tree(root: Path, rels: list[str], audio: np.ndarray) -> None:
    for rel in rels:
        write_wav(root / rel, audio)


def test_manifest_overrides_the_name_heuristics(tmp_path, tone):
    root = tmp_path / "reel1"
    _tree(root, ["R1_DX.wav", "R1_FX.wav", "dialogue/line1.wav", "dialogue/sub/line2.wav", "ADR_7.wav",
                 "R1_MX.wav", "misc.wav"], tone)
    (root / MANIFEST_NAME).write_text(
        "\ufeff# whichsound roles for reel 1\n"  # a BOM, as Windows editors write
        "\n"
        "R1_DX.wav = FX        # the dialogue stem was printed with the effects\n"
        "dialogue/** = MX\n"
        "ADR_*.wav=dialog\n"  # no spaces, an alias
        "R1_MX.wav = Effects\n"  # case-insensitive role names
        "R1_MX.wav = BG\n"  # a later rule for the same file: the first one wins
        "*.wav = take\n",  # catch-all: PROD
        encoding="utf-8",
    )
    roles = {s.rel: s.role for s in discover([str(root)]).stems}
    assert roles == {
        "R1_DX.wav": "FX",
        "R1_FX.wav": "PROD",  # no specific rule: the catch-all beats the name heuristics
        "dialogue/line1.wav": "MX",
        "dialogue/sub/line2.wav": "MX",
        "ADR_7.wav": "DX",
        "R1_MX.wav": "FX",
        "misc.wav": "PROD",
    }


def test_manifest_glob_on_the_file_name_matches_in_subfolders(tmp_path, tone):
    root = tmp_path / "reel1"
    _tree(root, ["a/R1_x.wav", "b/R1_y.wav", "c/other.wav"], tone)
    (root / MANIFEST_NAME).write_text("R1_*.wav = FOL\n")
    roles = {s.rel: s.role for s in discover([str(root)]).stems}
    assert roles == {"a/R1_x.wav": "FOL", "b/R1_y.wav": "FOL", "c/other.wav": "OTHER"}


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("R1_DX.wav = DX\n# fine\nR1_FX.wav FX\n", 3, "expected 'pattern = role'"),
        ("R1_DX.wav = DX\nR1_FX.wav = explosions\n", 2, "unknown role 'explosions'"),
        ("\n\n\n\n= \n", 5, "unknown role"),
    ],
    ids=["no-equals", "unknown-role", "empty-role"],
)
def test_bad_manifest_line_is_an_input_error_naming_the_line(tmp_path, tone, text, line, what):
    root = tmp_path / "reel1"
    _tree(root, ["R1_DX.wav"], tone)
    (root / MANIFEST_NAME).write_text(text)
    with pytest.raises(InputError) as err:
        discover([str(root)])
    msg = str(err.value)
    assert str(root / MANIFEST_NAME) in msg
    assert f"line {line}:" in msg
    assert what in msg
    assert "\n" not in msg


# ---- discovery ----------------------------------------------------------------------------------------------


def test_discover_recurses_sorts_and_ignores_non_audio(tmp_path, tone):
    root = tmp_path / "delivery"
    _tree(root, ["R1_MX.wav", "R1_DX.WAV", "b/R1_BG.wav", "a/deep/er/R1_FOL.wav"], tone)
    stereo = np.stack([tone, -tone], axis=1)
    import soundfile as sf

    sf.write(str(root / "b" / "R1_FX.flac"), stereo, 44100, subtype="PCM_16")
    sf.write(str(root / "b" / "R1_FX_b.aiff"), stereo, 44100, subtype="PCM_24")
    (root / "notes.txt").write_text("R1 delivered 2024-06-11")
    (root / "cue_sheet.pdf").write_bytes(b"%PDF-1.4")
    (root / "a" / "frame.jpg").write_bytes(b"\xff\xd8\xff")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_wav(root / "._R1_MX.wav", tone)  # macOS resource fork: hidden, skipped even with an audio name
    write_wav(root / ".hidden" / "R1_DX.wav", tone)  # hidden folders are not searched

    found = discover([str(root)])
    assert found.warnings == []
    assert [s.rel for s in found.stems] == ["R1_DX.WAV", "R1_MX.wav", "a/deep/er/R1_FOL.wav", "b/R1_BG.wav",
                                            "b/R1_FX.flac", "b/R1_FX_b.aiff"]
    for s in found.stems:
        assert s.root == str(root)  # the folder as given
        assert s.path == root / s.rel
        assert s.role in ROLES
    fx = next(s for s in found.stems if s.rel == "b/R1_FX.flac")
    assert (fx.samplerate, fx.channels, fx.frames, fx.role) == (44100, 2, len(tone), "FX")
    dx = next(s for s in found.stems if s.rel == "R1_DX.WAV")
    assert (dx.samplerate, dx.channels, dx.frames, dx.role) == (SR, 1, len(tone), "DX")


def test_discover_keeps_the_root_as_given_and_finds_each_file_once(tmp_path, tone, monkeypatch):
    _tree(tmp_path / "stems", ["R1_DX.wav", "sub/R1_FX.wav"], tone)
    monkeypatch.chdir(tmp_path)
    found = discover(["stems", str(tmp_path / "stems"), "stems/sub"])  # one folder three ways
    assert [(s.root, s.rel) for s in found.stems] == [("stems", "R1_DX.wav"), ("stems", "sub/R1_FX.wav")]


def test_corrupt_stem_is_a_warning_and_the_others_are_kept(tmp_path, tone):
    root = tmp_path / "reel1"
    _tree(root, ["R1_DX.wav", "R1_MX.wav"], tone)
    (root / "R1_FX.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(40))
    write_wav(root / "R1_BG.wav", np.zeros((0, 2), dtype=np.float32))  # a header and no samples
    found = discover([str(root)])
    assert [s.rel for s in found.stems] == ["R1_DX.wav", "R1_MX.wav"]
    assert len(found.warnings) == 2
    assert str(root / "R1_BG.wav") in found.warnings[0] and "no audio frames" in found.warnings[0]
    assert str(root / "R1_FX.wav") in found.warnings[1]


def test_missing_folder_is_an_input_error_naming_it(tmp_path):
    missing = str(tmp_path / "no_such_reel")
    with pytest.raises(InputError, match="stems folder not found") as err:
        discover([missing])
    assert str(err.value).startswith(missing)


def test_folder_without_audio_is_an_input_error_naming_it(tmp_path, tone):
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "readme.txt").write_text("stems to follow")
    (empty / "R1_DX.wav.txt").write_text("not a wav")
    write_wav(empty / ".hidden" / "R1_DX.wav", tone)
    good = tmp_path / "reel1"
    _tree(good, ["R1_DX.wav"], tone)
    for roots in ([str(empty)], [str(good), str(empty)]):  # one empty folder among good ones is an error too
        with pytest.raises(InputError, match="no audio files") as err:
            discover(roots)
        assert str(err.value).startswith(str(empty))


def test_a_file_given_as_the_stems_folder_is_an_input_error(tmp_path, tone):
    path = write_wav(tmp_path / "R1_DX.wav", tone)
    with pytest.raises(InputError, match="not a folder") as err:
        discover([str(path)])
    assert str(path) in str(err.value)


def test_timeline_key_groups_printed_stems_and_keeps_takes_apart(tmp_path, tone):
    reel = tmp_path / "reel1"
    _tree(reel, ["R1_DX.wav", "R1_FX.wav", "production/12A_T01.wav", "production/12A_T02.wav"], tone)
    write_wav(reel / "R1_MX.wav", np.concatenate([tone, tone]))  # another length: another timeline
    stems = {s.rel: s for s in discover([str(reel)]).stems}
    assert stems["R1_DX.wav"].timeline_key() == stems["R1_FX.wav"].timeline_key()
    assert stems["R1_MX.wav"].timeline_key() != stems["R1_DX.wav"].timeline_key()
    assert stems["production/12A_T01.wav"].timeline_key() != stems["production/12A_T02.wav"].timeline_key()


def test_a_stem_without_bext_joins_its_reel_and_different_starts_split(tmp_path):
    import soundfile as sf

    from whichsound.bwf import write_bwf
    from whichsound.stems import group_timelines

    x = np.zeros((4800, 2), dtype=np.float32)
    x[100] = 0.5
    write_bwf(tmp_path / "R1_DX.wav", x[:, 0], 48000, time_reference=3600 * 48000)
    sf.write(str(tmp_path / "R1_FX.flac"), x, 48000, subtype="PCM_24")  # no bext: same reel
    write_bwf(tmp_path / "R1_MX.wav", x, 48000, time_reference=3600 * 48000)
    write_bwf(tmp_path / "R2_BG.wav", x, 48000, time_reference=7200 * 48000)  # another start: another reel
    stems = discover([str(tmp_path)]).stems
    groups = sorted(sorted(stems[i].rel for i in g) for g in group_timelines(stems).values())
    assert groups == [["R1_DX.wav", "R1_FX.flac", "R1_MX.wav"], ["R2_BG.wav"]]


def test_speakers_come_from_track_names_then_the_channel_mask_then_the_channel_count():
    from whichsound.stems import speakers_of, stereo_fold

    # Film order named in iXML (L C R Ls Rs LFE) wins over the count's default (L R C LFE Ls Rs).
    assert speakers_of(6, ("MX L", "MX C", "MX R", "MX Ls", "MX Rs", "MX LFE")) == ("L", "C", "R", "Ls", "Rs", "LFE")
    # Names that are not speakers say nothing: a poly take's BOOM and LAV fold as two channels, a mono
    # dialogue stem named "DIA" is a centre (a phantom centre in the fold), one named "L" is a left.
    assert speakers_of(2, ("BOOM", "LAV")) == ("L", "R")
    assert np.array_equal(stereo_fold(2, ("BOOM", "LAV")), np.eye(2))
    assert speakers_of(1, ("DIA",)) == ("C",) and speakers_of(1, ("FX.L",)) == ("L",)
    # Unnamed: the WAVE_FORMAT_EXTENSIBLE mask (0x60F: side surrounds), else the count.
    assert speakers_of(6, (), 0x60F) == ("L", "R", "C", "LFE", "Ls", "Rs")
    assert speakers_of(6) == ("L", "R", "C", "LFE", "Lrs", "Rrs")
    assert speakers_of(7) is None
    fold = stereo_fold(6, ("L", "C", "R", "Ls", "Rs", "LFE"))
    g = np.sqrt(0.5)
    assert np.allclose(fold, [[1, 0], [g, g], [0, 1], [g, 0], [0, g], [0, 0]])
    assert np.allclose(stereo_fold(1), [[g, g]])  # a mono stem: a phantom centre
