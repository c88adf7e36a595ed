"""The Automaton's state file: a log of JSON lines that several generations share safely.

Format (one JSON object per line, UTF-8, each ending in a newline):

* an object record is the object itself; it must have an `"id"` (string or integer);
  an update of an existing object carries `"_rev": N` (N counting up from 1);
* a removal is `{"id": ..., "_deleted": true}`.

The state is the *fold* of the log: a later line for an id replaces an earlier one, so the
newest write wins, and no clock is involved: appends are serialised by a lock, so the
order of the lines is the order in which they were made. Two lines for one id without a
rising `_rev` are *duplicates* (two objects claiming one id) and are reported.

Sharing (make before break: the next generation loads while the old one still writes):

* Every append, compaction and load holds the writers' mutex of `<path>.lock`
  (`workers.statelock`); a process killed while holding it releases it by dying.
* The data file is opened for each locked operation and closed after it, so no process
  ever holds a descriptor of a file that a compaction has replaced: nothing is ever
  written into an unlinked file.
* Before each operation a process catches up: it reads what others appended since it last
  looked (or, if another process compacted, the whole new file) into its own state. Every
  live process therefore holds the fold of the log, and revisions keep rising across
  processes.
* Compaction (rewrite the file from the objects held, atomically by rename) is done only
  by the newest live loader. A superseded process only appends: its trims stay in its own
  memory and do not remove what its successor loaded.
* A crash can leave only a torn last line (no newline). The next writer cuts it off under
  the mutex before appending; readers ignore it. A crash mid-compaction leaves the old
  file whole and a stale `<path>.tmp`, which the next compaction overwrites.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from workers._log import get_logger
from workers.statelock import LockFile, forget_in_child

log = get_logger(__name__)

REV = "_rev"
DELETED = "_deleted"
Id = str | int

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_CHUNK = 1 << 20


class Loaded:
    """What reading a state file (or part of one) found."""

    def __init__(self) -> None:
        #: The most recent objects, oldest first: id -> (object, rev).
        self.objects: OrderedDict[Id, tuple[dict[str, Any], int]] = OrderedDict()
        self.duplicates: list[Id] = []
        self.lines = 0
        self.malformed = 0
        self.torn = False


def decode_line(raw: bytes) -> dict[str, Any] | None:
    """Return the record on one line (newline optional), or None when it is not an object
    with a string or integer id. Never raises on bad bytes."""
    try:
        record = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    oid = record.get("id")
    if not isinstance(oid, str | int) or isinstance(oid, bool):
        return None
    return record


def read_records(path: str) -> Iterator[tuple[int, dict[str, Any] | None, bool]]:
    """Yield (line number, record or None if malformed, torn) for every line of `path`.

    Only a last line without its newline is torn. Raises OSError if unreadable.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            torn = not raw.endswith(b"\n")
            yield n, (None if torn else decode_line(raw)), torn


def fold(out: Loaded, record: dict[str, Any], max_objects: int) -> None:
    """Apply one record to `out`: the newest write of an id wins; a removal forgets it."""
    oid = record["id"]
    if record.get(DELETED):
        out.objects.pop(oid, None)
        return
    rev = record.pop(REV, 0)
    rev = rev if isinstance(rev, int) and not isinstance(rev, bool) else 0
    old = out.objects.pop(oid, None)
    if old is not None and rev <= old[1]:
        out.duplicates.append(oid)
    out.objects[oid] = (record, rev)
    if len(out.objects) > max_objects:
        out.objects.popitem(last=False)


def load(path: str, max_objects: int) -> Loaded:
    """Read `path` without locking, keeping only the `max_objects` most recently written
    objects (for tools; a worker loads through `StateFile.load`).

    A missing file loads as empty; malformed lines are logged and skipped.
    """
    out = Loaded()
    if not os.path.exists(path):
        return out
    for n, record, torn in read_records(path):
        out.lines = n
        if torn:
            out.torn = True
            log.warning("%s: ignored the torn last line %s (a crash cut it short)", path, n)
        elif record is None:
            out.malformed += 1
            log.warning("%s: ignored malformed line %s (not an object with an id)", path, n)
        else:
            fold(out, record, max_objects)
    return out


def encode(obj: dict[str, Any], rev: int) -> bytes:
    """Return the line for `obj` at revision `rev` (newline included)."""
    if rev:
        obj = {**obj, REV: rev}
    return _encoder.encode(obj) + b"\n"


class Changes:
    """What other processes wrote since this one last looked.

    `reloaded` is the whole state when another process compacted the file (the process must
    replace what it holds by it); otherwise `records` are the new lines, oldest first.
    """

    __slots__ = ("records", "reloaded")

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.reloaded: Loaded | None = None

    def __bool__(self) -> bool:
        return bool(self.records) or self.reloaded is not None


class StateFile:
    """A state file shared with other generations; see the module docstring.

    Not thread-safe: the Automaton serialises calls with its own lock. Every method that
    touches the file raises OSError when the file system refuses (after undoing a partial
    append), RuntimeError where OFD locks are missing.
    """

    def __init__(self, path: str, sync: bool = False) -> None:
        self.path = path
        self.sync = sync
        #: Complete lines in the file, as far as this process knows.
        self.lines = 0
        self._lock: LockFile | None = None
        self._fd = -1
        self._size = 0
        self._version = 0
        self._max_objects = 1
        forget_in_child(self)

    def _forget_in_child(self) -> None:
        # Only the descriptor: the lock file forgets itself.
        self._close_data()

    def load(self, max_objects: int) -> Loaded:
        """Load the newest `max_objects` objects and become the newest loader, which makes
        every older live loader superseded. Returns what was read."""
        if self._lock is None:
            self._lock = LockFile(self.path + ".lock")
        self._max_objects = max_objects
        self._lock.acquire()
        try:
            self._lock.claim()
            self._open()
            loaded = self._read_all()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + ".tmp")  # a compaction that crashed; ours now
        finally:
            self._close_data()
            self._lock.release()
        return loaded

    @contextlib.contextmanager
    def locked(self, max_objects: int) -> Iterator[Changes]:
        """Hold the writers' mutex; yield what others wrote since this process last looked.

        Inside, `append` and `compact` may be called. Loads first if not loaded yet.
        """
        if self._lock is None:
            raise RuntimeError(f"{self.path}: load the state file before writing to it")
        self._max_objects = max_objects
        self._lock.acquire()
        try:
            self._open()
            yield self._catch_up()
        finally:
            self._close_data()
            self._lock.release()

    def superseded(self) -> bool:
        """True while a process that loaded this file after this one is alive."""
        return self._lock is not None and self._lock.superseded()

    def newest_loader_pid(self) -> int:
        """The pid of the process that loaded last (for messages)."""
        return self._lock.header().pid if self._lock is not None else 0

    # -- inside the mutex ---------------------------------------------------------------

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o644)

    def _close_data(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _cut_torn_tail(self, size: int) -> int:
        """Cut a torn last line (left by a writer that died mid-write); return the size."""
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return size
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            nl = os.pread(self._fd, pos - start, start).rfind(b"\n")
            if nl >= 0:
                pos = start + nl + 1
                break
            pos = start
        log.warning("%s: cut off a torn last line of %s bytes (a writer died writing it)",
                    self.path, size - pos)
        os.ftruncate(self._fd, pos)
        return pos

    def _read_all(self) -> Loaded:
        """Fold the whole (open) file; remember its size, line count and version."""
        assert self._lock is not None
        self._version = self._lock.header().version
        found = os.fstat(self._fd).st_size
        size = self._cut_torn_tail(found)
        out = Loaded()
        out.torn = size != found
        self._read_range(0, size, out, None)
        self._size, self.lines = size, out.lines
        return out

    def _read_range(self, start: int, end: int, out: Loaded | None,
                    records: list[dict[str, Any]] | None) -> None:
        """Decode the complete lines in [start, end): fold them into `out`, or collect
        them in `records`. Reads a chunk at a time."""
        pending = b""
        pos = start
        while pos < end:
            chunk = os.pread(self._fd, min(_CHUNK, end - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for raw in lines:
                if out is not None:
                    out.lines += 1
                else:
                    self.lines += 1
                record = decode_line(raw)
                if record is None:
                    if out is not None:
                        out.malformed += 1
                    log.warning("%s: ignored a malformed line (not an object with an id)",
                                self.path)
                elif out is not None:
                    fold(out, record, self._max_objects)
                elif records is not None:
                    records.append(record)

    def _catch_up(self) -> Changes:
        assert self._lock is not None
        changes = Changes()
        version = self._lock.header().version
        size = os.fstat(self._fd).st_size
        if version != self._version:
            # Another process compacted: the file is new, offsets mean nothing.
            changes.reloaded = self._read_all()
        elif size != self._size:
            size = self._cut_torn_tail(size)
            if size < self._size:
                log.warning("%s: the file shrank from %s to %s bytes outside memwarden's "
                            "workers; the objects held are written again at the next save",
                            self.path, self._size, size)
            else:
                self._read_range(self._size, size, None, changes.records)
            self._size = size
        return changes

    def append(self, line: bytes) -> None:
        """Append one encoded line (call inside `locked`). A partial write is undone and
        raised as OSError: the record is then not saved."""
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
            if self.sync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(line)
        self.lines += 1

    def compact(self, lines: Iterable[bytes]) -> int:
        """Replace the file by `lines`, atomically (call inside `locked`); return how many
        were written."""
        assert self._lock is not None
        tmp = self.path + ".tmp"
        n = size = 0
        with open(tmp, "wb") as f:
            for line in lines:
                f.write(line)
                size += len(line)
                n += 1
            f.flush()
            os.fsync(f.fileno())
        # The version rises first: if this process dies before the rename, the others
        # reload an unchanged file, which costs a read; the other order would leave them
        # reading the new file at old offsets.
        self._version = self._lock.bump_version()
        # Closed before the rename, so that not even this process holds the old file
        # open once it is unlinked.
        self._close_data()
        os.replace(tmp, self.path)
        dir_fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._open()
        self._size, self.lines = size, n
        return n

    def sync_now(self) -> None:
        """Flush appended lines to the disk (call inside `locked`)."""
        os.fsync(self._fd)

    def close(self) -> None:
        """Release the lock file: this process stops counting as a loader (idempotent)."""
        self._close_data()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
