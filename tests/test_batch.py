"""Tests for `whichsound batch`: review notes in a CSV against a mix and its stems.

A 12-s reel is built from real recordings (../shared/sounds): dialogue, effects, music and an ambience under
it all, stems in BWF with TimeReference 01:00:00:00 and an iXML frame rate, summed to a mix that also carries a sneeze
that is in no stem. Notes point at known events; the CLI runs in-process (click's CliRunner), with --jobs 1
except for one test of the process pool.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SR, load_sound, sfx, speech, write_wav
from whichsound.batch import DEFAULT_NOTE_S, Note, parse_notes, read_notes, run_batch
from whichsound.bwf import write_bwf
from whichsound.cli import Exit, main
from whichsound.errors import NotesError
from whichsound.report import BATCH_CSV_COLUMNS, batch_row_json
from whichsound.timecode import FrameRate, frames_to_samples, parse_timecode

REEL_S = 12.0
HOUR = 3600 * SR  # 01:00:00:00 at 24 fps (and at 25, 30 ...): samples since midnight
DF_START = 172_799_827  # 01:00:00;00 at 29.97 DF, rounded (the bench README's convention)
FPS24 = FrameRate(24, 1)
FPS2997DF = FrameRate(30000, 1001, True)
LATE = 4000  # samples: 2 frames at 24 fps, how late the "late" stems run against the mix

# (id, origin, stem, start s, end s, note): windows on 24-fps frame boundaries (1/24 s = 2000 samples).
EVENTS = (
    ("N1", "production", "R1_DX.wav", 1.0, 2.0, "line under the door?"),
    ("N2", "post", "R1_FX.wav", 3.5, 4.25, "door creak, keep?"),
    ("N3", "post", "R1_FX.wav", 7.0, 8.0, "what's that animal"),
    ("N4", "none", None, 8.75, 9.5, "sneeze on the stage?"),
    ("N5", "music", "R1_MX.wav", 10.25, 11.25, "sting too loud"),
)


@dataclass
class Scene:
    base: Path
    mix: Path
    stems: Path

    def csv(self, name: str, text: str, encoding: str = "utf-8") -> Path:
        path = self.base / name
        path.write_bytes(text.encode(encoding))
        return path


def _place(track: np.ndarray, sound: np.ndarray, at_s: float, max_s: float) -> None:
    a = int(round(at_s * SR))
    k = min(len(sound), int(round(max_s * SR)), track.shape[0] - a)
    fade = np.minimum(1.0, np.minimum(np.arange(k), np.arange(k)[::-1]) / 480.0).astype(np.float32)
    seg = sound[:k] * fade[:, None] if sound.ndim == 2 else sound[:k] * fade
    track[a : a + k] += seg


def _audio() -> dict[str, np.ndarray]:
    """The stems and the mix (with the sneeze that is in no stem), float32 (n, ch)."""
    n = int(REEL_S * SR)
    dx = np.zeros(n, dtype=np.float32)
    _place(dx, 0.8 * speech("sense_and_sensibility_01_austen_64kb-0870"), 0.3, 2.6)
    _place(dx, 0.8 * speech("sense_and_sensibility_01_austen_64kb-0880"), 4.6, 2.2)
    fx = np.zeros((n, 2), dtype=np.float32)
    _place(fx, 0.7 * sfx("scratch__Effects__DoorCreak")[:, None] * np.array([0.8, 0.5], np.float32), 3.5, 0.75)
    _place(fx, 0.7 * sfx("btanks__cow")[:, None] * np.array([0.4, 0.9], np.float32), 7.0, 1.0)
    mx = np.zeros((n, 2), dtype=np.float32)
    music = load_sound("music/lincity__02_-_Robert_van_Herk_-_City_Blues.flac", 1.5, start_s=20.0, mono=False)
    _place(mx, 0.6 * music, 10.2, 1.5)
    bg = 0.05 * load_sound("amb/ardentryst__AMB_Intro_4.flac", REEL_S, start_s=2.0, mono=False)  # under it all
    sneeze = np.zeros(n, dtype=np.float32)
    _place(sneeze, 0.6 * sfx("scratch__Human__Sneeze-female"), 8.75, 0.75)
    mix = 0.707 * dx[:, None] + fx + mx + bg + sneeze[:, None]
    return {"R1_DX.wav": dx[:, None], "R1_FX.wav": fx, "R1_MX.wav": mx, "R1_BG.wav": bg, "mix": mix}


def _write_scene(base: Path, audio: dict, *, time_reference: int, fps: Fraction, drop_frame: bool = False,
                 shift: int = 0, mix_meta: bool = True) -> Scene:
    """Mix and stems as BWF at `time_reference`; the stems' content `shift` samples later than the mix's."""
    stems = base / "stems"
    stems.mkdir(parents=True)
    for name in ("R1_DX.wav", "R1_FX.wav", "R1_MX.wav", "R1_BG.wav"):
        data = np.roll(audio[name], shift, axis=0)
        write_bwf(stems / name, data, SR, time_reference=time_reference, fps=fps, drop_frame=drop_frame)
    mix = base / "mix.wav"
    if mix_meta:
        write_bwf(mix, audio["mix"], SR, time_reference=time_reference, fps=fps, drop_frame=drop_frame)
    else:
        write_wav(mix, audio["mix"])
    return Scene(base, mix, stems)


@pytest.fixture(scope="module")
def audio():
    return _audio()


@pytest.fixture(scope="module")
def scene(audio, tmp_path_factory) -> Scene:
    return _write_scene(tmp_path_factory.mktemp("batch"), audio, time_reference=HOUR, fps=Fraction(24))


def label24(seconds: float) -> str:
    """The 24-fps label of an instant `seconds` after 01:00:00:00 (on a frame boundary)."""
    from whichsound.timecode import format_timecode

    return format_timecode(86_400 + round(seconds * 24), FPS24)


def notes_csv(events=EVENTS, sep: str = ",", newline: str = "\n") -> str:
    rows = [sep.join(("id", "tc_in", "tc_out", "note"))]
    for eid, _, _, a, b, text in events:
        rows.append(sep.join((eid, label24(a), label24(b), f'"{text}"' if sep in text else text)))
    return newline.join(rows) + newline


def run(*args):
    """`whichsound ARGS` in-process (wide output so that one note is one line); click's Result."""
    return CliRunner(env={"COLUMNS": "240"}).invoke(main, [str(a) for a in args])


def run_batch_cli(scene: Scene, notes: Path, *extra, stems: Path | None = None):
    return run("batch", notes, "--mix", scene.mix, "--stems", stems or scene.stems, "--jobs", 1, *extra)


# --------------------------------------------------------------------------------------- CSV parsing


def test_parse_dialect_bom_crlf_blank_lines_and_header_names():
    text = ("\ufeffNote ID,Start,End,Comment\r\n\r\n"
            "A1,01:00:01:00,01:00:02:00,\"click, under line\"\r\n"
            "\r\n"
            "A2,01:00:03:12,,hum\r\n")
    notes, failures = parse_notes(text)
    assert failures == []
    assert notes == [
        Note(3, "A1", "01:00:01:00", "01:00:02:00", "click, under line", None),
        Note(5, "A2", "01:00:03:12", None, "hum", None),
    ]


def test_parse_semicolon_separator_with_drop_frame_timecodes_quoted_or_not():
    text = ('id;tc_in;tc_out;note\n'
            'D1;"01:00:03;02";"01:00:04;00";quoted DF\n'
            'D2;01:00:05;10;01:00:06;00;unquoted DF split at its ;\n'
            'D3;01:00:07:00;01:00:08:00;plain\n')
    notes, failures = parse_notes(text)
    assert failures == []
    assert [(n.id, n.tc_in, n.tc_out, n.note) for n in notes] == [
        ("D1", "01:00:03;02", "01:00:04;00", "quoted DF"),
        ("D2", "01:00:05;10", "01:00:06;00", "unquoted DF split at its ;"),
        ("D3", "01:00:07:00", "01:00:08:00", "plain"),
    ]


def test_parse_tab_separator_seconds_frames_and_duration_columns():
    text = "in (frames)\tdur\tnotes\n24\t0.5\tframes column\n\n36f\t12f\tframe suffix\n"
    notes, _ = parse_notes(text)
    assert [(n.line, n.id, n.tc_in, n.duration, n.note) for n in notes] == [
        (2, "1", "24f", "0.5", "frames column"),  # bare counts of a frames column become "24f"
        (4, "2", "36f", "12f", "frame suffix"),
    ]
    notes, _ = parse_notes("tc_in_s,tc_out_s\n1.5,2.25\n")
    assert (notes[0].tc_in, notes[0].tc_out) == ("1.5", "2.25")  # seconds (parse_time reads bare numbers so)


def test_parse_a_row_without_in_point_fails_alone_and_multiline_notes_keep_line_numbers():
    text = 'id,tc_in,note\nB1,01:00:01:00,"two\nlines"\nB2,,no in point\nB3,01:00:02:00,ok\n'
    notes, failures = parse_notes(text)
    assert [(n.line, n.id) for n in notes] == [(2, "B1"), (4, "B2"), (5, "B3")]
    assert [(f.line, f.problem) for f in failures] == [(4, "no in point (tc_in)")]
    assert str(failures[0]).startswith("line 4: ")


def test_parse_clip_column():
    notes, failures = parse_notes("file,note\nclips/q1.wav,from the client\n")
    assert failures == [] and notes[0].clip == "clips/q1.wav" and notes[0].tc_in is None


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("\r\n\r\n", "empty"),
    ("id,tc_in,note\n\n", "no notes"),
    ("id,comment\nA,hello\n", "no in-point column"),
])
def test_parse_whole_file_problems_raise_notes_error(text, words):
    with pytest.raises(NotesError, match=words):
        parse_notes(text)


def test_read_notes_missing_file_and_windows_encoding(tmp_path):
    with pytest.raises(NotesError, match="not found"):
        read_notes(tmp_path / "nope.csv")
    p = tmp_path / "cp1252.csv"
    p.write_bytes("id,tc_in,note\nX,01:00:01:00,caf\xe9 noise\n".encode("cp1252"))
    assert read_notes(p)[0][0].note == "caf\u00e9 noise"


# ------------------------------------------------------------------------------------ whole runs


@pytest.fixture(scope="module")
def answered(scene):
    """One CSV run (--out .csv) and one JSON run (--out .json) of the five notes, with their outputs."""
    notes = scene.csv("notes.csv", notes_csv())
    out = scene.base / "out"
    out.mkdir()
    r_csv = run_batch_cli(scene, notes, "--out", out / "report.csv")
    r_json = run_batch_cli(scene, notes, "--out", out / "report.json")
    return out, r_csv, r_json


def test_every_note_gets_the_right_stem_and_the_in_points_offset(answered):
    out, _, r = answered
    assert r.exit_code == Exit.FOUND, r.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [row["id"] for row in doc["rows"]] == [e[0] for e in EVENTS]
    for i, (row, (eid, origin, stem, a, b, text)) in enumerate(zip(doc["rows"], EVENTS, strict=True)):
        v = row["verdict"]
        assert (v["stem"], v["origin"]) == (stem, origin), (eid, v["text"])
        assert row["error"] is None
        assert (row["tc_in"], row["tc_out"], row["note"], row["line"]) == (label24(a), label24(b), text, i + 2)
        assert row["window"]["start_s"] == pytest.approx(a) and row["window"]["end_s"] == pytest.approx(b)
        if stem is not None:
            assert v["offset_s"] == pytest.approx(a, abs=2e-5)  # the in point's place in the stem
            assert v["timecode"] == label24(a)  # the stem's own clock (it shares the mix's)
            # The text names the in point too, not the cut's first sample (a handle earlier).
            assert f"{stem} at {label24(a)} ({v['offset_s']:.3f} s)" in v["text"], v["text"]
            assert row["sync_offset_s"] == pytest.approx(0.0, abs=2e-5) and row["sync"] is None
            assert v["root"] == str(row["matches"][0]["root"])
            assert row["shares"][stem] == max(row["shares"].values())
        else:
            assert v["offset_s"] is None and v["text"].startswith("In no stem")
    s = doc["summary"]
    assert (s["notes"], s["answered"], s["failed"], s["found"], s["none"]) == (5, 5, 0, 4, 1)
    assert s["by_origin"] == {"production": 1, "post": 2, "none": 1, "music": 1}
    assert s["fps"] == "24" and s["mix_start"] == "01:00:00:00" and s["notes_per_second"] > 0


def test_matches_and_verdict_have_locates_keys(answered):
    out, _, _ = answered
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    keys = {"stem", "root", "role", "origin", "offset_s", "timecode", "channel", "confidence", "text",
            "residual_share"}
    for row in doc["rows"]:
        assert keys <= row["verdict"].keys()
        assert row["matches"] and {"stem", "offset_s", "score", "share", "speed"} <= row["matches"][0].keys()
        assert 0.0 <= row["verdict"]["confidence"] <= 1.0


def test_csv_and_json_reports_and_the_terminal_table_agree(answered):
    out, r_csv, r_json = answered
    assert r_csv.exit_code == Exit.FOUND, r_csv.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    with open(out / "report.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == BATCH_CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(doc["rows"]) == len(EVENTS)
    table = {line.split()[0]: line for line in r_csv.stdout.splitlines() if line.split()[:1] in ([e[0]] for e in EVENTS)}
    assert set(table) == {e[0] for e in EVENTS}
    for c, j in zip(rows, doc["rows"], strict=True):
        v = j["verdict"]
        assert (c["id"], c["tc_in"], c["tc_out"], c["note"]) == (j["id"], j["tc_in"], j["tc_out"], j["note"])
        assert c["source stem"] == (v["stem"] or "(none)")
        assert (c["role"], c["origin"], c["stem timecode"]) == (v["role"] or "", v["origin"], v["timecode"] or "")
        assert float(c["confidence"]) == pytest.approx(v["confidence"], abs=0.005)
        assert c["error"] == ""
        line = table[c["id"]]  # the terminal row of this note shows the same answer
        for cell in (c["tc_in"], c["source stem"], c["origin"], c["confidence"]):
            assert cell in line, (cell, line)
        if v["stem"] is not None:
            role = v["role"]
            assert c["shares"].startswith(f"{role} ")  # "DX 0.93; FX 0.01; residual 0.00", largest first
            assert c["offset_s"] and float(c["offset_s"]) == pytest.approx(v["offset_s"], abs=1e-6)
    # the same notes give the same answers in both runs (and the CSV run's table is the JSON run's table)
    assert [ln for ln in r_csv.stdout.splitlines() if ln[:2] in {"N1", "N2", "N3", "N4", "N5"}] == \
        [ln for ln in r_json.stdout.splitlines() if ln[:2] in {"N1", "N2", "N3", "N4", "N5"}]


def test_reports_are_written_atomically_without_leftovers(answered):
    out, _, _ = answered
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.json"]  # no .tmp files


def test_json_flag_prints_only_the_report(scene):
    notes = scene.csv("one.csv", notes_csv(EVENTS[:1]))
    r = run_batch_cli(scene, notes, "--json")
    assert r.exit_code == Exit.FOUND, r.output
    doc = json.loads(r.stdout)
    assert doc["rows"][0]["verdict"]["stem"] == "R1_DX.wav"


def test_a_bad_row_among_good_ones_names_its_line_and_exits_3(scene):
    text = ("id,tc_in,tc_out,note\n"
            f"G1,{label24(3.5)},{label24(4.25)},good\n"
            "B1,01:00:61:00,01:00:62:00,bad seconds\n"
            "B2,02:00:00:00,02:00:01:00,after the mix\n"
            f"B3,{label24(5.0)},{label24(4.0)},out before in\n"
            ",,,\n"
            "B4,not a time,,words\n"
            f"G2,{label24(10.25)},{label24(11.25)},good too\n")
    notes = scene.csv("bad.csv", text)
    out = scene.base / "bad.json"
    r = run_batch_cli(scene, notes, "--out", out)
    assert r.exit_code == 3, r.output
    rows = {row["id"]: row for row in json.loads(out.read_text(encoding="utf-8"))["rows"]}
    assert rows["G1"]["error"] is None and rows["G1"]["verdict"]["stem"] == "R1_FX.wav"
    assert rows["G2"]["error"] is None and rows["G2"]["verdict"]["stem"] == "R1_MX.wav"
    assert rows["B1"]["error"].startswith("line 3: ") and "01:00:61:00" in rows["B1"]["error"]
    assert rows["B2"]["error"].startswith("line 4: ") and "outside the mix" in rows["B2"]["error"]
    assert rows["B3"]["error"].startswith("line 5: ") and "not after" in rows["B3"]["error"]
    assert rows["B4"]["error"].startswith("line 7: ") and "not a time" in rows["B4"]["error"]
    for eid in ("B1", "B2", "B3", "B4"):
        assert rows[eid]["verdict"] is None
        assert rows[eid]["error"] in r.stdout.replace("\n", " ") or rows[eid]["error"][:30] in r.stdout
    summary = json.loads(out.read_text(encoding="utf-8"))["summary"]
    assert summary["failed"] == 4 and summary["failed_lines"] == [3, 4, 5, 7]


def test_unreadable_clip_row_fails_alone_and_a_clip_row_is_located_like_locate(scene, audio):
    start = int(3.6 * SR) + 123
    write_wav(scene.base / "clips" / "q.wav", audio["mix"][start : start + int(0.5 * SR)])
    notes = scene.csv("clips.csv", "id,clip,note\nC1,clips/q.wav,relative to the CSV\nC2,clips/missing.wav,gone\n")
    out = scene.base / "clips.json"
    r = run_batch_cli(scene, notes, "--out", out)
    assert r.exit_code == 3, r.output
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert rows[0]["verdict"]["stem"] == "R1_FX.wav"
    assert rows[0]["verdict"]["offset_s"] == pytest.approx(start / SR, abs=2e-5)
    assert rows[1]["error"].startswith("line 3: ") and "missing.wav" in rows[1]["error"]


def test_seconds_frames_and_in_point_only_notes(scene):
    """Seconds and frames count from the mix's first sample; an in point alone gets DEFAULT_NOTE_S."""
    text = "id,in_s,out_frames,note\nS1,3.5,102,seconds and frames\nS2,1.0,,in point only\n"
    out = scene.base / "units.json"
    r = run_batch_cli(scene, scene.csv("units.csv", text), "--out", out)
    assert r.exit_code == Exit.FOUND, r.output
    s1, s2 = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert (s1["window"]["start_s"], s1["window"]["end_s"]) == (3.5, 4.25)  # 102 frames at 24 fps
    assert s1["verdict"]["stem"] == "R1_FX.wav" and s1["verdict"]["offset_s"] == pytest.approx(3.5, abs=2e-5)
    assert s2["window"]["end_s"] - s2["window"]["start_s"] == pytest.approx(DEFAULT_NOTE_S)
    assert s2["tc_out"] is None and s2["window"]["tc_out"] == label24(3.0)
    assert s2["verdict"]["stem"] == "R1_DX.wav"


def test_html_report_is_refused_before_any_work(scene):
    out = scene.base / "report.html"
    r = run_batch_cli(scene, scene.base / "does-not-matter.csv", "--out", out)
    assert r.exit_code == Exit.ERROR
    assert "HTML reports are not available yet; use .json or .csv" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("case, words", [
    ("missing_csv", "notes file not found"),
    ("no_rows", "no notes"),
    ("no_fps", "no frame rate"),
    ("no_start", "no start timecode"),
    ("bad_fps", "not a frame rate"),
])
def test_whole_file_problems_exit_2_with_one_line(scene, audio, tmp_path, case, words):
    notes = scene.csv("ok.csv", notes_csv(EVENTS[:1]))
    args = ["--stems", scene.stems]
    mix = scene.mix
    if case == "missing_csv":
        notes = tmp_path / "nope.csv"
    elif case == "no_rows":
        notes = scene.csv("empty.csv", "id,tc_in,note\n\n")
    elif case == "no_fps":
        mix = write_bwf_plain(tmp_path / "mix.wav", audio["mix"], fps=None)
    elif case == "no_start":
        mix = write_wav(tmp_path / "mix.wav", audio["mix"])
        args += ["--fps", "24"]
    elif case == "bad_fps":
        args += ["--fps", "twenty"]
    r = run("batch", notes, "--mix", mix, *args)
    assert r.exit_code == Exit.ERROR, r.output
    assert r.stderr.startswith("whichsound: error: ") and words in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.splitlines()) == 1


def write_bwf_plain(path: Path, data: np.ndarray, fps) -> Path:
    write_bwf(path, data, SR, time_reference=HOUR, fps=fps)
    return path


def test_fps_and_start_tc_options_stand_in_for_missing_metadata(scene, audio, tmp_path):
    plain = write_wav(tmp_path / "plain_mix.wav", audio["mix"])  # no bext, no iXML
    notes = scene.csv("fx.csv", notes_csv(EVENTS[1:2]))
    r = run("batch", notes, "--mix", plain, "--stems", scene.stems, "--fps", "24", "--start-tc", "01:00:00:00",
            "--jobs", 1, "--json")
    assert r.exit_code == Exit.FOUND, r.output
    v = json.loads(r.stdout)["rows"][0]["verdict"]
    assert v["stem"] == "R1_FX.wav" and v["offset_s"] == pytest.approx(3.5, abs=2e-5)
    # stems without bext/iXML are taken to start with the mix, and their timecodes are on its clock
    for name in ("R1_FX.wav", "R1_BG.wav"):
        write_wav(tmp_path / "plain_stems" / name, audio[name])
    r = run("batch", notes, "--mix", scene.mix, "--stems", tmp_path / "plain_stems", "--jobs", 1, "--json")
    assert r.exit_code == Exit.FOUND, r.output
    v = json.loads(r.stdout)["rows"][0]["verdict"]
    assert (v["stem"], v["timecode"]) == ("R1_FX.wav", label24(3.5))
    assert v["offset_s"] == pytest.approx(3.5, abs=2e-5)


def test_stems_a_few_frames_late_report_the_sync_offset(audio, tmp_path):
    late = _write_scene(tmp_path, audio, time_reference=HOUR, fps=Fraction(24), shift=LATE)
    notes = late.csv("notes.csv", notes_csv(EVENTS[:3]))
    out = tmp_path / "late.json"
    r = run_batch_cli(late, notes, "--out", out)
    assert r.exit_code == Exit.FOUND, r.output
    for row, (_, _, stem, a, _, _) in zip(json.loads(out.read_text(encoding="utf-8"))["rows"], EVENTS,
                                         strict=False):
        assert row["verdict"]["stem"] == stem
        # the in point's place in the stem: its timecode's place plus the stems' lateness
        assert row["verdict"]["offset_s"] == pytest.approx(a + LATE / SR, abs=2e-5)
        assert row["expected_offset_s"] == pytest.approx(a, abs=1e-9)
        assert row["sync_offset_s"] == pytest.approx(LATE / SR, abs=2e-5)
        assert "83.3 ms" in row["sync"] and "2.0 frames" in row["sync"] and "later" in row["sync"]
    assert "+83.3 ms" in r.stdout and "sync:" in r.stdout


def test_drop_frame_notes_at_2997(audio, tmp_path):
    """Mix and stems at 01:00:00;00 29.97 DF (rate and start from their bext/iXML); notes in DF labels."""
    df = _write_scene(tmp_path, audio, time_reference=DF_START, fps=Fraction(30000, 1001), drop_frame=True)
    labels = [("F1", "01:00:03;15", "01:00:04;07"), ("F2", "01:00:10;08", "01:00:11;08")]
    text = "\r\n".join(["id;tc_in;tc_out;note"] + [f"{i};{a};{b};DF" for i, a, b in labels]) + "\r\n"
    out = tmp_path / "df.csv"
    r = run_batch_cli(df, df.csv("df_notes.csv", "\ufeff" + text), "--out", out)
    assert r.exit_code == Exit.FOUND, r.output
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row, (_, a, _), stem in zip(rows, labels, ("R1_FX.wav", "R1_MX.wav"), strict=True):
        want = frames_to_samples(parse_timecode(a, FPS2997DF), FPS2997DF, SR) - DF_START
        assert row["source stem"] == stem
        assert float(row["offset_s"]) == pytest.approx(want / SR, abs=2e-5)
        assert row["tc_in"] == a and row["stem timecode"] == a


def test_process_pool_gives_the_same_answers(scene, answered):
    out, _, _ = answered
    serial = json.loads((out / "report.json").read_text(encoding="utf-8"))["rows"]  # --jobs 1
    notes = scene.csv("pool.csv", notes_csv(EVENTS[:2]))
    pooled = run_batch(notes, [str(scene.stems)], mix=str(scene.mix), jobs=2)
    assert pooled.jobs == 2
    for a, b in zip(serial, pooled.rows, strict=False):
        assert a["verdict"]["stem"] == b.verdict["stem"]
        assert a["verdict"]["offset_s"] == pytest.approx(b.verdict["offset_s"], abs=1e-9)
        assert a["verdict"]["confidence"] == pytest.approx(b.verdict["confidence"], abs=1e-6)


def test_csv_report_reads_back_in_a_spreadsheet_dialect(answered):
    out, _, _ = answered
    raw = (out / "report.csv").read_bytes()
    assert b"\r\n" in raw and not raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert all(len(r) == len(BATCH_CSV_COLUMNS) for r in rows)


# ------------------------------------------------------------------- a noise under a line, within the marks

UNDER_LINE_FX = ("btanks__engine-car", "minetest__carts__sounds__carts_cart_moving.1", "btanks__fire",
                 "scratch__Effects__DoorCreak")


@pytest.fixture(scope="module")
def line_scene(tmp_path_factory):
    """A line that runs through a 12-frame note (0.5 s), 45 % of its energy in the window's first and last
    75 ms (1.8 frames), and each effect of UNDER_LINE_FX from 75 ms after the in point to 75 ms before the
    out point, at 0.85 of the line's energy over the window: the line holds more of the window, the effect
    more of its own span. One stems folder and mix per effect; a second note over the line alone."""
    line = 0.8 * speech("sense_and_sensibility_01_austen_64kb-0870")
    n = 8 * SR
    dx = np.zeros(n, dtype=np.float32)
    dx[: len(line)] = line
    frame, air, width = SR // 24, int(0.075 * SR), 12 * SR // 24
    cs = np.concatenate([[0.0], np.cumsum(dx.astype(np.float64) ** 2)])

    def margins(f: int) -> float:  # the line's share of the window's energy in its first and last 75 ms
        a, b = f * frame, f * frame + width
        return (cs[a + air] - cs[a] + cs[b] - cs[b - air]) / (cs[b] - cs[a])

    first = min(range(24, 5 * 24), key=lambda f: abs(margins(f) - 0.45))
    a, b = first * frame, first * frame + width
    scenes = {}
    base = tmp_path_factory.mktemp("under_line")
    for name in UNDER_LINE_FX:
        fx = np.zeros(n, dtype=np.float32)
        k = width - 2 * air
        fade = np.minimum(1.0, np.minimum(np.arange(k), np.arange(k)[::-1]) / 240.0).astype(np.float32)
        fx[a + air : b - air] = sfx(name)[:k] * fade
        fx *= np.sqrt(0.85 * np.sum(dx[a:b] ** 2, dtype=np.float64) / np.sum(fx[a:b] ** 2, dtype=np.float64))
        # the truth as built: the line holds more of the window, the effect more of its own span
        assert np.sum(fx[a:b] ** 2) < np.sum(dx[a:b] ** 2)
        assert np.sum(fx[a + air : b - air] ** 2) > 1.4 * np.sum(dx[a + air : b - air] ** 2)
        folder = base / name
        stems = folder / "stems"
        stems.mkdir(parents=True)
        write_bwf(stems / "R1_DX.wav", dx[:, None], SR, time_reference=HOUR, fps=Fraction(24))
        write_bwf(stems / "R1_FX.wav", fx[:, None], SR, time_reference=HOUR, fps=Fraction(24))
        write_bwf(folder / "mix.wav", (dx + fx)[:, None], SR, time_reference=HOUR, fps=Fraction(24))
        lone = first + 24  # a second later: the line alone
        text = (f"id,tc_in,tc_out,note\nN1,{label24(first / 24)},{label24((first + 12) / 24)},under the line?\n"
                f"N2,{label24(lone / 24)},{label24((lone + 12) / 24)},just the line\n")
        (folder / "notes.csv").write_text(text)
        scenes[name] = folder
    return scenes


@pytest.mark.parametrize("name", UNDER_LINE_FX)
def test_the_sound_within_a_notes_marks_is_the_noise_not_the_line_through_them(line_scene, name):
    folder = line_scene[name]
    report = run_batch(folder / "notes.csv", [str(folder / "stems")], mix=str(folder / "mix.wav"), jobs=1,
                       index=None)
    under, lone = report.rows
    assert under.verdict["stem"] == "R1_FX.wav", under.shares
    assert under.focus_by == "event"
    # its span in note time: the effect runs 0.075-0.425 s; STFT frames of 21 ms blur its edges
    assert under.focus_s[0] == pytest.approx(0.075, abs=0.03) and under.focus_s[1] == pytest.approx(0.425, abs=0.03)
    assert lone.verdict["stem"] == "R1_DX.wav" and lone.focus_by == "handles"
    row = json.loads(json.dumps(batch_row_json(under)))
    assert row["focus_by"] == "event" and row["focus_s"] == list(under.focus_s)


def test_over_the_whole_window_the_line_would_win(line_scene, monkeypatch):
    """What the marks' tolerance changes: allowed no air beyond the handles, the effect (75 ms inside the
    marks) is not found as the sound the note is cut around, and the line's larger share of the window wins."""
    import whichsound.batch

    monkeypatch.setattr(whichsound.batch, "MARK_FRAMES", 0)
    folder = line_scene[UNDER_LINE_FX[0]]
    report = run_batch(folder / "notes.csv", [str(folder / "stems")], mix=str(folder / "mix.wav"), jobs=1,
                       index=None)
    assert report.rows[0].focus_by == "handles"
    assert report.rows[0].verdict["stem"] == "R1_DX.wav"


def test_a_dialogue_notes_take_is_named_at_the_in_point(scene, audio, tmp_path):
    """The take that holds a dialogue note's line is named, its offset and the verdict's text at the note's in
    point (not at the cut's first sample, a handle earlier)."""
    prod = tmp_path / "production"
    prod.mkdir()
    take = np.zeros((int(10 * SR), 2), dtype=np.float32)
    take[int(5.0 * SR) - int(0.3 * SR):] += audio["R1_DX.wav"][: int(5.3 * SR)] * np.array([0.9, 0.4], np.float32)
    write_wav(prod / "12A_T03.wav", take)  # no bext: the take's place is given in seconds
    notes = scene.csv("dx_take.csv", notes_csv(EVENTS[:1]))
    report = run_batch(notes, [str(scene.stems), str(prod)], mix=str(scene.mix), fps="24", jobs=1, index=None)
    v = report.rows[0].verdict
    assert v["stem"] == "R1_DX.wav", v["text"]
    # DX's line starts 0.3 s into the stem and 5.0 s into the take: the in point (1.0 s) lies 5.7 s into it;
    # 20 us is a sample's interpolation error
    assert v["production"]["file"] == "12A_T03.wav"
    assert v["production"]["offset_s"] == pytest.approx(5.7, abs=2e-5)
    assert f"In the production recording 12A_T03.wav (channel 1, {v['production']['offset_s']:.3f} s)" in v["text"]
    assert f"R1_DX.wav at {label24(1.0)} ({v['offset_s']:.3f} s)" in v["text"]
