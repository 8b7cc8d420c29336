"""locate and batch over the analysis index: same answers as the full-rate scan, built on first use, a
full-rate fallback when the index's band holds nothing of the clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whichsound.batch import run_batch
from whichsound.index import Index
from whichsound.locate import locate

SCENE = Path(__file__).resolve().parents[1] / "fixtures" / "scene"
TRUTH = json.loads((SCENE / "truth.json").read_text())
ROOTS = [str(SCENE / "stems"), str(SCENE / "production")]
SR = 48000


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("clip", TRUTH["clips"], ids=[c["id"] for c in TRUTH["clips"]])
def test_index_and_full_rate_give_the_same_answer(clip, cache):
    path = SCENE / clip["file"]
    with_index = locate(path, ROOTS, index=str(cache))
    full = locate(path, ROOTS, index=None)
    a, b = with_index.verdict, full.verdict
    assert with_index.index["cache"] == str(cache) and full.index["cache"] is None
    assert (a.match is None) == (b.match is None)
    assert a.origin == b.origin
    if a.match is not None:
        assert a.match.stem.path == b.match.stem.path
        # Both refine the same full-rate correlation peak: the offsets agree to a hundredth of a sample
        # (what is left is float rounding in windows cut at different places).
        assert a.match.offset == pytest.approx(b.match.offset, abs=0.01)
        assert a.match.speed == pytest.approx(b.match.speed, rel=1e-6)
    # Shares come from the same full-rate fit: equal to rounding.
    for rel, share in full.shares.items():
        assert with_index.shares.get(rel, 0.0) == pytest.approx(share, abs=1e-3)


def test_takes_searched_ahead_on_a_spare_thread_give_the_same_answer(cache, monkeypatch):
    # With two search threads the takes' pre-search runs on the spare one while the reel is fitted, and
    # the speed is measured there during the first candidate's fit. The answer must be the one a single
    # thread gives: same take, channel and offset, same shares, same speed.
    import threading

    import whichsound.locate as loc

    path = SCENE / next(c["file"] for c in TRUTH["clips"] if c["id"] == "dx_line_mp3")
    where = []
    real = loc._presearch
    monkeypatch.setattr(loc, "_presearch", lambda sel, *a: where.append(
        (threading.get_ident(), "takes" if sel[0].role == "PROD" else "reel")) or real(sel, *a))
    monkeypatch.setattr(loc, "SEARCH_THREADS", 2)
    two = locate(path, ROOTS, index=str(cache))
    took = {kind: ident for ident, kind in where}
    assert took["takes"] != threading.get_ident()  # the takes' pre-search ran on the spare thread
    assert took["reel"] == threading.get_ident()
    monkeypatch.setattr(loc, "SEARCH_THREADS", 1)
    one = locate(path, ROOTS, index=str(cache))
    a, b = two.verdict, one.verdict
    assert a.match is not None and a.match.stem.path == b.match.stem.path
    assert a.match.offset == b.match.offset and a.match.speed == b.match.speed
    assert a.production is not None and a.production == b.production
    assert two.shares == one.shares
    assert [(m.stem.path, m.channel, m.offset) for m in two.matches] == \
        [(m.stem.path, m.channel, m.offset) for m in one.matches]


def test_a_cold_search_presearches_the_takes_on_the_spare_thread_as_a_warm_one_does(tmp_path, monkeypatch):
    # The first search over a new cache builds the entries, then pre-searches the takes on the spare thread:
    # that thread reads the index's catalog through a connection of its own (an SQLite connection serves only
    # the thread that made it; the takes were once scanned everywhere instead, 13 s of 38 on the bench).
    import threading

    import whichsound.locate as loc

    path = SCENE / next(c["file"] for c in TRUTH["clips"] if c["id"] == "dx_line_mp3")
    got = []
    real = loc._presearch
    monkeypatch.setattr(loc, "_presearch", lambda sel, *a: got.append(
        (sel[0].role, threading.get_ident(), real(sel, *a))) or got[-1][2])
    monkeypatch.setattr(loc, "SEARCH_THREADS", 2)
    cold = locate(path, ROOTS, index=str(tmp_path / "c"))
    takes = [(ident, r) for role, ident, r in got if role == "PROD"]
    assert cold.index["built"] > 0
    assert takes and takes[0][0] != threading.get_ident() and takes[0][1] is not None
    warm = locate(path, ROOTS, index=str(tmp_path / "c"))
    assert warm.index["built"] == 0
    assert cold.verdict.production == warm.verdict.production and cold.shares == warm.shares


def test_index_is_built_on_first_use_and_reused(tmp_path):
    clip = SCENE / "clips" / "fx_door.wav"
    first = locate(clip, ROOTS, index=str(tmp_path / "c"))
    second = locate(clip, ROOTS, index=str(tmp_path / "c"))
    stems = len(list((SCENE / "stems").iterdir())) + len(list((SCENE / "production").iterdir()))
    assert first.index["built"] == stems and first.index["rate"] == 8000
    assert second.index["built"] == 0 and second.index["fallback"] is None
    assert first.verdict.match.stem.path == second.verdict.match.stem.path
    with Index(tmp_path / "c") as idx:
        assert len(idx.entries()) == stems


def test_arrays_removed_under_a_running_process_are_rebuilt_by_its_next_search(tmp_path):
    # Another process's `index --remove` or prune deletes arrays this process already holds entries for:
    # the next search meets the gap, checks the entries again, rebuilds what is gone, and answers the same.
    clip = SCENE / "clips" / "fx_door.wav"
    before = locate(clip, ROOTS, index=str(tmp_path / "c"))
    with Index(tmp_path / "c") as idx:
        for entry in idx.entries():
            entry.array_path.unlink()
    after = locate(clip, ROOTS, index=str(tmp_path / "c"))
    assert after.verdict.match.stem.path == before.verdict.match.stem.path
    # Same full-rate refinement either way: offsets agree to a hundredth of a sample (float rounding).
    assert after.verdict.match.offset == pytest.approx(before.verdict.match.offset, abs=0.01)
    assert not any("searched at full rate" in w for w in after.warnings)  # on the rebuilt entries
    with Index(tmp_path / "c") as idx:
        assert any(e.array_path.is_file() for e in idx.entries())  # what the search used is back


def test_no_index_writes_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WHICHSOUND_CACHE", str(tmp_path / "never"))
    res = locate(SCENE / "clips" / "fx_door.wav", ROOTS, index=None)
    assert res.verdict.match is not None
    assert res.index["fallback"] == "not asked for"
    assert not (tmp_path / "never").exists()


def test_sound_above_the_index_band_falls_back_to_full_rate(tmp_path):
    # A stem of hiss bursts with nothing under 6 kHz (cut in the frequency domain): its 8 kHz copy is silent.
    def above_6k(v: np.ndarray) -> np.ndarray:
        spec = np.fft.rfft(v)
        spec[: int(6000 * len(v) / SR)] = 0.0
        return np.fft.irfft(spec, len(v)).astype(np.float32)

    rng = np.random.default_rng(3)
    n = 20 * SR
    x = np.zeros(n, np.float32)
    starts = rng.integers(SR, n - 2 * SR, size=12)
    for start in starts:
        x[start : start + SR // 4] += rng.standard_normal(SR // 4).astype(np.float32) * 0.2
    x = above_6k(x)
    stems = tmp_path / "stems"
    stems.mkdir()
    sf.write(stems / "R1_FX.wav", x, SR, subtype="FLOAT")
    other = above_6k(rng.standard_normal(n) * 0.01)
    sf.write(stems / "R1_BG.wav", other, SR, subtype="FLOAT")
    at = int(starts[0]) - SR // 4  # a burst 0.25 s into a 1-s clip
    clip = tmp_path / "q.wav"
    sf.write(clip, x[at : at + SR] + other[at : at + SR], SR, subtype="FLOAT")
    res = locate(clip, [str(stems)], index=str(tmp_path / "cache"))
    assert res.index["fallback"] and "full rate" in res.index["fallback"]
    assert res.verdict.match is not None and res.verdict.match.stem.rel == "R1_FX.wav"
    assert res.verdict.match.offset == pytest.approx(at, abs=0.5)  # exact: an unmodified excerpt


def test_batch_indexes_the_stems_once_before_the_notes(tmp_path):
    notes = tmp_path / "notes.csv"
    rows = ["id,tc_in,tc_out,note"]
    fps = int(round(float(TRUTH["fps"])))
    for c in TRUTH["clips"][:3]:
        f = int(c["window_s"][0] * fps)
        rows.append(f"{c['id']},01:00:{f // fps:02d}:{f % fps:02d},,{c['note']}")
    notes.write_text("\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    report = run_batch(notes, ROOTS, mix=str(SCENE / "printmaster.wav"), jobs=1, index=str(cache))
    assert not report.failed
    with Index(cache) as idx:
        indexed = {e.source for e in idx.entries()}
    assert {p.resolve() for p in (SCENE / "stems").iterdir()} <= indexed


def test_timeline_features_streamed_block_by_block_equal_the_whole(tmp_path, monkeypatch):
    # The speed search's features of a timeline are made from its 8 kHz copies a block at a time; with a
    # block of 0.8 s the fixture's stems take many blocks, and the seams must not show.
    import whichsound.align as al
    import whichsound.locate as loc
    from whichsound.align import envelope_features
    from whichsound.stems import discover, group_timelines

    stems = [s for s in discover([str(SCENE / "stems")]).stems]
    members = next(iter(group_timelines(stems).values()))
    idx = Index(tmp_path / "c")
    monkeypatch.setattr(al, "_ENERGY_BLOCK", 80 * 80)
    loc._FEATURES.clear()
    streamed = loc._timeline_features(idx, members, stems)
    arrays = [idx.ensure(stems[m].path).load() for m in members]
    n = min(a.shape[1] for a in arrays)
    whole = envelope_features(sum(np.asarray(a[:, :n], dtype=np.float32).sum(axis=0) for a in arrays))
    loc._FEATURES.clear()
    assert streamed.shape == whole.shape
    # float32 band sums of the same frames in another order: equal to 1e-4 in log-energy steps.
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-4)


# -- the envelope pre-search ------------------------------------------------------------------------------


def _repeated_line_reel(folder: Path) -> tuple[np.ndarray, int]:
    """A 40 s reel whose dialogue uses one line twice (at 5 s and 25 s, another gain), over a bed and
    effects that differ at the two places; returns the printed mix and the sample where the second starts."""
    from conftest import load_sound, sfx, speech

    rng = np.random.default_rng(7)
    n = 40 * SR
    line = speech("sense_and_sensibility_01_austen_64kb-0870")
    dx = np.zeros(n, np.float32)
    dx[5 * SR : 5 * SR + len(line)] += 0.8 * line
    second = 25 * SR
    dx[second : second + len(line)] += 0.5 * line
    other = speech("sense_and_sensibility_01_austen_64kb-0890")
    dx[14 * SR : 14 * SR + len(other)] += 0.8 * other
    bg = 0.12 * np.resize(load_sound("amb/ardentryst__AMB_Intro_4.flac", 20.0, start_s=1.0), n)
    fx = np.zeros(n, np.float32)
    for name in ("scratch__Effects__DoorCreak", "btanks__cow", "scratch__Animal__Rooster"):
        s = 0.5 * sfx(name)[: 3 * SR]
        at = int(rng.integers(0, n - len(s)))
        fx[at : at + len(s)] += s
    for name, data in (("R9_DX.wav", dx), ("R9_BG.wav", bg), ("R9_FX.wav", fx)):
        sf.write(folder / name, data, SR, subtype="FLOAT")
    return dx + bg + fx, second


def test_presearch_keeps_every_place_a_repeated_line_matches(tmp_path, monkeypatch):
    # The line alone matches the dialogue stem as well at its other use; the other stems decide. The
    # pre-search must hand every place it ranks to the fit, not pick one by the loudest stem.
    import whichsound.locate as loc

    stems = tmp_path / "stems"
    stems.mkdir()
    mix, second = _repeated_line_reel(stems)
    start = second - SR // 2
    clip = tmp_path / "clip.wav"
    sf.write(clip, mix[start : start + 3 * SR], SR, subtype="FLOAT")
    handed = []
    real = loc._presearch
    monkeypatch.setattr(loc, "_presearch", lambda *a: handed.append(real(*a)) or handed[-1])
    got = locate(clip, [str(stems)], index=str(tmp_path / "c"))
    dx = [ss for ss in handed[0][0].values() if len(ss) == 1][0][0]  # the mono dialogue stem's scan
    other = 5 * SR - SR // 2  # where the clip would start at the line's first use
    # both uses of the line reach the fit: the dialogue stem's scan peaks at each, equally (same samples
    # at another gain; 1e-3 for float16 copies), far above the windows' noise
    here, there = dx.value_near(start), dx.value_near(other)
    assert there == pytest.approx(here, rel=1e-3) and dx.z_of(there) > 10
    full = locate(clip, [str(stems)], index=None)
    assert got.index["presearch"] == "used"
    assert full.verdict.match.offset == pytest.approx(start, abs=0.5)
    assert got.verdict.match.offset == pytest.approx(full.verdict.match.offset, abs=0.01)
    assert got.verdict.match.stem.path == full.verdict.match.stem.path


def test_presearch_that_points_wrong_falls_back_to_searching_everywhere(tmp_path, monkeypatch):
    import whichsound.locate as loc

    stems = tmp_path / "stems"
    stems.mkdir()
    mix, second = _repeated_line_reel(stems)
    start = 14 * SR + SR // 4  # the other line: one place only
    clip = tmp_path / "clip.wav"
    sf.write(clip, mix[start : start + 2 * SR], SR, subtype="FLOAT")
    # Envelopes that point only at places over 10 s away from the truth (frames of the padded reference)
    monkeypatch.setattr(loc, "envelope_places",
                        lambda ref, c, count, excl, **kw: [(int(f * 100), 0.5) for f in (2.0, 32.0)])
    got = locate(clip, [str(stems)], index=str(tmp_path / "c"))
    assert got.index["presearch"] in ("missed", "explained little: searched everywhere")
    assert got.verdict.match.offset == pytest.approx(start, abs=0.5)


def test_presearch_scans_only_the_best_takes(tmp_path, monkeypatch):
    # Production takes are many: the pre-search scans the few whose envelopes match best and counts the
    # others as searched (they still weigh in the significance test).
    import whichsound.locate as loc
    from conftest import load_sound

    prod = tmp_path / "production"
    prod.mkdir()
    rng = np.random.default_rng(11)
    bed = np.resize(load_sound("amb/btanks__city.flac", 15.0), 30 * SR)
    for k in range(5):  # five takes of other material
        x = 0.2 * np.roll(bed, k * 3 * SR) + 0.01 * rng.standard_normal(len(bed)).astype(np.float32)
        sf.write(prod / f"1A_T0{k + 1}.wav", np.stack([x, 0.7 * x], axis=1), SR, subtype="FLOAT")
    line = _take_with_line(prod / "2B_T01.wav")
    clip = tmp_path / "clip.wav"
    sf.write(clip, line, SR, subtype="FLOAT")
    monkeypatch.setattr(loc, "PRESEARCH_TAKES", 2)
    scanned = []
    real = loc.scan_array
    monkeypatch.setattr(loc, "scan_array", lambda data, *a, **k: scanned.append(data.shape) or real(data, *a, **k))
    got = locate(clip, [str(prod)], index=str(tmp_path / "c"))
    assert got.index["presearch"] == "used"
    assert got.verdict.match.stem.path.name == "2B_T01.wav"
    assert got.verdict.match.offset == pytest.approx(6 * SR, abs=0.5)
    # 2 takes x 2 channels x at most PRESEARCH_PLACES windows each
    assert 0 < len(scanned) <= 2 * loc.PRESEARCH_PLACES


def _take_with_line(path: Path) -> np.ndarray:
    """A 20 s two-channel take with a line at 6 s; returns the line as it sits in channel 1 (3 s)."""
    from conftest import speech

    line = speech("sense_and_sensibility_01_austen_64kb-0880")[: 3 * SR]
    x = np.zeros(20 * SR, np.float32)
    x[6 * SR : 6 * SR + len(line)] = 0.7 * line
    rng = np.random.default_rng(5)
    x += 0.003 * rng.standard_normal(len(x)).astype(np.float32)
    sf.write(path, np.stack([x, 0.6 * x], axis=1), SR, subtype="FLOAT")
    return x[6 * SR : 6 * SR + len(line)]


def test_full_rate_significance_rescores_the_winner_where_the_fit_was_made(tmp_path):
    # A winner not significant at 8 kHz is re-tested on full-rate scans of its own files: its peaks get
    # the z of those scans at its lag, and the critical z is that of as many lags at full rate (6x here).
    import whichsound.locate as loc
    from whichsound.attribute import Decomposition
    from whichsound.audio import read_clip
    from whichsound.stems import discover

    rng = np.random.default_rng(21)
    n = 12 * SR
    x = (0.01 * rng.standard_normal(n)).astype(np.float32)
    burst = (0.3 * rng.standard_normal(SR // 2)).astype(np.float32)
    at = 7 * SR + 123
    x[at : at + len(burst)] += burst
    stems = tmp_path / "stems"
    stems.mkdir()
    sf.write(stems / "R1_FX.wav", x, SR, subtype="FLOAT")
    sf.write(tmp_path / "clip.wav", x[at - SR // 4 : at + SR // 2], SR, subtype="FLOAT")
    stem = discover([str(stems)]).stems[0]
    cache = loc._ClipCache(read_clip(tmp_path / "clip.wav"))
    dec = Decomposition(np.zeros(1), np.zeros((1, 1)), np.zeros(1), np.ones(1), np.ones(1))
    lag = float(at - SR // 4)
    h = loc.Hypothesis(("t",), (stem,), lag, (loc._Peak(0, 0.9, 0.0, int(lag), 0.9),), dec)
    got, zcrit = loc._full_rate_significance(h, cache, None, 100_000, 8000)
    assert zcrit == pytest.approx(loc._z_critical(600_000))
    assert got.peaks[0].z > zcrit  # the burst stands far out of the noise at full rate
    assert got.lag == h.lag and got.peaks[0].ncc == h.peaks[0].ncc  # only the z changes
    # at a lag where the clip is not, the full-rate z stays low
    off = loc.Hypothesis(("t",), (stem,), float(2 * SR), h.peaks, dec)
    assert loc._full_rate_significance(off, cache, None, 100_000, 8000)[0].peaks[0].z < zcrit


def test_fit_significance_sets_the_winners_fit_against_fits_at_random_places(tmp_path):
    # A peak the whitened correlation calls weak can still be where the fit explains the clip: the fit's
    # own test compares its explained share with the same stems fitted at random places.
    import whichsound.locate as loc
    from conftest import sfx, speech
    from whichsound.attribute import decompose
    from whichsound.audio import read_clip
    from whichsound.stems import discover

    rng = np.random.default_rng(4)
    n = 20 * SR
    x = np.zeros(n, np.float32)
    line = 0.5 * speech("sense_and_sensibility_01_austen_64kb-0870")
    x[2 * SR : 2 * SR + len(line)] += line
    engine = 0.4 * sfx("btanks__engine-car")[: SR]
    at = 11 * SR
    x[at : at + len(engine)] += engine
    x += (0.003 * rng.standard_normal(n)).astype(np.float32)
    stems = tmp_path / "stems"
    stems.mkdir()
    sf.write(stems / "R1_DX.wav", x, SR, subtype="FLOAT")
    sf.write(tmp_path / "clip.wav", engine, SR, subtype="FLOAT")
    stem = discover([str(stems)]).stems[0]
    cache = loc._ClipCache(read_clip(tmp_path / "clip.wav"))
    samples, _ = cache.get(SR)

    def hyp(lag: float) -> loc.Hypothesis:
        dec = decompose(samples, [loc._aligned(stem, lag, len(samples))], SR)
        return loc.Hypothesis(("t",), (stem,), lag, (loc._Peak(0, 0.1, 0.0, int(lag), 0.1),), dec)

    right = loc._fit_significance(hyp(float(at)), cache, None)
    wrong = loc._fit_significance(hyp(float(16 * SR)), cache, None)  # the bed alone there
    # the engine is all of the clip at its place and nowhere else: far past any critical z of the scan
    assert right > loc._z_critical(n)
    assert wrong < 3.0  # a place like the random ones


def test_takes_stop_once_one_explains_the_dialogue():
    # Takes only add provenance to a clip a timeline explains: once one take explains as much of the clip as
    # the timeline's dialogue stem (within TAKES_SETTLED_MARGIN), the weaker takes are not fitted. Not while
    # the timeline explains under TAKES_SETTLED_EXPLAINED (a take may then be the source itself), nor when
    # the best take falls short of the dialogue.
    from types import SimpleNamespace

    import whichsound.locate as loc
    from whichsound.attribute import Decomposition

    def hyp(group, roles, parts, resid):
        comp = np.array([parts], dtype=float)
        dec = Decomposition(np.zeros(1), comp, np.array([resid]), np.array([comp.sum() + resid]), np.ones(1))
        return loc.Hypothesis(group, tuple(SimpleNamespace(role=r) for r in roles), 0.0, (), dec)

    reel = hyp(("reel",), ("DX", "FX"), (0.60, 0.35), 0.05)  # explains 0.95; dialogue 0.60 of the clip
    same = hyp(("take", "T1"), ("PROD",), (0.59,), 0.41)
    short = hyp(("take", "T2"), ("PROD",), (0.50,), 0.50)
    assert loc._takes_settled([reel, same])
    assert not loc._takes_settled([reel, short])
    assert not loc._takes_settled([reel])  # no take fitted yet
    weak = hyp(("reel",), ("DX", "FX"), (0.50, 0.30), 0.20)  # explains 0.80: the takes may hold more
    assert not loc._takes_settled([weak, hyp(("take", "T1"), ("PROD",), (0.50,), 0.50)])


# -- the envelope references kept in the index -----------------------------------------------------------


def test_stored_reference_finds_the_places_an_octave_padded_one_found():
    # The stored reference of a timeline is padded for clips up to REFERENCE_FRAMES; a clip's places are
    # those in the range its own octave's padding allowed: the same frames and (to float rounding of an
    # FFT of another length) the same scores as a reference made for that octave.
    import whichsound.locate as loc
    from whichsound.align import envelope_features, envelope_places, envelope_spectrum

    x, _ = sf.read(SCENE / "printmaster.wav", dtype="float32", always_2d=True)
    import soxr

    feats = envelope_features(soxr.resample(x.mean(axis=1), SR, 8000))
    rng = np.random.default_rng(3)
    for m in (37, 300, 512):
        for at in (-m // 3, int(rng.integers(0, len(feats) - m)), len(feats) - m + m // 3):
            lo, hi = max(at, 0), min(at + m, len(feats))
            clip = np.zeros((m, feats.shape[1]), np.float32)
            clip[lo - at : hi - at] = feats[lo:hi]
            clip += 0.05 * rng.standard_normal(clip.shape).astype(np.float32)
            clip -= clip.mean(axis=0)
            octave = 1 << (m - 1).bit_length()
            pad0 = octave // 2
            old = [(k - pad0, v) for k, v in envelope_places(np.pad(feats, ((pad0, pad0), (0, 0))), clip,
                                                            loc.PRESEARCH_PLACES, 50)]
            pad = loc.REFERENCE_FRAMES // 2
            sp = envelope_spectrum(np.pad(feats, ((pad, pad), (0, 0))), loc.REFERENCE_FRAMES)
            new = loc._reference_places(sp, pad, octave, clip, 50)  # what the pre-search uses
            assert [k for k, _ in new] == [k for k, _ in old]
            # scores in [-1, 1] from float32 spectra of different lengths: equal to 1e-5
            np.testing.assert_allclose([v for _, v in new], [v for _, v in old], rtol=0, atol=1e-5)
            assert abs(old[0][0] - at) <= 1  # and the best is the clip's own place


def test_index_command_keeps_the_references_a_later_locate_uses(tmp_path, monkeypatch):
    # `whichsound index` makes each timeline's envelope reference once; a later search (another
    # process: nothing kept in memory) loads it instead of remaking it, with the same answer.
    from click.testing import CliRunner

    import whichsound.locate as loc
    from whichsound.cli import main

    cache = tmp_path / "cache"
    res = CliRunner().invoke(main, ["index", *ROOTS, "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert not list((cache / "derived").glob("*.npz"))  # the scene's timelines are short: made per search
    # The fixture's timelines as long ones: its stems (12 s) and its takes (6 s) all kept, one each.
    monkeypatch.setattr(loc, "REFERENCE_MIN_FRAMES", 500)
    res = CliRunner().invoke(main, ["index", *ROOTS, "--cache", str(cache), "--prune"])  # made after pruning
    assert res.exit_code == 0, res.output
    kept = sorted((cache / "derived").glob("*.npz"))
    from whichsound.stems import discover, group_timelines

    assert len(kept) == len(group_timelines(discover(ROOTS).stems))
    clip = SCENE / TRUTH["clips"][0]["file"]
    loc._REFERENCES.clear()
    made = locate(clip, ROOTS, index=str(cache))
    loc._REFERENCES.clear()
    monkeypatch.setattr(loc, "envelope_spectrum", lambda *a, **k: pytest.fail("reference made again"))
    loaded = locate(clip, ROOTS, index=str(cache))
    assert loaded.index["presearch"] == made.index["presearch"] == "used"
    assert loaded.verdict.text == made.verdict.text
    assert sorted((cache / "derived").glob("*.npz")) == kept


def test_a_take_explaining_the_clip_sends_timelines_the_presearch_missed_to_a_full_search():
    # A noise soloed from its take can be unlike the mix around it: the envelopes point elsewhere in the
    # reel and a chance peak there passes for a find. When a take explains the clip and no timeline fitted
    # where the pre-search pointed does, the timelines must be searched everywhere.
    from types import SimpleNamespace as NS

    import whichsound.locate as loc

    def hyp(group, explained):
        return NS(group=group, decomposition=NS(explained=explained))

    reel, take = ("stems", 48000, 0), ("take", "T01.wav")
    assert loc._timelines_missed([hyp(reel, 0.05), hyp(take, 0.84)])
    assert not loc._timelines_missed([hyp(reel, 0.86), hyp(take, 0.84)])  # the reel holds it: found
    assert not loc._timelines_missed([hyp(reel, 0.05), hyp(take, 0.3)])  # nothing explains: other rule
    assert not loc._timelines_missed([hyp(take, 0.9)])  # takes only: no timeline to search


def test_a_phone_recording_of_the_mix_says_it_was_measured_as_degraded(tmp_path):
    # Four seconds of the fixture's printmaster through a phone held up in a room: the verdict's evidence
    # says the clip was degraded and its stems shared out at the mix's balance; the same excerpt as it is
    # carries no such key (the JSON of a clean clip is unchanged).
    from conftest import SR, phone_in_a_room, write_wav

    mix, sr = sf.read(str(SCENE / "printmaster.wav"), dtype="float32", always_2d=True)
    assert sr == SR
    part = mix[4 * SR : 8 * SR]
    clean = write_wav(tmp_path / "excerpt.wav", part)
    phone = write_wav(tmp_path / "phone.wav", phone_in_a_room(part.mean(axis=1), np.random.default_rng(3))
                      .astype(np.float32))
    res = locate(phone, [str(SCENE / "stems")], index=None)
    assert res.verdict.match is not None
    assert res.verdict.match.offset_s == pytest.approx(4.0, abs=0.002)  # the room's direct sound leads
    got = res.verdict.evidence["degraded"]
    assert set(got) == {"balanced", "tails_decay_s"} and got["balanced"] is True
    assert "degraded" not in locate(clean, [str(SCENE / "stems")], index=None).verdict.evidence
