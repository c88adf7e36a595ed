"""A tolerant, fast reader of snapshot files: single files, directories, globs, gzip, many hosts.

Files are grouped into sources (one host, pod or container) and ordered by their headers
(supervisor start, then file index), so a rotated set reads back in writing order whatever
the file names. Damage is expected after crashes and full disks: a truncated last line is
counted and ignored, a corrupt line in the middle is skipped and counted, an unknown record
kind or field is ignored. Only a file of an unknown major format version stops the reader,
with `UnsupportedVersion`, because guessing at its meaning could give a wrong verdict.
"""

from __future__ import annotations

import glob
import gzip
import logging
import mmap
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from snapshots.schema import FORMAT_MAJOR, FORMAT_VERSION, Burst, Event, Header, Record, Sample

log = logging.getLogger(__name__)

#: Bytes decoded at a time; large enough that per-chunk overhead vanishes, small enough
#: that memory stays bounded whatever the size of the file.
CHUNK = 8 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"
#: What a directory contributes; a file named explicitly is read whatever its name.
_SUFFIXES = (".jsonl", ".jsonl.gz")
_LOGGED_PER_FILE = 3


class SnapshotError(Exception):
    """Snapshots cannot be read as asked (no such path, no snapshot files, unreadable file)."""


class UnsupportedVersion(SnapshotError):
    """A file was written in a major format version this reader does not know."""


class BurstHead(Record, tag="burst"):
    """A burst record without its samples: what the analysis needs, decoded cheaply.

    msgspec skips the unlisted `dt_us`/`rss_delta` arrays without building Python lists.
    """

    worker: str
    generation: int
    pid: int
    cause: str
    interval_us: int = 0
    rss0: int = 0


_FULL = Header | Sample | Event | Burst
_LIGHT = Header | Sample | Event | BurstHead


@dataclass
class ReadStats:
    """What the reader saw; `corrupt` and `truncated` lines were skipped."""

    files: int = 0
    bytes: int = 0
    records: int = 0
    corrupt: int = 0
    truncated: int = 0
    unknown: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class SnapshotFile:
    """One file and the header it begins with (None when the header is missing)."""

    path: str
    header: Header | None
    compressed: bool


@dataclass
class Source:
    """The files of one host/pod/container, in writing order."""

    key: tuple[str, str, str, str]
    files: list[SnapshotFile]

    @property
    def label(self) -> str:
        """`host`, or `namespace/pod/container` for a pod, as people name it."""
        host, namespace, pod, container = self.key
        if pod:
            parts = [p for p in (namespace, pod, container) if p]
            return "/".join(parts)
        return host or "unknown"

    @property
    def header(self) -> Header | None:
        """The newest header (the most recent limit, thresholds and config)."""
        for f in reversed(self.files):
            if f.header is not None:
                return f.header
        return None


def expand(paths: Iterable[str]) -> list[str]:
    """Return the snapshot files that `paths` name (files, directories, glob patterns).

    Raises SnapshotError naming a path that matches nothing.
    """
    found: list[str] = []
    for path in paths:
        matches = [path] if os.path.exists(path) else sorted(glob.glob(path))
        if not matches:
            raise SnapshotError(f"{path}: no such file or directory")
        for match in matches:
            if os.path.isdir(match):
                names = sorted(n for n in os.listdir(match) if n.endswith(_SUFFIXES))
                found.extend(os.path.join(match, n) for n in names)
            else:
                found.append(match)
    unique = list(dict.fromkeys(os.path.normpath(p) for p in found))
    if not unique:
        raise SnapshotError(f"no snapshot files (*.jsonl, *.jsonl.gz) in {', '.join(paths)}")
    return unique


def _open(path: str) -> tuple[object, bool]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - handed to the caller, closed there
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read: {e.strerror}") from None
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), True
    return raw, False


def check_version(version: str, path: str) -> None:
    """Raise UnsupportedVersion unless `version` has this reader's major number."""
    major = version.split(".", 1)[0]
    if major != str(FORMAT_MAJOR):
        raise UnsupportedVersion(
            f"{path}: snapshot format {version!r} is not supported by this memwarden, which "
            f"reads format {FORMAT_MAJOR}.x (it writes {FORMAT_VERSION}); analyse the file with "
            f"the memwarden release that wrote it"
        )


def read_header(path: str) -> SnapshotFile:
    """Return the file with its header. Raises UnsupportedVersion, SnapshotError."""
    f, compressed = _open(path)
    try:
        try:
            first = f.readline(1 << 20)  # type: ignore[attr-defined]
        except (OSError, EOFError) as e:
            raise SnapshotError(f"{path}: cannot read: {e}") from None
    finally:
        f.close()  # type: ignore[attr-defined]
    header = None
    try:
        value = msgspec.json.decode(first)
    except msgspec.DecodeError:
        value = None
    if isinstance(value, dict) and value.get("kind") == "header":
        check_version(str(value.get("version", "1")), path)
        try:
            header = msgspec.convert(value, Header)
        except msgspec.ValidationError as e:
            log.warning("%s: header not understood (%s); reading the file without it", path, e)
    return SnapshotFile(path, header, compressed)


def sources(paths: Iterable[str]) -> list[Source]:
    """Group the files `paths` name by host/pod/container, each in writing order.

    Raises SnapshotError, UnsupportedVersion.
    """
    groups: dict[tuple[str, str, str, str], list[SnapshotFile]] = {}
    for path in expand(paths):
        sf = read_header(path)
        h = sf.header
        key = ((h.host, h.namespace or "", h.pod or "", h.container or "") if h
               else (os.path.basename(path), "", "", ""))
        groups.setdefault(key, []).append(sf)
    result = []
    for key, files in groups.items():
        files.sort(key=lambda f: (f.header.started, f.header.supervisor_pid, f.header.file_index,
                                  f.path) if f.header else (0.0, 0, 0, f.path))
        result.append(Source(key, files))
    result.sort(key=lambda s: s.label)
    return result


def first_time(sf: SnapshotFile) -> float | None:
    """The time of the file's first record after its header (from its first 64 KiB)."""
    return _stamp(_head(sf), reverse=False)


def last_time(sf: SnapshotFile) -> float | None:
    """The time of the file's last readable record, from its tail; None for gzip or none.

    Used with `first_time` to size analysis windows before reading: reads 64 KiB at most.
    """
    if sf.compressed:
        return None
    try:
        with open(sf.path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 65536))
            tail = f.read()
    except OSError:
        return None
    return _stamp(tail, reverse=True)


def _head(sf: SnapshotFile) -> bytes:
    try:
        f, _ = _open(sf.path)
        try:
            return f.read(65536)  # type: ignore[attr-defined,no-any-return]
        finally:
            f.close()  # type: ignore[attr-defined]
    except (OSError, EOFError, SnapshotError):
        return b""


def _stamp(data: bytes, *, reverse: bool) -> float | None:
    lines = data.split(b"\n")
    for line in reversed(lines) if reverse else lines:
        try:
            stamp = msgspec.json.decode(line, type=_Stamp)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if stamp.kind != "header":
            return stamp.t
    return None


class _Stamp(msgspec.Struct):
    kind: str
    t: float


def iter_chunks(
    sf: SnapshotFile, stats: ReadStats, *, bursts: bool = False, types: Any = None
) -> Iterator[list[Record]]:
    """Yield the file's records in lists (one per chunk read).

    Burst records come without their samples unless `bursts` is true; `types` replaces the
    record union altogether (a union of Structs tagged like the schema's, for callers that
    decode only the fields they need). Damaged lines are counted in `stats` and skipped.
    Raises SnapshotError when the file cannot be read.
    """
    decoder = msgspec.json.Decoder(types or (_FULL if bursts else _LIGHT))
    stats.files += 1
    line_base = 0
    for block, complete in _blocks(sf.path, stats):
        if complete:
            records, lines = _decode(decoder, block, sf.path, line_base, stats)
            line_base += lines
        elif not bytes(block).strip():
            continue
        else:
            try:
                records = [decoder.decode(block)]
            except (msgspec.DecodeError, msgspec.ValidationError):
                stats.truncated += 1
                stats.problems.append(f"{sf.path}:{line_base + 1}: last line cut short, ignored")
                continue
        stats.records += len(records)
        yield records


def _blocks(path: str, stats: ReadStats) -> Iterator[tuple[bytes | memoryview, bool]]:
    """Yield (block, complete): blocks of whole lines, then any unterminated tail.

    A plain file is mapped and handed out as views of the mapping (no copy: measured 15 %
    faster than reading, which copies every chunk twice); gzip is read in chunks.
    """
    f, compressed = _open(path)
    try:
        if compressed:
            yield from _read_blocks(f, path, stats)
            return
        size = os.fstat(f.fileno()).st_size  # type: ignore[attr-defined]
        if size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:  # type: ignore[attr-defined]
            view = memoryview(mm)
            pos = 0
            while pos < size:
                end = mm.rfind(b"\n", pos, pos + CHUNK)
                if end < 0:  # a line longer than a chunk, or the unterminated tail
                    end = mm.find(b"\n", pos + CHUNK)
                if end < 0:
                    stats.bytes += size - pos
                    yield bytes(view[pos:]), False
                    break
                stats.bytes += end + 1 - pos
                yield view[pos:end + 1], True
                pos = end + 1
            del view
    except BufferError:
        pass  # a caller still holds a view (a Raw field): the mapping closes when it is freed
    finally:
        f.close()  # type: ignore[attr-defined]


def _read_blocks(f: Any, path: str, stats: ReadStats
                 ) -> Iterator[tuple[bytes | memoryview, bool]]:
    rest = b""
    while True:
        try:
            data = f.read(CHUNK)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            # a gzip file cut short: keep what came before, like a truncated line
            stats.truncated += 1
            stats.problems.append(f"{path}: compressed data ends early ({e})")
            data = b""
        if not data:
            break
        stats.bytes += len(data)
        end = data.rfind(b"\n")
        if end < 0:
            rest += data
            continue
        yield (rest + data[: end + 1] if rest else data[: end + 1]), True
        rest = data[end + 1 :]
    if rest:
        yield rest, False


def _decode(
    decoder: msgspec.json.Decoder, block: bytes | memoryview, path: str, line_base: int,
    stats: ReadStats,
) -> tuple[list[Record], int]:
    """Return the block's records and its number of lines.

    The writer never writes blank lines, so on the fast path the record count is the line
    count and the block need not be scanned for newlines.
    """
    try:
        records = decoder.decode_lines(block)
        return records, len(records)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    # Some line is damaged: decode this block line by line (slow, but only here).
    records: list[Record] = []
    logged = 0
    lines = bytes(block).split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(decoder.decode(line))
            continue
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            error = e
        if _unknown_kind(line):
            stats.unknown += 1
            continue
        stats.corrupt += 1
        where = f"{path}:{line_base + i + 1}"
        stats.problems.append(f"{where}: corrupt line skipped ({error})")
        if logged < _LOGGED_PER_FILE:
            log.warning("%s: corrupt snapshot line skipped: %s", where, error)
            logged += 1
    return records, len(lines) - 1


def _unknown_kind(line: bytes) -> bool:
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return False
    return isinstance(value, dict) and value.get("kind") not in ("header", "sample", "event",
                                                                 "burst")


__all__ = [
    "BurstHead",
    "ReadStats",
    "SnapshotError",
    "SnapshotFile",
    "Source",
    "UnsupportedVersion",
    "check_version",
    "expand",
    "first_time",
    "iter_chunks",
    "last_time",
    "read_header",
    "sources",
]
