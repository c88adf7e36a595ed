"""The Automaton's state file: JSON lines of objects, appended on change, compacted by rename.

Format (one JSON object per line, UTF-8, each ending in a newline):

* an object record is the object itself; it must have an `"id"` (string or integer);
  an update of an existing object carries `"_rev": N` (N counting up from 1);
* a removal is `{"id": ..., "_deleted": true}`.

A later line for an id replaces an earlier one. Two lines for one id without a rising
`_rev` are *duplicates* (two objects claiming one id) and are reported; the later wins.
A crash can leave only a torn last line (no newline): it is ignored when reading and cut
off before the next append. Compaction writes a new file beside the old one, fsyncs it
and renames it over the old one, so a crash mid-save leaves one or the other, whole.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from workers._log import get_logger

log = get_logger(__name__)

REV = "_rev"
DELETED = "_deleted"
Id = str | int

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class Loaded:
    """What reading a state file found."""

    def __init__(self) -> None:
        #: The most recent objects, oldest first: id -> (object, rev).
        self.objects: OrderedDict[Id, tuple[dict[str, Any], int]] = OrderedDict()
        self.duplicates: list[Id] = []
        self.lines = 0
        self.malformed = 0
        self.torn = False


def read_records(path: str) -> Iterator[tuple[int, dict[str, Any] | None, bool]]:
    """Yield (line number, record or None if malformed, torn) for every line of `path`.

    Only a last line without its newline is torn. Raises OSError if unreadable.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            torn = not raw.endswith(b"\n")
            record: Any = None
            if not torn:
                try:
                    record = _decoder.decode(raw)
                except msgspec.DecodeError:
                    record = None
                if not isinstance(record, dict) or not isinstance(record.get("id"), str | int):
                    record = None
            yield n, record, torn


def load(path: str, max_objects: int) -> Loaded:
    """Read `path`, keeping only the `max_objects` most recently written objects.

    Duplicates are detected among the objects kept (memory stays bounded by
    `max_objects`; `python -m workers.investigate` checks a whole file). A missing file
    loads as empty; malformed lines are logged and skipped.
    """
    out = Loaded()
    if not os.path.exists(path):
        return out
    objects = out.objects
    for n, record, torn in read_records(path):
        out.lines = n
        if torn:
            out.torn = True
            log.warning("%s: ignored the torn last line %s (a crash cut it short)", path, n)
            continue
        if record is None:
            out.malformed += 1
            log.warning("%s: ignored malformed line %s (not an object with an id)", path, n)
            continue
        oid = record["id"]
        if record.get(DELETED):
            objects.pop(oid, None)
            continue
        rev = record.pop(REV, 0)
        rev = rev if isinstance(rev, int) else 0
        old = objects.pop(oid, None)
        if old is not None and rev <= old[1]:
            out.duplicates.append(oid)
        objects[oid] = (record, rev)
        if len(objects) > max_objects:
            objects.popitem(last=False)
    return out


def encode(obj: dict[str, Any], rev: int) -> bytes:
    """Return the line for `obj` at revision `rev` (newline included)."""
    if rev:
        obj = {**obj, REV: rev}
    return _encoder.encode(obj) + b"\n"


class StateFile:
    """An open state file: append records, compact atomically."""

    def __init__(self, path: str, sync: bool = False) -> None:
        self.path = path
        self.sync = sync
        self.lines = 0
        self._fd = -1

    def open(self, lines: int = 0) -> None:
        """Open for appending, first cutting off a torn last line; `lines` is how many
        complete lines the file holds (from `load`)."""
        self.lines = lines
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        size = os.fstat(fd).st_size
        if size:
            # Find the last newline; whatever follows it is a torn record.
            pos = size
            while pos > 0:
                chunk_start = max(0, pos - 65536)
                chunk = os.pread(fd, pos - chunk_start, chunk_start)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    pos = chunk_start + nl + 1
                    break
                pos = chunk_start
            if pos != size:
                os.ftruncate(fd, pos)
        self._fd = fd
        stale = self.path + ".tmp"
        if os.path.exists(stale):
            os.unlink(stale)

    def append(self, line: bytes) -> None:
        """Append one encoded line (one write: a crash leaves it whole or torn)."""
        os.write(self._fd, line)
        if self.sync:
            os.fsync(self._fd)
        self.lines += 1

    def compact(self, lines: Iterable[bytes]) -> int:
        """Replace the file by `lines`, atomically; return how many were written."""
        tmp = self.path + ".tmp"
        n = 0
        with open(tmp, "wb") as f:
            for line in lines:
                f.write(line)
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.lines = n
        return n

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
