"""`whichsound index`: builds the analysis index of stem folders, keeps valid entries, reports bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from whichsound.cli import main
from whichsound.index import Index

SCENE = Path(__file__).resolve().parents[1] / "fixtures" / "scene"


def test_index_builds_then_keeps_valid_entries(tmp_path):
    stems = tmp_path / "stems"
    shutil.copytree(SCENE / "stems", stems)
    cache = tmp_path / "cache"
    runner = CliRunner()
    out = runner.invoke(main, ["index", str(stems), "--cache", str(cache), "--jobs", "1"])
    assert out.exit_code == 0, out.output
    assert "indexed 4 of 4 files" in out.stdout
    with Index(cache) as idx:
        first = {e.source.name: e.created for e in idx.entries()}
    assert set(first) == {"R1_DX.wav", "R1_FX.flac", "R1_BG.flac", "R1_MX.flac"}
    out = runner.invoke(main, ["index", str(stems), "--cache", str(cache), "--jobs", "1"])
    assert out.exit_code == 0, out.output
    with Index(cache) as idx:
        again = {e.source.name: e.created for e in idx.entries()}
    assert again == first  # valid entries are kept, not rebuilt


def test_index_names_an_unreadable_file_and_indexes_the_rest(tmp_path):
    stems = tmp_path / "stems"
    shutil.copytree(SCENE / "stems", stems)
    (stems / "R1_BAD.wav").write_bytes(b"RIFF not really a wave file")
    out = CliRunner().invoke(main, ["index", str(stems), "--cache", str(tmp_path / "cache"), "--jobs", "1"])
    assert "R1_BAD.wav" in out.stderr
    assert "indexed 4 of 4 files" in out.stdout  # the corrupt file is a discovery warning, not an entry
