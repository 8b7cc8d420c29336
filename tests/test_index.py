"""The analysis index (whichsound.index): storage, validity, damage recovery, concurrency, pruning."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import SR, load_sound, read_back, write_wav
from whichsound.errors import AudioReadError, WhichsoundError
from whichsound.index import (
    CATALOG,
    ENV_SUFFIX,
    FORMAT_VERSION,
    TMP_PREFIX,
    CacheError,
    Entry,
    Index,
    content_check,
    default_cache_dir,
)


def noise(seconds: float, channels: int = 2, seed: int = 0, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.2 * rng.standard_normal((int(seconds * sr), channels)), -0.9, 0.9).astype(np.float32)


def reference(path, rate: int = 8000, *, full_precision: bool = False) -> np.ndarray:
    """Independent decimation: the whole file through one soxr.resample call, as (channels, n) float32.

    Integer PCM is read at 16 bits as the index reads it, unless `full_precision`."""
    info = sf.info(str(path))
    if info.subtype.startswith("PCM") and not full_precision:
        x = sf.read(str(path), dtype="int16", always_2d=True)[0].astype(np.float32) / 32768
    else:
        x = read_back(path)
    if info.samplerate != rate:
        x = soxr.resample(x, info.samplerate, rate, quality="HQ")
    return np.ascontiguousarray(x.T, dtype=np.float32)


def assert_f16_close(stored: np.ndarray, ref: np.ndarray) -> None:
    """float16 rounding: within |x| * 2**-11 for normal values, 2**-25 absolute near zero."""
    assert stored.dtype == np.float16
    assert stored.shape == ref.shape
    err = np.abs(stored.astype(np.float32) - ref)
    tol = np.abs(ref) * 2.0**-11 + 2.0**-25
    assert np.all(err <= tol * 1.0001), f"max excess {np.max(err - tol):.3g}"


@pytest.fixture
def stem(tmp_path):
    return write_wav(tmp_path / "src" / "FX_stem.wav", noise(3.0))


@pytest.fixture
def index(tmp_path):
    with Index(tmp_path / "cache") as ix:
        yield ix


def array_files(index: Index) -> list[str]:
    """The decimated arrays in the cache (not their envelope sidecars)."""
    return sorted(p.name for p in index.arrays_dir.iterdir() if not p.name.endswith(ENV_SUFFIX))


# -- build, get, data ------------------------------------------------------------------------------------


def test_build_then_get_returns_the_same_entry_and_data(index, stem):
    entry = index.build(stem)
    assert isinstance(entry, Entry)
    assert entry.source == stem.resolve()
    assert (entry.samplerate, entry.channels, entry.frames) == (SR, 2, 3 * SR)
    assert entry.analysis_rate == 8000 and entry.analysis_frames == 3 * 8000
    assert entry.format_version == FORMAT_VERSION
    assert entry.array_path.parent == index.arrays_dir and entry.array_path.name.endswith(".npy")
    got = index.get(stem)
    assert got == entry
    a = entry.load()
    assert isinstance(a, np.memmap) and not a.flags.writeable
    assert a.shape == (2, 24000) and a.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(a), got.load(mmap=False))
    # a new Index (another process, later) sees the same entry
    with Index(index.dir) as again:
        assert again.get(stem) == entry
        assert again.ensure(stem) == entry
    assert index.entries() == [entry]


def test_entry_loads_parse_npy_headers_one_thread_at_a_time(index, stem, monkeypatch):
    """np.load's header parse (ast.literal_eval) is not thread-safe on CPython 3.11 (CI failed with
    "AST constructor recursion depth mismatch" when two search threads loaded entries at once)."""
    import threading

    import whichsound.index as ix

    entry = index.build(stem)
    real = np.load
    held = []
    monkeypatch.setattr(ix.np, "load", lambda *a, **k: held.append(ix._NPLOAD_LOCK.locked()) or real(*a, **k))
    threads = [threading.Thread(target=lambda: (entry.load(), entry.load_energies())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 8 and all(held)


def test_other_threads_read_and_build_through_their_own_connections(index, stem, tmp_path):
    """A search's spare thread asks the index for entries the main thread opened it for (a cold search's
    takes): SQLite connections serve the thread that made them, so each thread gets its own."""
    import threading

    other = tmp_path / "other.wav"
    other.write_bytes(stem.read_bytes())
    entry = index.build(stem)
    got: dict = {}

    def work() -> None:
        try:
            got["read"] = index.get(stem)
            got["built"] = index.ensure(other)
        except Exception as exc:  # what the main thread must see
            got["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert "error" not in got, got.get("error")
    assert got["read"] == entry
    assert index.get(other) == got["built"]  # the other thread's write is in the catalog
    index.close()
    assert not index._others  # its connection closed with the index


def test_get_without_entry_is_none_and_ensure_builds(index, stem):
    assert index.get(stem) is None
    entry = index.ensure(stem)
    assert index.get(stem) == entry
    assert index.ensure(stem) == entry  # no rebuild: same created time
    assert array_files(index) == [entry.array_path.name]


@pytest.mark.parametrize(
    "kind, sr, channels",
    [("music", 48000, 2), ("speech", 44100, 1), ("noise", 8000, 3), ("noise", 96000, 6)],
)
def test_decimated_data_matches_whole_file_soxr_within_float16(tmp_path, index, kind, sr, channels):
    if kind == "music":
        x = 0.5 * load_sound("music/lincity__02_-_Robert_van_Herk_-_City_Blues.flac", 7.0, mono=False)
    elif kind == "speech":
        x = load_sound("speech/en_librivox_reader_pocketsphinx/sense_and_sensibility_01_austen_64kb-0870.flac")
        x = soxr.resample(0.8 * x, SR, sr, quality="HQ")[:, None]
    else:
        x = noise(2.3, channels, seed=channels, sr=sr)  # 2.3 s: several read blocks at 96 kHz
    path = write_wav(tmp_path / f"{kind}_{sr}.wav", x, sr)
    entry = index.build(path)
    assert entry.channels == x.shape[1]
    assert_f16_close(entry.load(), reference(path))
    # What the 16-bit decode of 24-bit PCM costs: each input sample truncated by [0, 2**-15), so an output
    # sample moves by under 2**-15 times the sum of the low-pass's positive taps (soxr HQ to 8 kHz from
    # 44.1, 48 and 96 kHz, measured from impulse responses: 1.77 at most; 1 without resampling).
    full = reference(path, full_precision=True)
    err = np.abs(entry.load().astype(np.float32) - full)
    tol = np.abs(full) * 2.0**-11 + 1.8 * 2.0**-15
    assert np.all(err <= tol), f"max excess {np.max(err - tol):.3g}"


def test_non_finite_float_samples_are_stored_as_zero(tmp_path, index):
    x = noise(1.0, 1)
    x[1000:1010] = np.nan
    x[20000] = np.inf
    path = tmp_path / "float.wav"
    sf.write(str(path), x, SR, subtype="FLOAT")
    a = np.asarray(index.build(path).load(), dtype=np.float32)
    assert np.all(np.isfinite(a))
    clean = x.copy()
    clean[~np.isfinite(clean)] = 0.0
    assert_f16_close(a.astype(np.float16), soxr.resample(clean, SR, 8000, quality="HQ").T)


def test_other_analysis_rate_is_a_separate_entry(tmp_path, stem):
    with Index(tmp_path / "cache") as a, Index(tmp_path / "cache", rate=4000) as b:
        ea, eb = a.ensure(stem), b.ensure(stem)
        assert ea.analysis_frames == 24000 and eb.analysis_frames == 12000
        assert a.get(stem) == ea and b.get(stem) == eb
        assert len(array_files(a)) == 2
        # envelope features are defined at 8 kHz: only that entry has them
        assert ea.env_frames == 1 + (24000 - 256) // 80  # 10 ms hops of 32 ms frames inside the copy
        assert ea.load_energies().shape == (ea.env_frames, 8)
        assert eb.env_frames == 0 and eb.load_energies() is None


def test_unreadable_audio_raises_audio_read_error_and_stores_nothing(tmp_path, index):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(AudioReadError):
        index.build(bad)
    with pytest.raises(AudioReadError, match="not found"):
        index.ensure(tmp_path / "missing.wav")
    assert index.entries() == [] and array_files(index) == []


# -- invalidation when the stem changes ------------------------------------------------------------------


def test_same_size_rewrite_with_restored_mtime_is_caught_by_content_check(index, stem):
    old = index.build(stem)
    st = stem.stat()
    write_wav(stem, noise(3.0, seed=99))
    os.utime(stem, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert stem.stat().st_size == st.st_size and stem.stat().st_mtime_ns == st.st_mtime_ns
    assert index.get(stem) is None
    new = index.ensure(stem)
    assert new.content_check != old.content_check
    assert_f16_close(new.load(), reference(stem))
    assert array_files(index) == [new.array_path.name]  # the old array went with its row


def test_touched_mtime_invalidates(index, stem):
    index.build(stem)
    st = stem.stat()
    os.utime(stem, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert index.get(stem) is None
    entry = index.ensure(stem)
    assert entry.mtime_ns == stem.stat().st_mtime_ns
    assert index.get(stem) == entry


def test_appended_bytes_invalidate(index, stem):
    index.build(stem)
    with open(stem, "ab") as f:
        f.write(b"\0" * 16)
    assert index.get(stem) is None
    assert index.ensure(stem).size == stem.stat().st_size


def test_longer_file_invalidates_and_rebuilds_longer(index, stem):
    index.build(stem)
    write_wav(stem, noise(4.0))
    assert index.get(stem) is None
    assert index.ensure(stem).analysis_frames == 4 * 8000


def test_deleted_source_gives_none(index, stem):
    index.build(stem)
    stem.unlink()
    assert index.get(stem) is None


def test_content_check_reads_head_and_tail_only(tmp_path):
    big = tmp_path / "big.bin"
    data = bytearray(os.urandom(3 << 20))
    big.write_bytes(data)
    size, _, check = content_check(big)
    assert size == 3 << 20
    data[-1] ^= 1  # tail: seen
    big.write_bytes(data)
    assert content_check(big)[2] != check
    data[-1] ^= 1
    data[(3 << 20) // 2] ^= 1  # the middle of a large file: deliberately not read
    big.write_bytes(data)
    assert content_check(big)[2] == check


# -- damaged cache -----------------------------------------------------------------------------------------


def test_truncated_array_is_detected_and_rebuilt(index, stem):
    entry = index.build(stem)
    good = np.array(entry.load())
    with open(entry.array_path, "r+b") as f:
        f.truncate(entry.array_path.stat().st_size - 100)
    assert index.get(stem) is None
    rebuilt = index.ensure(stem)
    np.testing.assert_array_equal(np.asarray(rebuilt.load()), good)
    assert index.get(stem) == rebuilt


def test_truncated_array_is_caught_by_quick_verify_too(tmp_path, stem):
    with Index(tmp_path / "cache", verify="quick") as index:
        entry = index.build(stem)
        with open(entry.array_path, "r+b") as f:
            f.truncate(200)
        assert index.get(stem) is None


def test_flipped_byte_is_detected_and_rebuilt(tmp_path, stem):
    with Index(tmp_path / "cache") as index:
        entry = index.build(stem)
        good = np.array(entry.load())
    with open(entry.array_path, "r+b") as f:  # one bit in the middle of the data
        f.seek(entry.array_path.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x10]))
    with Index(tmp_path / "cache") as index:  # a later run
        assert index.get(stem) is None
        rebuilt = index.ensure(stem)
        np.testing.assert_array_equal(np.asarray(rebuilt.load()), good)
        assert index.get(stem) == rebuilt


def test_flipped_byte_seen_by_the_same_index_object(index, stem):
    entry = index.build(stem)
    with open(entry.array_path, "r+b") as f:
        f.seek(-7, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    assert index.get(stem) is None


def test_missing_or_mangled_header_array_is_detected(index, stem):
    entry = index.build(stem)
    entry.array_path.unlink()
    assert index.get(stem) is None
    entry = index.ensure(stem)
    with open(entry.array_path, "r+b") as f:
        f.write(b"garbage!")
    assert index.get(stem) is None
    assert index.ensure(stem).load().shape == (2, 24000)


def test_garbage_catalog_is_moved_aside_and_replaced(tmp_path, stem):
    cache = tmp_path / "cache"
    with Index(cache) as index:
        index.build(stem)
    for suffix in ("-wal", "-shm"):
        (cache / (CATALOG + suffix)).unlink(missing_ok=True)
    (cache / CATALOG).write_bytes(os.urandom(8192))
    with Index(cache) as index:
        assert index.get(stem) is None
        assert (cache / (CATALOG + ".corrupt")).is_file()
        entry = index.ensure(stem)
        assert index.get(stem) == entry
        pruned = index.prune()
        assert pruned.files >= 1  # the moved-aside catalog
    assert not (cache / (CATALOG + ".corrupt")).exists()
    con = sqlite3.connect(cache / CATALOG)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()


def test_catalog_with_damaged_pages_is_replaced(tmp_path, stem):
    cache = tmp_path / "cache"
    with Index(cache) as index:
        index.build(stem)
        index.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray((cache / CATALOG).read_bytes())
    data[100:] = os.urandom(len(data) - 100)  # the SQLite header survives, the pages do not
    (cache / CATALOG).write_bytes(bytes(data))
    with Index(cache) as index:
        assert index.get(stem) is None
        assert index.ensure(stem).load().shape == (2, 24000)


# -- sharing, removal, pruning ---------------------------------------------------------------------------


def test_identical_files_share_one_array_and_remove_keeps_it_until_unused(tmp_path, index, stem):
    copy = tmp_path / "src" / "copy.wav"
    copy.write_bytes(stem.read_bytes())
    a, b = index.build(stem), index.build(copy)
    assert a.array_path == b.array_path and len(index.entries()) == 2
    assert index.remove(stem) is True
    assert index.remove(stem) is False
    assert index.get(stem) is None and index.get(copy) == b
    assert b.array_path.exists()
    assert index.remove(copy) is True
    assert array_files(index) == []


def test_prune_drops_rows_of_missing_sources_orphans_and_stale_temp_files(tmp_path, index, stem):
    other = write_wav(tmp_path / "src" / "BG.wav", noise(1.0, seed=5))
    keep, gone = index.build(stem), index.build(other)
    gone_bytes = gone.array_path.stat().st_size + gone.env_path.stat().st_size
    other.unlink()
    orphan = index.arrays_dir / ("0" * 32 + ".npy")
    orphan.write_bytes(b"x" * 1000)
    stale = index.arrays_dir / f"{TMP_PREFIX}123-abc.npy"
    stale.write_bytes(b"y" * 10)
    os.utime(stale, (0, 0))
    fresh = index.arrays_dir / f"{TMP_PREFIX}456-def.npy"  # a build in progress elsewhere
    fresh.write_bytes(b"z")
    pruned = index.prune()
    assert pruned.entries == 1
    assert pruned.files == 4  # the gone source's array and envelope, the orphan, the stale temp file
    assert pruned.bytes == gone_bytes + 1000 + 10
    assert not gone.array_path.exists() and not gone.env_path.exists()
    assert not orphan.exists() and not stale.exists() and keep.env_path.exists()
    assert fresh.exists()
    assert index.entries() == [keep] and index.get(stem) == keep
    assert index.prune().entries == 0


# -- the cache folder --------------------------------------------------------------------------------------


def test_cache_dir_that_is_a_file_raises_cache_error_naming_it(tmp_path):
    blocker = tmp_path / "notadir"
    blocker.write_text("x")
    with pytest.raises(CacheError) as info:
        Index(blocker / "cache")
    msg = str(info.value)
    assert isinstance(info.value, WhichsoundError)
    assert str(blocker / "cache") in msg and "\n" not in msg


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_cache_dir_raises_cache_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CacheError, match="not writable"):
            Index(ro)
    finally:
        ro.chmod(0o755)


def test_default_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("WHICHSOUND_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == tmp_path / "xdg" / "whichsound"
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # the fallback without platformdirs
    assert default_cache_dir() == tmp_path / "xdg" / "whichsound"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "whichsound"
    monkeypatch.setenv("WHICHSOUND_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_index_default_location(tmp_path, monkeypatch, stem):
    monkeypatch.delenv("WHICHSOUND_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(sys.modules, "platformdirs", None)
    with Index() as index:
        assert index.dir == tmp_path / "xdg" / "whichsound"
        assert index.ensure(stem).array_path.is_file()


# -- processes ---------------------------------------------------------------------------------------------


def _race(cache: str, path: str, how: str, barrier) -> None:
    from whichsound.index import Index

    with Index(cache) as index:
        barrier.wait(timeout=60)
        (index.build if how == "build" else index.ensure)(path)


@pytest.mark.parametrize("how", ["build", "ensure"])
def test_two_processes_building_one_entry_end_with_one_valid_entry(tmp_path, how):
    path = write_wav(tmp_path / "src" / "DX.wav", noise(20.0, seed=3))
    cache = tmp_path / "cache"
    Index(cache).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_race, args=(str(cache), str(path), how, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with Index(cache) as index:
        entries = index.entries()
        assert len(entries) == 1
        assert index.get(path) == entries[0]
        assert array_files(index) == [entries[0].array_path.name]  # no temp file left
        assert_f16_close(entries[0].load(), reference(path))
    assert not [p for p in cache.rglob(TMP_PREFIX + "*")]


def test_build_many_with_two_processes_reports_progress_and_errors(tmp_path, index):
    paths = [write_wav(tmp_path / "src" / f"s{i}.wav", noise(1.0 + i, 1 + i % 2, seed=i)) for i in range(3)]
    bad = tmp_path / "src" / "broken.wav"
    bad.write_bytes(b"\x00" * 500)
    paths.insert(1, bad)
    calls = []
    results = index.build_many(paths, jobs=2, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [1, 2, 3, 4] and all(c[1] == 4 for c in calls)
    assert {c[2] for c in calls} == set(paths)
    assert isinstance(results[1], AudioReadError) and "broken.wav" in str(results[1])
    for p, r in zip(paths, results, strict=True):
        if p is bad:
            continue
        assert isinstance(r, Entry) and index.get(p) == r
        assert_f16_close(r.load(), reference(p))
    # again: everything valid, nothing rebuilt; serial path gives the same
    again = index.build_many([p for p in paths if p is not bad], jobs=1)
    assert again == [r for r in results if isinstance(r, Entry)]


def _churn(cache: str, files: list[str], seed: int, barrier) -> None:
    import random

    from whichsound.index import CacheError, Index

    rng = random.Random(seed)
    with Index(cache) as index:
        barrier.wait(timeout=60)
        for _ in range(15):
            f, op = rng.choice(files), rng.random()
            if op < 0.45:
                entry = index.ensure(f)
                try:
                    assert entry.load().shape[0] == entry.channels
                except CacheError as exc:
                    # Another process removed the entry (or its twin's shared array) between ensure and
                    # load: a clear error, as locate's fallback expects, never a wrong array.
                    assert "No such file" in str(exc) and index.get(f) != entry, exc
            elif op < 0.6:
                index.build(f)
            elif op < 0.8:
                index.remove(f)
            else:
                index.prune()


def test_concurrent_ensure_build_remove_prune_leave_a_consistent_cache(tmp_path):
    src = tmp_path / "src"
    files = [write_wav(src / f"s{i}.wav", noise(2.0, 2, seed=10 + i)) for i in range(3)]
    dup = src / "dup.wav"  # same bytes as s0: shares its array
    dup.write_bytes(files[0].read_bytes())
    files.append(dup)
    cache = tmp_path / "cache"
    Index(cache).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_churn, args=(str(cache), [str(f) for f in files], s, barrier)) for s in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with Index(cache) as index:
        for entry in index.entries():
            assert index.get(entry.source) == entry
        assert index.prune().files == 0  # nothing orphaned, no temp file left
        assert set(array_files(index)) == {e.array_path.name for e in index.entries()}
        for f in files:
            assert_f16_close(index.ensure(f).load(), reference(f))


# -- envelope sidecar and recorded identities --------------------------------------------------------------


def test_envelope_sidecar_holds_band_energies_of_the_summed_copy(index, stem):
    from whichsound.align import band_energies

    entry = index.build(stem)
    a = np.asarray(entry.load(), dtype=np.float32)
    want = band_energies(a.sum(axis=0))
    got = entry.load_energies()
    # float32 sums in another order: equal to 1e-4 relative of the largest band energy
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.max()))


def test_damaged_envelope_sidecar_is_detected_and_rebuilt(tmp_path, stem):
    with Index(tmp_path / "cache") as index:
        entry = index.build(stem)
        good = entry.load_energies().copy()
    with open(entry.env_path, "r+b") as f:  # one bit in the data, size unchanged
        f.seek(entry.env_path.stat().st_size - 9)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))
    with Index(tmp_path / "cache") as index:
        assert index.get(stem) is None
        np.testing.assert_array_equal(index.ensure(stem).load_energies(), good)


def test_settled_identity_is_recorded_and_a_later_write_still_caught(tmp_path, stem, monkeypatch):
    import whichsound.index as ix

    monkeypatch.setattr(ix, "IDENT_SETTLE_S", 0.0)
    with Index(tmp_path / "cache") as index:
        entry = index.build(stem)
    with Index(tmp_path / "cache") as index:  # a later run hashes once and records the identity
        assert index.get(stem) == entry
        ident = index.con.execute("SELECT array_ident, env_ident FROM entries").fetchone()
        assert ident[0] == ix._ident(os.stat(entry.array_path)) and ident[1]
    hashed = []
    monkeypatch.setattr(ix, "_sha256_file", lambda p: hashed.append(p) or "x")
    with Index(tmp_path / "cache") as index:  # the next run trusts the unchanged identity: no hashing
        assert index.get(stem) == entry and hashed == []
    time.sleep(0.02)
    with open(entry.array_path, "r+b") as f:  # same size, new ctime
        f.seek(-3, os.SEEK_END)
        f.write(b"\x00\x7c\x00")
    with Index(tmp_path / "cache") as index:
        assert index.get(stem) is None and hashed == [entry.array_path]


# -- derived data ------------------------------------------------------------------------------------------


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"n": np.array(4096), "spectrum": (rng.standard_normal((3000, 8)) + 1j).astype(np.complex64),
            "cumulative": np.cumsum(rng.random(5000))}


def test_derived_data_is_made_once_and_loaded_by_a_later_index(tmp_path):
    made = []

    def make():
        made.append(1)
        return _arrays()

    with Index(tmp_path / "cache") as a:
        first = a.derived("recipe 1", make)
    with Index(tmp_path / "cache") as b:  # another run
        again = b.derived("recipe 1", make)
        other = b.derived("recipe 2", lambda: _arrays(1))
    assert len(made) == 1
    assert set(again) == {"n", "spectrum", "cumulative"}
    for k, v in first.items():
        np.testing.assert_array_equal(again[k], v)  # bit-exact: stored, not remade
        assert again[k].dtype == v.dtype
    assert not np.array_equal(other["spectrum"], first["spectrum"])
    assert len(list((tmp_path / "cache" / "derived").glob("*.npz"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "npy"])
def test_damaged_derived_file_is_detected_and_made_again(tmp_path, damage):
    with Index(tmp_path / "cache") as index:
        good = index.derived("recipe", _arrays)
        (path,) = index.derived_dir.glob("*.npz")
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            del data[len(data) // 2 :]
        elif damage == "npy":  # a whole file, but one array, not the archive
            np.save(path.with_suffix(".tmp.npy"), good["spectrum"])
            data = bytearray(path.with_suffix(".tmp.npy").read_bytes())
        else:  # one bit inside the spectrum's bytes: only the zip's CRC-32 can tell
            data[len(data) // 2] ^= 0x04
        path.write_bytes(bytes(data))
        made = []
        got = index.derived("recipe", lambda: made.append(1) or _arrays())
        assert made == [1]
        np.testing.assert_array_equal(got["spectrum"], good["spectrum"])
        # and the file written again is whole: the next run loads it without making anything
        assert index.derived("recipe", lambda: pytest.fail("remade a valid file")) is not None


def test_derived_data_keeps_the_most_recently_used_under_its_cap(tmp_path, monkeypatch):
    import whichsound.index as ix

    with Index(tmp_path / "cache") as index:
        index.derived("a", _arrays)
        (a,) = index.derived_dir.glob("*.npz")
        size = a.stat().st_size
        index.derived("b", lambda: _arrays(1))
        (b,) = set(index.derived_dir.glob("*.npz")) - {a}
        os.utime(b, (1_000_000, 1_000_000))  # b used long ago, a just now
        monkeypatch.setattr(ix, "DERIVED_MAX_BYTES", int(2.5 * size))
        index.derived("c", lambda: _arrays(2))
        assert a.exists() and not b.exists()
        assert len(list(index.derived_dir.glob("*.npz"))) == 2


def test_prune_removes_derived_data(tmp_path, index, stem):
    index.build(stem)
    index.derived("recipe", _arrays)
    assert index.prune().files == 1
    assert not list(index.derived_dir.iterdir())
    made = []
    index.derived("recipe", lambda: made.append(1) or _arrays())
    assert made == [1]
