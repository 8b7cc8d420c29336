"""The analysis index: decimated copies of stem files, built once and reused by repeat queries.

An entry holds, for one stem file, every channel resampled with soxr to a low *analysis rate* (8000 Hz by
default) as a ``(channels, n)`` float16 array and, at 8 kHz, the *envelope* beside it: the band energies
(align.band_energies: 8 bands, 10 ms hop) of the channels summed, float32, which the pre-search of
locate correlates in about 0.1 s per hour of stems.  Entries live in a per-user cache folder::

    <cache>/catalog.sqlite        the catalog: one row per (source file, analysis rate), WAL mode
    <cache>/arrays/<sha256>.npy   the arrays, content-addressed (name = checksum of the file's bytes)
    <cache>/arrays/<sha256>.env.npy   the array's envelope
    <cache>/locks/<key>.lock      per-entry build locks (fcntl.flock), so one process builds an entry
    <cache>/derived/<key>.npz     data derived from entries (a timeline's envelope spectrum), see derived()

Usage::

    index = Index()                    # or Index(Path("/fast/disk/cache"))
    entry = index.ensure("R1_DX.wav")  # valid entry, built if missing or stale
    data = entry.load()                # (channels, n) float16, memory-mapped, read-only

Validity.  An entry is returned only when the source file's size and mtime_ns are unchanged, its *content
check* matches (blake2b of the size and of the first and last 64 KiB: cheap on multi-GB files; a same-size
edit in the middle of a large file that also restores mtime_ns is deliberately not detected), the entry was
made by this FORMAT_VERSION, and the array file (and its envelope) is present, of the right length, with a
well-formed header and (``verify="full"``, the default) a SHA-256 equal to its catalog checksum.  Hashing
gigabytes on every run would cost a second each time: after a file hashes equal (once its ctime has
settled), its identity (inode, size, mtime_ns, ctime_ns) is recorded, and a later run that finds the same
identity skips the hash.  Any write, truncation or utime moves ctime, which no process can set back; what
this does not catch is a change below the file system (bit rot), which the file system's own checks own.  A damaged array is dropped
and rebuilt by ensure(), never trusted.  A catalog that SQLite cannot read is moved aside
(``catalog.sqlite.corrupt``) and replaced by an empty one when the Index opens.

Precision.  float16 keeps 11 significant bits: for |x| >= 2**-14 (about -84 dBFS) the stored value is
within |x| * 2**-11 (-66 dB relative) of soxr's float32 output, below that within 2**-25 absolute
(about -150 dBFS); values beyond +-65504 are clipped, NaN/inf input samples are read as 0.  The streamed
decimation is the same as one ``soxr.resample(whole_file, samplerate, rate, quality="HQ")`` call.

Concurrency.  Arrays are written to a unique temp file in ``arrays/``, fsynced, and moved to their final
name with os.replace inside the ``BEGIN IMMEDIATE`` transaction that inserts the row, so a committed row
never points at a half-written file and removal of unreferenced arrays is serialized with inserts.  Two
processes building one entry end with one row and one array.  One Index object per thread.

Memory.  Building streams the file block by block (audio.iter_blocks, soxr.ResampleStream) and writes the
output with os.pwrite: a few MB whatever the file's length or channel count.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whichsound.align import ENV_BANDS, ENV_RATE
from whichsound.audio import iter_blocks, probe
from whichsound.errors import AudioReadError, WhichsoundError

try:  # POSIX: per-entry and catalog locks; elsewhere SQLite transactions alone keep the catalog valid
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_ANALYSIS_RATE",
    "FORMAT_VERSION",
    "CacheError",
    "Entry",
    "Index",
    "Pruned",
    "content_check",
    "default_cache_dir",
]

#: Bump when the stored data changes meaning (resampler quality, dtype, layout): old entries become stale.
FORMAT_VERSION = 2
SCHEMA_VERSION = 2
DEFAULT_ANALYSIS_RATE = 8000
QUALITY = "HQ"  # soxr quality of the decimation (part of FORMAT_VERSION)
BLOCK_FRAMES = 1 << 17  # source frames read per block while building
CHECK_BYTES = 1 << 16  # content check: this many bytes from the start and the end of the source
CATALOG = "catalog.sqlite"
TMP_PREFIX = ".tmp-"
#: A file's identity (inode, size, mtime, ctime) is recorded in place of re-hashing it only once its ctime
#: is this old (s): timestamps move in clock ticks of a few ms, so a fresh file could be rewritten unseen.
IDENT_SETTLE_S = 2.0
TMP_STALE_S = 3600.0  # prune() removes temp files untouched this long (an interrupted build's)
_F16_MAX = float(np.finfo(np.float16).max)
#: The envelope sidecar (band energies per 10 ms, made at align.ENV_RATE only) is arrays/<name> + this.
ENV_SUFFIX = ".env.npy"
#: Bytes of derived data (Index.derived) kept in the cache folder: past this the least recently used go.
DERIVED_MAX_BYTES = 1 << 30
_BUSY_MS = 60_000

ProgressCallback = Callable[[int, int, Path, "Entry | WhichsoundError"], None]


class CacheError(WhichsoundError):
    """An unusable index cache folder (not creatable or not writable), or an entry that cannot be stored."""


@dataclass(frozen=True)
class Entry:
    """One stored analysis array and the source file state it was made from."""

    source: Path  # resolved path of the stem file
    size: int
    mtime_ns: int
    content_check: str
    samplerate: int
    channels: int
    frames: int  # source frames
    analysis_rate: int
    analysis_frames: int  # n: the array is (channels, n)
    array_path: Path
    array_checksum: str  # SHA-256 of the .npy file's bytes
    format_version: int
    created: float  # time.time() when built
    env_checksum: str = ""  # SHA-256 of the envelope sidecar ("" when the rate has none)
    env_frames: int = 0  # rows of the envelope sidecar: one per 10 ms

    @property
    def duration_s(self) -> float:
        return self.frames / self.samplerate

    @property
    def env_path(self) -> Path:
        """The envelope sidecar: band energies of the channel-summed copy (align.band_energies)."""
        return _env_path(self.array_path)

    def load_energies(self, mmap: bool = False) -> np.ndarray | None:
        """(env_frames, 8) float32 band energies, 10 ms hop, of the channels summed (memory-mapped read-only
        when `mmap`); None at a rate that has none (the features are defined at 8 kHz)."""
        if self.env_frames == 0:
            return None
        try:
            return _npload(self.env_path, mmap)
        except (OSError, ValueError) as exc:
            raise CacheError(f"{self.env_path}: index envelope unreadable ({exc}); rebuild the entry") from None

    def load(self, mmap: bool = True) -> np.ndarray:
        """The (channels, n) float16 array: memory-mapped read-only by default, else read into memory."""
        try:
            return _npload(self.array_path, mmap)
        except (OSError, ValueError) as exc:
            raise CacheError(f"{self.array_path}: index array unreadable ({exc}); rebuild the entry") from None


@dataclass(frozen=True)
class Pruned:
    """What Index.prune() removed."""

    entries: int
    files: int
    bytes: int


def default_cache_dir() -> Path:
    """Per-user cache folder: $WHICHSOUND_CACHE when set, else platformdirs' user cache dir when installed,
    else $XDG_CACHE_HOME or ~/.cache."""
    env = os.environ.get("WHICHSOUND_CACHE", "")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:
        platformdirs = None
    if platformdirs is not None:
        return Path(platformdirs.user_cache_dir("whichsound", appauthor=False))
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "whichsound"


def content_check(path: str | Path) -> tuple[int, int, str]:
    """(size, mtime_ns, check) of a file: check = blake2b over the size, the first and the last 64 KiB
    (the header with its bext and iXML chunks, and the ends of the audio; 41 files in 8 ms, where a MiB
    each took 130 ms of every warm search)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        h = hashlib.blake2b(digest_size=16)
        h.update(st.st_size.to_bytes(8, "little"))
        h.update(f.read(CHECK_BYTES))
        if st.st_size > CHECK_BYTES:
            f.seek(max(CHECK_BYTES, st.st_size - CHECK_BYTES))
            h.update(f.read(CHECK_BYTES))
    return st.st_size, st.st_mtime_ns, h.hexdigest()


def _analysis_frames(frames: int, samplerate: int, rate: int) -> int:
    """Output length of soxr for `frames` input samples (it rounds to nearest, as one-shot resample does)."""
    if samplerate == rate:
        return frames
    return max(int(round(frames * rate / samplerate)), 1 if frames else 0)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Exclusive flock on `path` (created if needed); safe against a concurrent prune() unlinking it."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was unlinked while we waited: lock the new one
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """A DatabaseError that means a damaged file (not a busy lock or a permission problem)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc) or "not a database" in str(exc):
        return True
    return not isinstance(exc, sqlite3.OperationalError)


_COLUMNS = (
    "source, analysis_rate, size, mtime_ns, content_check, samplerate, channels, frames, analysis_frames, "
    "array_name, array_checksum, array_bytes, format_version, created, array_ident, env_checksum, env_frames, "
    "env_ident"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    source TEXT NOT NULL,
    analysis_rate INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_check TEXT NOT NULL,
    samplerate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    frames INTEGER NOT NULL,
    analysis_frames INTEGER NOT NULL,
    array_name TEXT NOT NULL,
    array_checksum TEXT NOT NULL,
    array_bytes INTEGER NOT NULL,
    format_version INTEGER NOT NULL,
    created REAL NOT NULL,
    array_ident TEXT NOT NULL,
    env_checksum TEXT NOT NULL,
    env_frames INTEGER NOT NULL,
    env_ident TEXT NOT NULL,
    PRIMARY KEY (source, analysis_rate)
);
CREATE INDEX IF NOT EXISTS entries_array ON entries (array_name);
"""


def _catalog_errors(method):
    """Turn an SQLite failure (locked too long, disk full, damaged mid-run) into a one-line CacheError."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise CacheError(f"{self.catalog_path}: index catalog error ({exc})") from None

    return wrapper


class Index:
    """The analysis index in `cache_dir` (default: default_cache_dir()) at `rate` Hz.

    `verify` is how get() checks an array file: "full" hashes it (SHA-256, about 1 GB/s), "quick" checks
    only its length and header (catches truncation, not a flipped byte).  Raises CacheError when the folder
    cannot be created or written.
    """

    def __init__(self, cache_dir: str | Path | None = None, *, rate: int = DEFAULT_ANALYSIS_RATE,
                 verify: str = "full"):
        if verify not in ("full", "quick"):
            raise ValueError("verify must be 'full' or 'quick'")
        if int(rate) <= 0:
            raise ValueError("analysis rate must be positive")
        self.dir = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser().absolute()
        self.rate = int(rate)
        self.verify = verify
        self.arrays_dir = self.dir / "arrays"
        self.locks_dir = self.dir / "locks"
        self.derived_dir = self.dir / "derived"
        self.catalog_path = self.dir / CATALOG
        self._verified: dict[str, str] = {}  # file name -> identity already hashed by this process
        try:
            for d in (self.dir, self.arrays_dir, self.locks_dir, self.derived_dir):
                d.mkdir(parents=True, exist_ok=True)
            probe_file = self.dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            probe_file.write_bytes(b"")
            probe_file.unlink()
        except OSError as exc:
            raise CacheError(f"{self.dir}: index cache folder is not writable ({exc.strerror or exc})") from None
        self._con: sqlite3.Connection | None = None
        # Each thread (a search's spare thread too) uses a connection of its own: an SQLite connection serves
        # the thread that made it, and each thread's transactions stay its own. _con is the opening thread's.
        self._local = threading.local()
        self._others: list[sqlite3.Connection] = []
        self._others_lock = threading.Lock()
        self._open_catalog()

    # -- catalog ---------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread off only so that close() may close another thread's connection; each is used
        # by the thread that made it alone (see con).
        con = sqlite3.connect(self.catalog_path, timeout=_BUSY_MS / 1000, isolation_level=None,
                              check_same_thread=False)
        try:
            con.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            rows = con.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                raise sqlite3.DatabaseError(f"integrity check failed: {rows[0][0] if rows else 'no answer'}")
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                con.execute("BEGIN IMMEDIATE")
                try:
                    if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        con.execute("DROP TABLE IF EXISTS entries")  # a cache: an old layout is just dropped
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                con.execute(stmt)
                        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except BaseException:
            con.close()
            raise
        return con

    def _open_catalog(self) -> None:
        """Open (creating) the catalog; a damaged one is moved aside and replaced by an empty one."""
        self.close()
        try:
            with _flock(self.locks_dir / "catalog.lock"):
                try:
                    self._con = self._connect()
                except sqlite3.DatabaseError as exc:
                    if not _is_corruption(exc):
                        raise
                    self._move_aside()
                    self._con = self._connect()
                self._local.con = self._con
        except sqlite3.Error as exc:
            raise CacheError(f"{self.catalog_path}: cannot open the index catalog ({exc})") from None
        except OSError as exc:
            raise CacheError(f"{self.dir}: index cache folder is not usable ({exc.strerror or exc})") from None

    def _move_aside(self) -> None:
        aside = self.dir / (CATALOG + ".corrupt")
        for suffix in ("", "-wal", "-shm"):
            src = self.dir / (CATALOG + suffix)
            if not src.exists():
                continue
            if suffix == "-shm":
                src.unlink()
            else:
                os.replace(src, self.dir / (aside.name + suffix))
        _fsync_dir(self.dir)

    @property
    def con(self) -> sqlite3.Connection:
        """This thread's connection to the catalog (made on its first use in another thread than the opening one)."""
        if self._con is None:
            raise CacheError(f"{self.dir}: the index is closed")
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._connect()
            with self._others_lock:
                self._others.append(con)
            self._local.con = con
        return con

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: takes the database's write lock at once)."""
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        with self._others_lock:
            for con in self._others:
                con.close()
            self._others.clear()
        self._local = threading.local()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.dir)!r}, rate={self.rate})"

    # -- entries ---------------------------------------------------------------------------------------

    def _row_to_entry(self, row: tuple) -> Entry:
        (source, rate, size, mtime_ns, check, sr, ch, frames, n, name, checksum, _nbytes, fmt, created,
         _ident, env_checksum, env_frames, _env_ident) = row
        return Entry(Path(source), size, mtime_ns, check, sr, ch, frames, rate, n,
                     self.arrays_dir / name, checksum, fmt, created, env_checksum, env_frames)

    def _row(self, source: Path) -> tuple | None:
        return self.con.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE source = ? AND analysis_rate = ?", (str(source), self.rate)
        ).fetchone()

    @_catalog_errors
    def entries(self) -> list[Entry]:
        """Every catalog row at this analysis rate (valid or not), sorted by source path."""
        rows = self.con.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE analysis_rate = ? ORDER BY source", (self.rate,)
        ).fetchall()
        return [self._row_to_entry(r) for r in rows]

    @_catalog_errors
    def get(self, path: str | Path) -> Entry | None:
        """The valid entry for a stem file, or None (no entry, the file changed or is gone, array damaged)."""
        source = Path(path).resolve()
        row = self._row(source)
        if row is None:
            return None
        entry = self._row_to_entry(row)
        if entry.format_version != FORMAT_VERSION:
            return None
        try:
            size, mtime_ns, check = content_check(source)
        except OSError:
            return None
        if (size, mtime_ns, check) != (entry.size, entry.mtime_ns, entry.content_check):
            return None
        settled: dict[str, str] = {}
        arrays_ok = self._file_ok(entry.array_path, (entry.channels, entry.analysis_frames), "<f2",
                                  entry.array_checksum, row[14], settled, nbytes=row[11])
        if not arrays_ok or (entry.env_frames and not self._file_ok(
                entry.env_path, (entry.env_frames, ENV_BANDS), "<f4", entry.env_checksum, row[17], settled)):
            self._drop(entry)
            return None
        if settled:
            self._record_idents(entry, settled)
        return entry

    def _record_idents(self, entry: Entry, idents: dict[str, str]) -> None:
        """Store the identities of an entry's files just hashed equal, so later runs need not hash them."""
        cols = {entry.array_path.name: "array_ident", entry.env_path.name: "env_ident"}
        with contextlib.suppress(sqlite3.Error), self._write() as con:
            for name, ident in idents.items():
                con.execute(f"UPDATE entries SET {cols[name]} = ? WHERE source = ? AND analysis_rate = ? "
                            "AND array_name = ?", (ident, str(entry.source), entry.analysis_rate,
                                                   entry.array_path.name))

    def _file_ok(self, path: Path, shape: tuple[int, int], dtype: str, checksum: str, stored_ident: str,
                 settled: dict[str, str], *, nbytes: int | None = None) -> bool:
        """True when the .npy at `path` has a well-formed header for `shape` and `dtype`, the length that
        implies (and `nbytes`, the catalog's, when given) and, with verify="full", the bytes hashed to
        `checksum`.

        The hash is skipped when the file's identity (inode, size, mtime, ctime) is `stored_ident`, recorded
        after an earlier full hash, or one this process hashed already. Any write, truncation or touch
        moves ctime, which no process can set back. A file that hashes equal and whose ctime is over
        IDENT_SETTLE_S old goes into `settled` (name -> identity) for the caller to record: a write in the
        same clock tick as the last one cannot go unseen."""
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                if np.lib.format.read_magic(f) != (1, 0):
                    return False
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
                expected = f.tell() + shape[0] * shape[1] * np.dtype(dtype).itemsize
            if (got_shape != shape or fortran or got_dtype != np.dtype(dtype) or st.st_size != expected
                    or (nbytes is not None and nbytes != expected)):
                return False
            if self.verify == "quick":
                return True
            ident = _ident(st)
            if ident == stored_ident or self._verified.get(path.name) == ident:
                return True
            if _sha256_file(path) != checksum:
                return False
            self._verified[path.name] = ident
            if time.time() - st.st_ctime > IDENT_SETTLE_S and _ident(os.stat(path)) == ident:
                settled[path.name] = ident
            return True
        except (OSError, ValueError):
            return False

    def _drop(self, entry: Entry) -> None:
        """Delete a damaged entry's row (if it still points at that array) and the array if unreferenced."""
        name = entry.array_path.name
        self._verified.pop(name, None)
        with self._write() as con:
            con.execute("DELETE FROM entries WHERE source = ? AND analysis_rate = ? AND array_name = ?",
                        (str(entry.source), entry.analysis_rate, name))
            self._unlink_if_unreferenced(con, name)

    def _unlink_if_unreferenced(self, con: sqlite3.Connection, name: str) -> int:
        """Inside a write transaction: delete arrays/<name> when no row refers to it; return bytes freed."""
        if con.execute("SELECT 1 FROM entries WHERE array_name = ? LIMIT 1", (name,)).fetchone():
            return 0
        path = self.arrays_dir / name
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        with contextlib.suppress(FileNotFoundError):
            env = _env_path(path)
            size += env.stat().st_size
            env.unlink()
        self._verified.pop(name, None)
        self._verified.pop(_env_path(path).name, None)
        return size

    @_catalog_errors
    def ensure(self, path: str | Path) -> Entry:
        """The valid entry for a stem file, built first when missing or stale."""
        entry = self.get(path)
        return entry if entry is not None else self.build(path, force=False)

    @_catalog_errors
    def build(self, path: str | Path, *, force: bool = True) -> Entry:
        """Decimate a stem file and store it (replacing any entry for it); return the new entry.

        With force=False, an entry another process finished while this one waited for the lock is reused.
        Raises AudioReadError for a file soundfile cannot read, CacheError when it cannot be stored.
        """
        source = Path(path).resolve()
        if not source.is_file():
            raise AudioReadError(path, "file not found" if not source.exists() else "not a file")
        key = hashlib.blake2b(f"{self.rate}:{source}".encode(), digest_size=16).hexdigest()
        try:
            with _flock(self.locks_dir / f"{key}.lock"):
                if not force:
                    entry = self.get(source)
                    if entry is not None:
                        return entry
                for _attempt in range(3):
                    entry = self._build_once(source)
                    if entry is not None:
                        return entry
        except OSError as exc:
            raise CacheError(f"{self.dir}: cannot store the index entry for {source} "
                             f"({exc.strerror or exc})") from None
        raise CacheError(f"{source}: the file kept changing while it was being indexed")

    def _build_once(self, source: Path) -> Entry | None:
        size, mtime_ns, check = content_check(source)
        info = probe(source)
        tmp = self.arrays_dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.npy"
        tmp_env = _env_path(tmp)
        try:
            n = _analysis_frames(info.frames, info.samplerate, self.rate)
            nbytes = _write_decimated(source, tmp, info.samplerate, info.channels, info.frames, self.rate, n,
                                      info.subtype)
            if content_check(source)[:2] != (size, mtime_ns):
                return None  # changed while we read it: try again
            checksum = _sha256_file(tmp)
            env_frames = _write_energies(tmp, tmp_env) if self.rate == ENV_RATE else 0
            env_checksum = _sha256_file(tmp_env) if env_frames else ""
            name = f"{checksum[:32]}.npy"
            final = self.arrays_dir / name
            created = time.time()
            with self._write() as con:
                os.replace(tmp, final)  # atomic, and under the write lock: serialized with removals
                if env_frames:
                    os.replace(tmp_env, _env_path(final))
                else:
                    with contextlib.suppress(FileNotFoundError):
                        _env_path(final).unlink()
                _fsync_dir(self.arrays_dir)
                old = con.execute("SELECT array_name FROM entries WHERE source = ? AND analysis_rate = ?",
                                  (str(source), self.rate)).fetchone()
                con.execute(
                    f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (str(source), self.rate, size, mtime_ns, check, info.samplerate, info.channels,
                     info.frames, n, name, checksum, nbytes, FORMAT_VERSION, created, "", env_checksum,
                     env_frames, ""),
                )
                if old is not None and old[0] != name:
                    self._unlink_if_unreferenced(con, old[0])
            self._verified[name] = _ident(os.stat(final))
            if env_frames:
                self._verified[_env_path(final).name] = _ident(os.stat(_env_path(final)))
            return Entry(source, size, mtime_ns, check, info.samplerate, info.channels, info.frames,
                         self.rate, n, final, checksum, FORMAT_VERSION, created, env_checksum, env_frames)
        finally:
            for t in (tmp, tmp_env):
                with contextlib.suppress(FileNotFoundError):
                    t.unlink()

    # -- derived data ----------------------------------------------------------------------------------
    def derived(self, key: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Arrays derived from entries (e.g. a timeline's envelope spectrum for the pre-search): loaded from
        derived/ when an earlier run kept them under `key` (a string naming everything they depend on:
        entry checksums, parameters, a version), else made by `make()` and kept. A kept file that does
        not load whole (zip CRC-32 per array, names, no pickles) is removed and made again, never trusted;
        a folder that cannot be written only costs the next run the time to make them. Thread-safe: no
        catalog access; two processes that make one key at once both write the same bytes."""
        path = self.derived_dir / f"{hashlib.blake2b(key.encode(), digest_size=20).hexdigest()}.npz"
        got = _load_derived(path)
        if got is not None:
            with contextlib.suppress(OSError):
                os.utime(path)  # the least recently used go first (_evict_derived)
            return got
        arrays = make()
        tmp = self.derived_dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.npz"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
            self._evict_derived()
        except OSError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError, OSError):
                tmp.unlink()
        return arrays

    def _evict_derived(self) -> None:
        """Keep derived/ under DERIVED_MAX_BYTES: remove the least recently used files first."""
        files = []
        for p in self.derived_dir.glob("*.npz"):
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if total <= DERIVED_MAX_BYTES:
                break
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            total -= size

    @_catalog_errors
    def remove(self, path: str | Path) -> bool:
        """Forget a stem file's entry (and its array unless another entry shares it); True if there was one."""
        source = Path(path).resolve()
        with self._write() as con:
            row = con.execute("SELECT array_name FROM entries WHERE source = ? AND analysis_rate = ?",
                              (str(source), self.rate)).fetchone()
            if row is None:
                return False
            con.execute("DELETE FROM entries WHERE source = ? AND analysis_rate = ?", (str(source), self.rate))
            self._unlink_if_unreferenced(con, row[0])
        return True

    @_catalog_errors
    def prune(self) -> Pruned:
        """Drop rows (at every rate) whose source file is gone or of an old format, orphaned array files,
        stale temp files, unused lock files, a moved-aside damaged catalog and the derived data (made again
        on next use, from the entries that remain)."""
        entries = files = freed = 0
        with self._write() as con:
            for source, rate, fmt in con.execute(
                    "SELECT source, analysis_rate, format_version FROM entries").fetchall():
                if fmt != FORMAT_VERSION or not os.path.isfile(source):
                    con.execute("DELETE FROM entries WHERE source = ? AND analysis_rate = ?", (source, rate))
                    entries += 1
            used = {r[0] for r in con.execute("SELECT DISTINCT array_name FROM entries")}
            used |= {_env_path(Path(u)).name for u in used}
            now = time.time()
            # Derived data is in no row: every file of it goes (but a temp file still being written).
            for p in [*self.arrays_dir.iterdir(), *self.derived_dir.iterdir()]:
                try:
                    st = p.stat()
                    if p.name.startswith(TMP_PREFIX):
                        if now - st.st_mtime < TMP_STALE_S:
                            continue  # probably a build in progress
                    elif p.name in used:
                        continue
                    p.unlink()
                except FileNotFoundError:
                    continue
                self._verified.pop(p.name, None)
                files += 1
                freed += st.st_size
        for p in [*self.dir.glob(CATALOG + ".corrupt*"), *self.dir.glob(TMP_PREFIX + "*")]:
            with contextlib.suppress(FileNotFoundError):
                size = p.stat().st_size
                p.unlink()
                files += 1
                freed += size
        if fcntl is not None:
            for p in self.locks_dir.glob("*.lock"):
                if p.name == "catalog.lock":
                    continue
                with contextlib.suppress(OSError), open(p, "rb") as f:
                    try:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a build holds it
                    p.unlink()  # while holding it: waiters notice the unlink (see _flock)
        return Pruned(entries, files, freed)

    def build_many(self, paths: Iterable[str | Path], jobs: int = 2, progress: ProgressCallback | None = None,
                   *, force: bool = False) -> list[Entry | WhichsoundError]:
        """Ensure (force=False) or rebuild entries for many files with `jobs` worker processes (spawn).

        Returns, in the order of `paths`, each file's Entry or the WhichsoundError that stopped it (an
        unreadable file does not stop the others).  `progress(done, total, path, result)` is called in this
        process as each file finishes.
        """
        paths = [Path(p) for p in paths]
        results: list[Entry | WhichsoundError | None] = [None] * len(paths)
        total = len(paths)
        if jobs <= 1 or total <= 1:
            for i, p in enumerate(paths):
                results[i] = _failure_to_error(_build_one(self, p, force))
                if progress is not None:
                    progress(i + 1, total, p, results[i])
            return results  # type: ignore[return-value]

        def size_of(i: int) -> int:
            try:
                return paths[i].stat().st_size
            except OSError:
                return 0

        order = sorted(range(total), key=size_of, reverse=True)  # longest first: balances the workers
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=ctx, initializer=_init_worker,
                                 initargs=(str(self.dir), self.rate, self.verify)) as pool:
            futures = {pool.submit(_work, str(paths[i]), force): i for i in order}
            done = 0
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = _failure_to_error(fut.result())
                done += 1
                if progress is not None:
                    progress(done, total, paths[i], results[i])
        return results  # type: ignore[return-value]


def _env_path(array_path: Path) -> Path:
    """arrays/<name>.npy -> arrays/<name>.env.npy"""
    return array_path.with_name(array_path.name[: -len(".npy")] + ENV_SUFFIX)


# np.load parses the .npy header with ast.literal_eval, and CPython 3.11's AST constructor keeps its
# recursion count in interpreter-wide state: two search threads loading entries at once can raise
# "SystemError: AST constructor recursion depth mismatch" (seen in CI).
_NPLOAD_LOCK = threading.Lock()


def _npload(path: Path, mmap: bool = False) -> np.ndarray:
    """np.load of one index .npy (no pickles), memory-mapped read-only when mmap, else read into memory;
    thread-safe. Only the mapping (the header parse) holds the lock: reads stay concurrent."""
    with _NPLOAD_LOCK:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    return mapped if mmap else np.array(mapped)


def _load_derived(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a derived/ file, or None when there is none or it is damaged (then removed)."""
    import zipfile

    try:
        # Opened here: np.load leaves its own file open when the zip is damaged.
        with _NPLOAD_LOCK, open(path, "rb") as f:  # header parses: see _NPLOAD_LOCK
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an archive of arrays")
            with z:
                return {k: z[k] for k in z.files}  # reading each array whole checks its CRC-32
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def _ident(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _write_energies(array_tmp: Path, tmp: Path) -> int:
    """Write the envelope sidecar of a freshly written 8 kHz array (band energies of its channels summed,
    align.summed_band_energies); fsync; return its number of frames."""
    from whichsound.align import summed_band_energies

    e = summed_band_energies([_npload(array_tmp, True)]).astype("<f4")
    with open(tmp, "xb") as f:
        np.save(f, e, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return int(e.shape[0])


def _write_decimated(source: Path, tmp: Path, samplerate: int, channels: int, frames: int, rate: int,
                     n: int, subtype: str) -> int:
    """Stream `source` (libsndfile `subtype`) through soxr into a (channels, n) float16 .npy at `tmp`; fsync;
    return its size.

    Integer PCM is decoded to 16 bits (audio.iter_blocks' sixteen_bit): the truncation's noise, -109 dBFS
    within the 8 kHz copy's band, lies under float16's rounding noise (about 75 dB under the signal)
    wherever the signal is louder than about -35 dBFS, and the decode is the largest part of a build's time
    (a 60-min stereo 24-bit stem: 2.43 -> 2.25 s)."""
    import soxr

    can_be_non_finite = not subtype.startswith(("PCM", "ULAW", "ALAW"))
    header = {"descr": "<f2", "fortran_order": False, "shape": (channels, n)}
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            offset = f.tell()
        nbytes = offset + channels * n * 2
        os.ftruncate(fd, nbytes)  # zeros: also the value of any sample soxr did not deliver
        stream = None if samplerate == rate else soxr.ResampleStream(
            samplerate, rate, channels, dtype="float32", quality=QUALITY)
        pos = 0
        flushed = stream is None

        def put(y: np.ndarray) -> None:
            nonlocal pos
            m = min(y.shape[0], n - pos)
            if m <= 0:
                return
            y16 = np.clip(y[:m], -_F16_MAX, _F16_MAX).astype("<f2")
            for c in range(channels):
                os.pwrite(fd, np.ascontiguousarray(y16[:, c]), offset + (c * n + pos) * 2)
            pos += m

        for start, buf in iter_blocks(source, BLOCK_FRAMES, 0, sixteen_bit=True):
            block = buf[: min(BLOCK_FRAMES, frames - start)]
            if can_be_non_finite and not np.isfinite(block).all():  # a float file's plug-in blow-up
                np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            if stream is None:
                put(block)
                continue
            last = start + block.shape[0] >= frames
            put(stream.resample_chunk(block, last=last))
            flushed = last
        if not flushed:
            put(stream.resample_chunk(np.zeros((0, channels), np.float32), last=True))
        os.fsync(fd)
        return nbytes
    finally:
        os.close(fd)


# -- worker processes of build_many ----------------------------------------------------------------------

_worker_index: Index | None = None


@dataclass(frozen=True)
class _Failure:
    """A WhichsoundError crossing the process boundary (their custom __init__s do not unpickle)."""

    kind: str
    message: str
    path: str | None = None
    problem: str | None = None


def _init_worker(cache_dir: str, rate: int, verify: str) -> None:
    from whichsound.memory import keep_freed_memory

    global _worker_index
    keep_freed_memory()
    _worker_index = Index(cache_dir, rate=rate, verify=verify)


def _build_one(index: Index, path: Path, force: bool) -> Entry | _Failure:
    try:
        return index.build(path) if force else index.ensure(path)
    except AudioReadError as exc:
        return _Failure("audio", str(exc), str(exc.path), exc.problem)
    except WhichsoundError as exc:
        return _Failure("cache", str(exc))


def _work(path: str, force: bool) -> Entry | _Failure:
    assert _worker_index is not None
    return _build_one(_worker_index, Path(path), force)


def _failure_to_error(result: Entry | _Failure) -> Entry | WhichsoundError:
    if not isinstance(result, _Failure):
        return result
    if result.kind == "audio" and result.path is not None and result.problem is not None:
        return AudioReadError(result.path, result.problem)
    return CacheError(result.message)
