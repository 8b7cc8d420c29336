"""Tests for whichsound.locate.locate(): the right stem, channel and offset among distractor stems.

The stems are the session's `reel` (conftest.py): reel1/ holds a dialogue, a music and an ambience stem
printed on one 12-s timeline, reel2/ the same reader's other lines (a hard distractor), fx51/ a 5.1
effects stem.  Clips are cut from the stems as written, so offsets are known to the sample.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SR, encode_aac, load_sound, rms_db, sfx, speech, write_wav
from whichsound.audio import resample
from whichsound.errors import AudioReadError, ClipError, InputError
from whichsound.locate import locate

# One stem sample is 1/48000 s; a clip cut from a stem without any processing must be found to a small
# fraction of that (the refinement is sub-sample; measured offsets are exact to 1e-5 samples).
SAMPLE_TOL = 0.05


def roots(reel, *extra):
    return [str(reel.reel1), str(reel.reel2), *map(str, extra)]


def write_clip(tmp_path, name, data, samplerate=SR, subtype="FLOAT"):
    return write_wav(tmp_path / name, np.asarray(data, dtype=np.float32), samplerate, subtype=subtype)


def mix_of(reel, start, n, g_mx=0.5, g_bg=0.5):
    """The reel-1 stems summed at [start, start + n): a mono excerpt of the print."""
    a = reel.audio
    return (a["R1_DX.wav"][start : start + n, 0] + g_mx * a["R1_MX.wav"][start : start + n].mean(axis=1)
            + g_bg * a["R1_BG.wav"][start : start + n].mean(axis=1))


@pytest.fixture(scope="module")
def dx_case(reel, tmp_path_factory):
    """A 1-s clip of the second dialogue line, located against reel1 and reel2."""
    start = reel.dx_spans[1][0] + 12_345
    path = write_clip(tmp_path_factory.mktemp("dx"), "q_dx.wav", reel.audio["R1_DX.wav"][start : start + SR, 0])
    return start, locate(path, roots(reel))


def test_dialogue_clip_is_found_in_its_stem_among_distractors(reel, dx_case):
    start, res = dx_case
    v = res.verdict
    assert res.found and v.match is not None
    m = v.match
    assert (m.stem.rel, m.stem.root, m.stem.role, m.channel) == ("R1_DX.wav", str(reel.reel1), "DX", 0)
    assert v.origin == "production"
    assert m.offset == pytest.approx(start, abs=SAMPLE_TOL)
    assert m.offset_s == pytest.approx(start / SR, abs=SAMPLE_TOL / SR)
    assert m.score == pytest.approx(1.0, abs=1e-3)  # an unmodified excerpt
    assert m.share > 0.95 and v.residual_share < 0.05
    assert 0.5 < v.confidence <= 1.0
    assert "R1_DX.wav" in v.text
    assert res.warnings == []


def test_matches_are_one_per_stem_file_best_first(reel, dx_case):
    start, res = dx_case
    rels = [m.stem.rel for m in res.matches]
    assert sorted(rels) == ["R1_BG.wav", "R1_DX.wav", "R1_MX.wav", "R2_DX.wav"]
    assert res.matches[0].stem is res.verdict.match.stem
    other = {m.stem.rel: m for m in res.matches}
    # The same reader's other lines explain nothing of this one (share and NCC near 0).
    assert (other["R2_DX.wav"].share or 0.0) < 0.05 and other["R2_DX.wav"].score < 0.3
    # Stems printed on one timeline share its lag.
    for rel in ("R1_MX.wav", "R1_BG.wav"):
        assert other[rel].offset == pytest.approx(start, abs=SAMPLE_TOL)
        assert other[rel].share < 0.05


def test_clip_of_the_other_reel(reel, tmp_path):
    start = 250_000
    path = write_clip(tmp_path, "q.wav", reel.audio["R2_DX.wav"][start : start + SR, 0])
    res = locate(path, roots(reel))
    m = res.verdict.match
    assert (m.stem.rel, m.stem.root) == ("R2_DX.wav", str(reel.reel2))
    assert m.offset == pytest.approx(start, abs=SAMPLE_TOL)


@pytest.mark.parametrize("channel", [2, 4], ids=["C", "Ls"])
def test_clip_in_a_51_stem_reports_its_channel(reel, tmp_path, channel):
    s, _ = reel.fx_spans[channel][1]  # the second effect of that channel
    start = s + 4_800
    path = write_clip(tmp_path, "q_fx.wav", reel.audio["R1_FX.wav"][start : start + SR, channel])
    res = locate(path, [str(reel.fx51), str(reel.reel1)])
    m = res.verdict.match
    assert (m.stem.rel, m.stem.role, m.channel) == ("R1_FX.wav", "FX", channel)
    assert res.verdict.origin == "post"
    assert m.offset == pytest.approx(start, abs=SAMPLE_TOL)


def test_clip_in_no_stem(reel, tmp_path):
    other_voice = 0.8 * speech("demo-nogo", "en_f_allison_asterisk")[: SR]  # a voice none of the stems has
    path = write_clip(tmp_path, "q_none.wav", other_voice)
    res = locate(path, roots(reel))
    assert not res.found
    assert res.verdict.match is None
    assert res.verdict.origin == "none"
    assert res.verdict.residual_share > 0.5
    assert res.verdict.text.startswith("In no stem")
    assert len(res.matches) == 4  # the candidates are still listed


def test_clip_starting_before_the_reel_has_a_negative_offset(reel, tmp_path):
    pre = 14_400  # 0.3 s of the previous shot's room tone, then the reel from its first sample
    before = 0.1 * load_sound("amb/btanks__city.flac", pre / SR, start_s=4.0)
    path = write_clip(tmp_path, "q_pre.wav", np.concatenate([before, mix_of(reel, 0, SR - pre)]))
    res = locate(path, [str(reel.reel1)])
    m = res.verdict.match
    assert m.stem.root == str(reel.reel1)
    assert m.offset == pytest.approx(-pre, abs=SAMPLE_TOL)
    assert m.offset_s == pytest.approx(-0.3, abs=SAMPLE_TOL / SR)
    for other in res.matches:
        if other.stem.root == str(reel.reel1):
            assert other.offset == pytest.approx(-pre, abs=SAMPLE_TOL)  # one timeline, one lag


def test_clip_running_past_the_end_of_the_reel(reel, tmp_path):
    frames = reel.audio["R1_DX.wav"].shape[0]
    inside = 33_600  # 0.7 s of the reel's end, then 0.3 s of the next shot's room tone
    after = 0.1 * load_sound("amb/btanks__city.flac", (SR - inside) / SR, start_s=9.0)
    path = write_clip(tmp_path, "q_post.wav", np.concatenate([mix_of(reel, frames - inside, inside), after]))
    res = locate(path, [str(reel.reel1)])
    m = res.verdict.match
    assert m.stem.root == str(reel.reel1)
    assert m.offset == pytest.approx(frames - inside, abs=SAMPLE_TOL)


def test_mix_excerpt_shares_follow_the_stems_energies(reel, tmp_path):
    start, n, g = reel.dx_spans[0][0] + 96_000, 72_000, 0.3
    a = reel.audio
    parts = {"R1_DX.wav": a["R1_DX.wav"][start : start + n, 0],
             "R1_MX.wav": g * a["R1_MX.wav"][start : start + n].mean(axis=1),
             "R1_BG.wav": g * a["R1_BG.wav"][start : start + n].mean(axis=1)}
    clip = sum(parts.values())
    path = write_clip(tmp_path, "q_mix.wav", clip)
    res = locate(path, [str(reel.reel1)])
    m = res.verdict.match
    assert (m.stem.rel, m.channel) == ("R1_DX.wav", 0)
    assert m.offset == pytest.approx(start, abs=SAMPLE_TOL)
    # Shares are measured without the 0.25-s handles; the stems are unrelated recordings, so each share is
    # about its energy over the mix's there. The mono clip folds (averages) a stereo mix with the line
    # centred (the same in both channels) and the music and bed as they are; shares describe that mix.
    # 0.03: the fit has one gain per band and channel, and the 21-ms STFT frames at the focus edges reach
    # into the handles (measured deviations <= 0.011).
    focus = slice(SR // 4, n - SR // 4)
    mix = {"R1_DX.wav": np.stack([parts["R1_DX.wav"]] * 2, axis=1),
           "R1_MX.wav": g * a["R1_MX.wav"][start : start + n], "R1_BG.wav": g * a["R1_BG.wav"][start : start + n]}
    assert np.allclose(sum(mix.values()).mean(axis=1), clip, atol=1e-6)
    total = float(np.sum(sum(mix.values())[focus].astype(np.float64) ** 2))
    shares = {mm.stem.rel: mm.share for mm in res.matches}
    for rel, part in mix.items():
        assert shares[rel] == pytest.approx(float(np.sum(part[focus].astype(np.float64) ** 2)) / total, abs=0.03)
    assert res.verdict.residual_share < 0.05


def test_min_score_above_the_peak_means_no_verdict(reel, tmp_path):
    start, n = reel.dx_spans[0][0] + 48_000, SR
    clip = mix_of(reel, start, n, g_mx=1.0, g_bg=1.0)  # dialogue under loud music and ambience
    path = write_clip(tmp_path, "q_low.wav", clip)
    found = locate(path, [str(reel.reel1)], min_score=0.05)  # a threshold under the peak: no effect
    assert found.found and found.verdict.match.stem.rel == "R1_DX.wav"
    score = found.verdict.match.score
    assert 0.1 < score < 0.95
    refused = locate(path, [str(reel.reel1)], min_score=min(score + 0.05, 1.0))
    assert not refused.found and refused.verdict.origin == "none"


def test_stereo_review_copy_at_44k1_is_found_within_a_millisecond(reel, tmp_path):
    start, n = reel.dx_spans[1][0] + 30_000, 72_000
    a = reel.audio
    stereo = a["R1_DX.wav"][start : start + n] + 0.3 * a["R1_MX.wav"][start : start + n]  # (n, 2)
    copy = resample(stereo, SR, 44100)  # a 44.1 kHz 16-bit review copy
    path = write_clip(tmp_path, "review.wav", copy, samplerate=44100, subtype="PCM_16")
    res = locate(path, [str(reel.reel1)])
    m = res.verdict.match
    assert res.clip.samplerate == 44100 and res.clip.channels == 2
    assert m.stem.rel == "R1_DX.wav"
    assert abs(m.offset_s - start / SR) < 1e-3  # the brief's tolerance for resampled copies: 1 ms


def test_aac_review_copy_is_found_within_a_millisecond(reel, tmp_path):
    start, n = reel.dx_spans[0][0] + 20_000, 96_000
    path = tmp_path / "review.m4a"
    encode_aac(path, [reel.audio["R1_DX.wav"][start : start + n, 0]], fmt="ipod")
    res = locate(path, [str(reel.reel1)])
    m = res.verdict.match
    assert m.stem.rel == "R1_DX.wav"
    # The MP4 edit list removes AAC's priming delay; 1 ms leaves room for a decoder that does not.
    assert abs(m.offset_s - start / SR) < 1e-3


def test_phone_recording_at_8k_is_found_within_a_millisecond(reel, tmp_path):
    start = reel.dx_spans[0][0] + 150_000
    phone = resample(reel.audio["R1_DX.wav"][start : start + 2 * SR], SR, 8000)  # 4 kHz bandwidth
    path = write_clip(tmp_path, "phone.wav", phone, samplerate=8000, subtype="PCM_16")
    res = locate(path, [str(reel.reel1)])
    m = res.verdict.match
    assert m.stem.rel == "R1_DX.wav"
    assert abs(m.offset_s - start / SR) < 1e-3  # resampled twice (to 8 kHz and back): 1 ms


def test_polarity_inverted_copy_is_aligned_sample_exact(reel, tmp_path):
    start = reel.dx_spans[1][0] + 12_345
    path = write_clip(tmp_path, "q_inv.wav", -reel.audio["R1_DX.wav"][start : start + SR, 0])
    res = locate(path, [str(reel.reel1)])
    assert res.verdict.match is not None and res.verdict.match.stem.rel == "R1_DX.wav"
    assert res.verdict.match.offset == pytest.approx(start, abs=0.5)


def test_stem_at_44k1_reports_offset_in_its_own_samples(reel, tmp_path):
    folder = tmp_path / "stems441"
    write_wav(folder / "R1_DX.wav", resample(reel.audio["R1_DX.wav"], SR, 44100), 44100)
    start = reel.dx_spans[1][0] + 5_000
    path = write_clip(tmp_path, "q.wav", reel.audio["R1_DX.wav"][start : start + SR, 0])
    res = locate(path, [str(folder)])
    m = res.verdict.match
    assert m.stem.samplerate == 44100
    assert abs(m.offset_s - start / SR) < 1e-3
    assert m.offset == pytest.approx(start * 44100 / SR, abs=44.1)  # in the stem's samples, within 1 ms


def test_corrupt_stem_is_a_warning_and_the_others_are_searched(reel, tmp_path):
    folder = tmp_path / "reel1"
    shutil.copytree(reel.reel1, folder)
    bad = folder / "R1_FOL.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt \x00" + bytes(20))
    start = reel.dx_spans[0][0] + 10_000
    path = write_clip(tmp_path, "q.wav", reel.audio["R1_DX.wav"][start : start + SR, 0])
    res = locate(path, [str(folder)])
    assert res.verdict.match.stem.rel == "R1_DX.wav"
    assert len(res.warnings) == 1 and str(bad) in res.warnings[0]


# ---- clips that cannot be searched: raised before any scan -------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: np.zeros(0, np.float32), "empty"),
        (lambda: np.zeros(SR, np.float32), "silent"),
        (lambda: np.full(SR, 3e-6, np.float32), "silent"),  # below -100 dBFS
        (lambda: 0.5 * speech("demo-nogo", "en_f_allison_asterisk")[:480], "too short"),  # 10 ms
    ],
    ids=["empty", "digital-silence", "below-100-dBFS", "10-ms"],
)
def test_unsearchable_clip_is_a_clip_error_naming_it(reel, tmp_path, make, match):
    path = write_clip(tmp_path, "q.wav", make())
    with pytest.raises(ClipError, match=match) as err:
        locate(path, roots(reel))
    assert str(path) in str(err.value)


def test_clip_longer_than_every_stem(reel, tmp_path):
    long = np.tile(reel.audio["R2_DX.wav"][:, 0], 2)[: 13 * SR]  # 13 s > 12 s, the longest stem
    path = write_clip(tmp_path, "q_long.wav", long)
    with pytest.raises(ClipError, match="longer than every stem") as err:
        locate(path, roots(reel))
    assert str(path) in str(err.value)


def test_at_outside_the_clip_is_an_input_error(reel, tmp_path):
    path = write_clip(tmp_path, "q.wav", reel.audio["R1_DX.wav"][100_000 : 100_000 + SR, 0])
    with pytest.raises(InputError, match="--at 1.5 s lies outside the clip"):
        locate(path, roots(reel), at=1.5)


def test_missing_clip_is_an_audio_read_error(reel, tmp_path):
    with pytest.raises(AudioReadError, match="not found") as err:
        locate(tmp_path / "gone.wav", roots(reel))
    assert err.value.path == tmp_path / "gone.wav"


def test_only_the_strongest_takes_are_fitted():
    # Six takes all correlate (a scene's takes repeat its lines): only the MAX_TAKE_FITS strongest are
    # fitted; the stems' timeline always is.
    from whichsound.align import ChannelScan
    from whichsound.locate import MAX_TAKE_FITS, _significant_groups

    def scan(best: float) -> list[ChannelScan]:  # noise mean 0, spread 0.01: z = best / 0.01
        return [ChannelScan(0, 0, 16, np.array([best], np.float32), sum_c=0.0, sum_c2=0.1, count=1000, best=best)]

    groups = {("stems", 48000, 1): [0], **{("take", f"T{i}"): [i + 1] for i in range(6)}}
    scans = {0: scan(0.5), **{i + 1: scan(0.1 + 0.05 * i) for i in range(6)}}
    got = _significant_groups(groups, scans, 5.0)
    assert ("stems", 48000, 1) in got
    assert {k for k in got if k[0] == "take"} == {("take", f"T{i}") for i in range(6 - MAX_TAKE_FITS, 6)}


def test_search_threads_keep_order_run_nested_maps_inline_and_raise(monkeypatch):
    # Candidates are refined and fitted over two threads: the answers must come back in the candidates'
    # order, a map inside a map (a fit inside a candidate) must not wait on the pool it runs in, and a
    # failure must reach the caller.
    import threading

    from whichsound import locate as loc

    monkeypatch.setattr(loc, "SEARCH_THREADS", 2)
    main = threading.get_ident()
    inner_threads = []

    def outer(i):
        inner_threads.append({threading.get_ident()} | set(loc._pmap(lambda _: threading.get_ident(), range(3))))
        return i * i

    assert loc._pmap(outer, range(8)) == [i * i for i in range(8)]
    assert all(len(t) == 1 for t in inner_threads)  # each nested map ran in its caller's thread
    assert any(main not in t for t in inner_threads)  # and the outer one did use the pool

    def boom(i):
        if i == 3:
            raise ValueError("candidate 3")
        return i

    with pytest.raises(ValueError, match="candidate 3"):
        loc._pmap(boom, range(5))
    # A long clip's candidates run one at a time, in the caller's thread (two would hold two sets of
    # full-length transforms).
    assert set(loc._pmap(lambda _: threading.get_ident(), range(4), parallel=False)) == {main}


def test_work_ahead_runs_on_the_spare_thread_and_gives_what_the_caller_would_have_met(monkeypatch):
    # _Ahead works out a likely next result on a spare search thread. Its value must be fn()'s, its
    # failure must reach the caller where it asks, a dropped one that has not started must never run, and
    # with one search thread (batch's workers) nothing runs until it is asked for, in the caller's thread.
    import threading

    from whichsound import locate as loc

    main = threading.get_ident()
    monkeypatch.setattr(loc, "SEARCH_THREADS", 2)
    assert loc._Ahead(threading.get_ident).value() != main
    assert loc._Ahead(lambda: [7, 8]).value() == [7, 8]

    def boom():
        raise ValueError("ahead")

    early = loc._Ahead(boom)
    with pytest.raises(ValueError, match="ahead"):
        early.value()
    # Work ahead runs in the order it was started, on the spare thread: a second piece waits for the
    # first. Dropped while it waits, it never runs.
    release = threading.Event()
    order = []
    first = loc._Ahead(lambda: release.wait(10) and order.append("first"))
    queued = loc._Ahead(lambda: order.append("queued"))
    queued.drop()
    later = loc._Ahead(lambda: order.append("later"))
    release.set()
    first.value()
    later.value()
    assert order == ["first", "later"]

    monkeypatch.setattr(loc, "SEARCH_THREADS", 1)
    calls = []
    lazy = loc._Ahead(lambda: calls.append(threading.get_ident()) or 5)
    assert calls == []
    assert lazy.value() == 5 and calls == [main]


def test_a_narrow_sound_heard_alone_is_found_by_the_second_look(tmp_path, monkeypatch):
    # A bird call 5 dB over a line of dialogue in the dialogue stem; the questioned clip is the bird alone.
    # Whitened 50 dB deep, the correlation weighs the line (strong where the bird is weak) far above the
    # bird and finds nothing: "in no stem" (checked with the second look switched off). Whitened 20 dB
    # deep it finds the bird, and the clip lies under the stem there: the dialogue stem, at the bird's
    # place (1 ms), with index.second_look saying how it was found.
    from whichsound import locate as loc

    rng = np.random.default_rng(3)
    n = 8 * SR
    line = np.zeros(n, dtype=np.float32)
    words = 0.3 * speech("sense_and_sensibility_01_austen_64kb-0870")
    line[: min(n, len(words))] = words[:n]
    bird = sfx("scratch__Animal__Bird")
    at = 4 * SR
    part = np.zeros(n, dtype=np.float32)
    part[at : at + len(bird)] = bird

    def db(x):
        return 10 * np.log10(np.mean(np.asarray(x, dtype=np.float64) ** 2))

    window = slice(at, at + len(bird))
    part *= np.float32(10 ** ((db(line[window]) + 5 - db(part[window])) / 20))
    stems = tmp_path / "stems"
    write_wav(stems / "R1_DX.wav", line + part)
    write_wav(stems / "R1_BG.wav", (0.01 * rng.standard_normal(n)).astype(np.float32))
    clip = write_wav(tmp_path / "bird.wav", part[at - SR // 10 : at + len(bird) + SR // 10])

    res = locate(clip, [str(stems)])
    assert res.verdict.match is not None and res.verdict.match.stem.rel == "R1_DX.wav"
    assert res.verdict.match.offset_s == pytest.approx((at - SR // 10) / SR, abs=0.001)
    assert "second_look" in res.index
    monkeypatch.setattr(loc, "SHALLOW_WHITENING_DB", loc.WHITENING_DB)
    assert locate(clip, [str(stems)]).verdict.match is None


def test_a_sound_heard_alone_names_the_channel_that_holds_it(tmp_path):
    # A two-channel effects stem: channel 0 holds a helicopter under city traffic 5 dB over it, channel 1
    # the same helicopter high-passed at 4 kHz. The clip (the helicopter alone, as a soloed channel 0
    # gives it) lies under channel 0 cell by cell (0.05 at most beyond it); channel 1 lacks its low
    # band, most of its energy. The containment test names channel 0, the channel the verdict then reports.
    from types import SimpleNamespace

    import scipy.signal as ss

    from whichsound.audio import read_clip
    from whichsound.locate import CONTAINED_OVER, _ClipCache, _contained
    from whichsound.stems import discover

    n, at, dur = 10 * SR, 5 * SR, 2 * SR
    heli = np.zeros(n, np.float32)
    heli[at : at + dur] = sfx("btanks__helicopter")[:dur]
    city = np.zeros(n, np.float32)
    city[4 * SR : 8 * SR] = load_sound("amb/btanks__city.flac", 4.0, start_s=1.0)[: 4 * SR]
    city *= np.float32(10 ** ((rms_db(heli[at : at + dur]) + 5 - rms_db(city[at : at + dur])) / 20))
    high = ss.sosfilt(ss.butter(8, 4000, "highpass", fs=SR, output="sos"), heli).astype(np.float32)
    folder = tmp_path / "reel"
    folder.mkdir()
    write_wav(folder / "R1_FX.wav", 0.3 * np.stack([heli + city, high], axis=1))
    start = at - SR // 4
    write_wav(tmp_path / "heli.wav", 0.3 * heli[start : at + dur + SR // 4])

    (stem,) = discover([str(folder)]).stems
    cache = _ClipCache(read_clip(tmp_path / "heli.wav"))
    frames = cache.stft(SR).shape[1]  # (bands, frames, channels)
    hyp = SimpleNamespace(stems=(stem,), peaks=(SimpleNamespace(z=50.0),), lag=float(start), speed=1.0, pitch_kept=False,
                          decomposition=SimpleNamespace(weights=np.ones(frames)))
    got = _contained([hyp], cache, zcrit=5.0)
    assert got is not None and got.stem is stem
    assert got.channel == 0 and got.beyond <= CONTAINED_OVER


def test_a_mono_copy_of_a_51_mix_is_shared_out_by_the_stems_named_speakers(tmp_path):
    # A line (mono dialogue stem) and a rain bed in a 5.1 backgrounds stem in film order (L C R Ls Rs LFE,
    # named so in iXML): the bed in L/R, a little of their sum in C, another stretch in the surrounds. The
    # print is the ITU fold to stereo, line and bed about equal there; the clip is its mono copy. The shares
    # follow the stereo fold when the bed's channels are folded as their names say: read in the WAV order
    # (L R C LFE Ls Rs) the centre would count as a right channel and the LFE as a surround.
    from whichsound.bwf import write_bwf
    from whichsound.stems import stereo_fold

    n = 10 * SR
    line = np.zeros(n, dtype=np.float32)
    words = speech("sense_and_sensibility_01_austen_64kb-0870")[: n - SR]
    line[SR // 2 : SR // 2 + len(words)] = words
    bed = load_sound("amb/ardentryst__Rain_Loop.flac", 10.0, start_s=0.5, mono=False)
    back = load_sound("amb/ardentryst__Rain_Loop.flac", 10.0, start_s=10.0, mono=False)
    names = ("BG L", "BG C", "BG R", "BG Ls", "BG Rs", "BG LFE")
    bg = np.stack([bed[:, 0], 0.4 * (bed[:, 0] + bed[:, 1]), bed[:, 1], 0.5 * back[:, 0], 0.5 * back[:, 1],
                   0.3 * bed.mean(axis=1)], axis=1).astype(np.float32)
    fold = stereo_fold(6, names).astype(np.float32)
    centre = line[:, None] * np.float32(np.sqrt(0.5)) * np.ones((1, 2), np.float32)

    def energy(x):
        return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))

    bg *= np.float32(np.sqrt(energy(centre) / energy(bg @ fold)))
    stems = tmp_path / "stems"
    stems.mkdir()
    write_bwf(stems / "R1_DX.wav", line[:, None], SR, track_names=["DX"])
    write_bwf(stems / "R1_BG.wav", bg, SR, track_names=list(names))
    a, b = 3 * SR, 3 * SR + int(2.5 * SR)
    mix = centre + bg @ fold
    clip = write_wav(tmp_path / "mono.wav", mix[a:b].mean(axis=1) * np.float32(0.8))
    res = locate(clip, [str(stems)], index=None)
    shares = {m.stem.rel: m.share for m in res.matches}
    focus = slice(a + SR // 4, b - SR // 4)  # shares are measured without the 0.25-s handles
    total = energy(mix[focus])
    truth = {"R1_DX.wav": energy(centre[focus]) / total, "R1_BG.wav": energy((bg @ fold)[focus]) / total}
    # Measured 0.004 off for each (deterministic signals); 0.01 leaves room for the fit's rounding.
    for rel, share in truth.items():
        assert shares[rel] == pytest.approx(share, abs=0.01)
    # The same stem unnamed, read in the WAV order, is folded wrong: the bed 0.418 against 0.440.
    write_bwf(stems / "R1_BG.wav", bg, SR)
    unnamed = {m.stem.rel: m.share for m in locate(clip, [str(stems)], index=None).matches}
    assert abs(unnamed["R1_BG.wav"] - truth["R1_BG.wav"]) > 0.015


def _recurring_line_reel(tmp_path) -> tuple[Path, int, np.ndarray]:
    """A dialogue stem that uses one line three times (at 2, 8 and 14 s) over effects and a bed that differ
    each time: (stems folder, the third place in samples, the print)."""
    rng = np.random.default_rng(11)
    n = 20 * SR
    line = 0.3 * speech("sense_and_sensibility_01_austen_64kb-0870")[: 3 * SR]
    dx = np.zeros(n, dtype=np.float32)
    for at in (2 * SR, 8 * SR, 14 * SR):
        dx[at : at + len(line)] = line
    fx = np.zeros((n, 2), dtype=np.float32)
    knock = sfx("minetest__default__sounds__default_place_node_hard.2")
    for at in (3 * SR, 9 * SR + SR // 3, 15 * SR + SR // 2):  # a knock under each use, never at one place
        fx[at : at + len(knock)] += 0.1 * knock[:, None] * np.array([0.8, 0.5], dtype=np.float32)
    bg = (0.004 * rng.standard_normal((n, 2))).astype(np.float32)
    stems = tmp_path / "stems"
    write_wav(stems / "R1_DX.wav", dx)
    write_wav(stems / "R1_FX.wav", fx)
    write_wav(stems / "R1_BG.wav", bg)
    print_ = dx[:, None] * np.float32(0.7071) + fx + bg
    return stems, 14 * SR, print_


def test_material_used_again_is_placed_where_every_stem_agrees(tmp_path, monkeypatch):
    # The line correlates alike at its three uses; the knock and the bed agree only at the third. At full
    # rate the candidates are ordered by that joint evidence: the first fitted explains the clip exactly
    # (an excerpt of the print), so the other two are not fitted. With a noise the print does not hold
    # (the fit no longer exact) every candidate is fitted, and the place is the same.
    from whichsound import locate as loc

    stems, place, print_ = _recurring_line_reel(tmp_path)
    fits: list[float] = []
    real_fit = loc._fit

    def counted(key, *args, **kwargs):
        hyp = real_fit(key, *args, **kwargs)
        if key[:1] != ("take",):
            fits.append(hyp.decomposition.explained)
        return hyp

    monkeypatch.setattr(loc, "_fit", counted)
    start = place - SR // 4
    excerpt = print_[start : start + 3 * SR]
    res = locate(write_clip(tmp_path, "excerpt.wav", excerpt), [str(stems)])
    assert res.verdict.match is not None and res.verdict.match.stem.rel == "R1_DX.wav"
    assert res.verdict.match.offset / SR == pytest.approx(start / SR, abs=SAMPLE_TOL / SR)
    assert len(fits) == 1 and fits[0] >= 1 - loc.EXACT_RESIDUAL

    fits.clear()
    hiss = (0.01 * np.random.default_rng(5).standard_normal(excerpt.shape)).astype(np.float32)
    res = locate(write_clip(tmp_path, "hiss.wav", excerpt + hiss), [str(stems)])
    assert res.verdict.match is not None
    assert res.verdict.match.offset / SR == pytest.approx(start / SR, abs=SAMPLE_TOL / SR)
    assert len(fits) >= 3 and max(fits) < 1 - loc.EXACT_RESIDUAL


def test_a_stem_whose_channels_changed_since_discovery_is_named(tmp_path):
    # The fit lines the stems' channels up by the counts discovery saw; a file rewritten with another
    # count in between must be an AudioReadError naming it, at an integer lag and a fractional one alike.
    from dataclasses import replace

    from whichsound import locate as loc
    from whichsound.stems import discover

    write_wav(tmp_path / "stems" / "R1_FX.wav", np.zeros((SR, 1), dtype=np.float32))
    stem = discover([str(tmp_path / "stems")]).stems[0]
    assert loc._aligned_all([stem], 100.5, 1000)[0].shape == (1000, 1)
    wrong = replace(stem, channels=2)
    for lag in (100.0, 100.5):
        with pytest.raises(AudioReadError, match="R1_FX.wav.*1 channels, 2 when it was discovered"):
            loc._aligned_all([wrong], lag, 1000)


def test_a_degraded_clip_the_stems_cannot_shape_into_is_in_no_stem(tmp_path):
    # The residual is the clip's own floor in every frame (no excess over it), so the other rules keep the
    # top stem; a degraded copy whose stems, shaped frame by frame, still leave NONE_UNSHAPED of it is in
    # no stem. Not under the threshold, nor for a clip decompose did not measure (not degraded).
    from dataclasses import replace

    import whichsound.locate as loc
    from whichsound.attribute import Decomposition, Match
    from whichsound.stems import discover

    for name in ("R1_DX.wav", "R1_FX.wav"):
        write_wav(tmp_path / name, np.zeros(SR, np.float32))
    stems = tuple(sorted(discover([str(tmp_path)]).stems, key=lambda s: s.rel))
    frames = 100
    comp = np.tile([0.6, 0.1], (frames, 1))
    dec = Decomposition(np.arange(frames) * 0.01, comp, np.full(frames, 0.3), np.ones(frames), np.ones(frames),
                        degraded={"balanced": True, "tails_decay_s": None}, unshaped=loc.NONE_UNSHAPED + 0.02)
    matches = [Match(st, 0, 0.0, 0.5, 20.0, share=sh) for st, sh in zip(stems, (0.6, 0.1), strict=True)]

    def verdict(d):
        h = loc.Hypothesis(("reel",), stems, 0.0, (), d)
        return loc._verdict(h, matches, 8.0, None)

    v = verdict(dec)
    assert v.match is None and v.origin == "none"
    assert v.evidence["unshaped"] == pytest.approx(loc.NONE_UNSHAPED + 0.02)
    assert "frame by frame" in v.text
    assert verdict(replace(dec, unshaped=loc.NONE_UNSHAPED - 0.02)).match.stem.rel == "R1_DX.wav"
    kept = verdict(replace(dec, unshaped=None))  # as decompose leaves a clip that is not degraded
    assert kept.match.stem.rel == "R1_DX.wav" and "unshaped" not in kept.evidence


def test_confidence_grows_with_the_margin_and_with_what_the_stems_explain():
    """The calibrated model's sense: a verdict that wins by more, or on a clip the stems explain better (a
    clean excerpt rather than a phone copy), is more often right; the same holds for "in no stem"."""
    from whichsound.locate import confidence_of

    def ev(top, second, residual, explained, excess=None):
        return {"top_share": top, "second_share": second, "residual": residual, "explained": explained,
                "residual_excess": residual if excess is None else excess}

    for found in (True, False):
        if found:  # the top stem over the runner-up
            margins = [ev(0.5, 0.45, 0.02, 0.9), ev(0.6, 0.3, 0.02, 0.9), ev(0.8, 0.1, 0.02, 0.9)]
        else:  # the residual above the clip's floor over the top stem
            margins = [ev(0.3, 0.1, 0.4, 0.6, excess) for excess in (0.3, 0.5, 0.7)]
        cleaner = [ev(0.6, 0.3, 0.02, x, 0.5) for x in (0.4, 0.7, 1.0)]
        for series in (margins, cleaner):
            got = [confidence_of(e, found) for e in series]
            assert all(0.0 < c < 1.0 for c in got)
            assert got[0] < got[1] < got[2], (found, got)


@pytest.mark.parametrize("scanned", [40, 5000])
def test_peak_bins_are_the_largest_bins_apart_whether_few_or_many_were_scanned(scanned):
    # A pre-searched curve is 0 but where it was scanned (few bins, under the ranked count, or many): the
    # picks are the largest values at least `exclusion` bins apart, as a full sort gives them.
    from whichsound.locate import _peak_bins

    rng = np.random.default_rng(scanned)
    curve = np.zeros(200_000)
    at = rng.choice(len(curve), scanned, replace=False)
    curve[at] = rng.uniform(0.01, 0.5, scanned)
    curve[[1000, 1001, 1003, 90_000, 150_000]] = [0.9, 0.95, 0.8, 0.85, 0.7]
    got = _peak_bins(curve, 3, 2)
    assert got == [1001, 90_000, 150_000]  # 1000 and 1003 lie within 2 bins of 1001

    expected = []
    for k in np.argsort(-curve, kind="stable"):
        if all(abs(int(k) - p) > 2 for p in expected):
            expected.append(int(k))
            if len(expected) == 6:
                break
    assert _peak_bins(curve, 6, 2) == expected
