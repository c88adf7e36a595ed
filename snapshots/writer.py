"""The snapshot writer: a thread that encodes records to JSONL files, rotates and prunes them.

The supervisor's sampling and event loop call `submit`, which only appends to a bounded
queue; everything that can be slow (encoding, the disk) happens on the writer's own thread.
A slow or full disk therefore costs snapshot records, never supervision: records are dropped,
counted, announced in an Event of type "dropped" once writing works again, and logged once per
burst of failures: a disk that is nearly full (small writes pass, large ones fail) is said
at most once per `_QUIET_S`, not at every retry. A directory removed while memwarden runs
is created again, and a file removed from under the writer is replaced by the next one.

`STDOUT` (`--snapshots -`) writes to standard output instead, for a log pipeline: one
record per write, so that a line of up to 4 KiB (PIPE_BUF; samples and events are a few
hundred bytes) never interleaves with the worker's own output on the same pipe; no
rotation or retention (the pipeline has its own); and no bursts, whose lines of tens of
KiB the container runtimes split at 16 KiB.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import re
import socket
import threading
import time

import msgspec

from snapshots.schema import Burst, Event, Header, Record

log = logging.getLogger("memwarden.snapshots.writer")

#: Bytes collected before a write even when the flush interval has not passed.
_WRITE_CHUNK = 256 * 1024
#: While the disk fails, how often the writer tries again.
_RETRY_S = 1.0
#: After a failure was logged, further failures within this long are not (its recovery
#: line is logged only when its failure was).
_QUIET_S = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
#: The directory that means standard output.
STDOUT = "-"


def file_prefix(host: str) -> str:
    """Return the name prefix of this host's snapshot files (`memwarden-<host>-`)."""
    return f"memwarden-{_UNSAFE.sub('_', host) or 'host'}-"


class SnapshotWriter:
    """Write records to `directory` as `memwarden-<host>-<start>-<pid>-<index>.jsonl`.

    Names sort in writing order. Every file begins with `header` (its `file_index` and `t`
    filled in). A file is closed once it reaches `max_bytes`; after each rotation only the
    `keep` newest files of this host are kept and any older than `max_age_s` are removed.
    `directory` `STDOUT` writes to standard output instead (see the module's doc).
    `submit` never blocks and never raises; `written` and `dropped` count records.
    """

    def __init__(
        self,
        directory: str,
        header: Header,
        *,
        max_bytes: int = 64 * 2**20,
        keep: int = 8,
        max_age_s: float = 7 * 86400,
        flush_interval_s: float = 1.0,
        queue_limit: int = 65536,
    ) -> None:
        if max_bytes < 1024 or keep < 1 or queue_limit < 1:
            raise ValueError(
                f"snapshot writer: max_bytes >= 1024, keep >= 1 and queue_limit >= 1 "
                f"(got {max_bytes}, {keep}, {queue_limit})"
            )
        self.directory = directory
        self.header = header
        self.stream = directory == STDOUT
        # One file for ever: a pipeline rotates what it keeps.
        self.max_bytes = 2**62 if self.stream else max_bytes
        self.keep = keep
        self.max_age_s = max_age_s
        self.flush_interval_s = flush_interval_s
        self.queue_limit = queue_limit
        self.written = 0
        self.dropped = 0
        self.files: list[str] = []
        self._prefix = file_prefix(header.host or socket.gethostname())
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(header.started or time.time()))
        self._stem = f"{self._prefix}{stamp}-{os.getpid()}-"
        # deque.append/popleft are atomic under the GIL, so the caller never takes a lock;
        # a queue.Queue would lock twice per record and could block on a full queue.
        self._queue: collections.deque[Record] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._encoder = msgspec.json.Encoder()
        self._buffer = bytearray()
        self._buffered = 0  # records in _buffer
        self._fd = -1
        self._size = 0
        self._index = 0
        self._failing = False  # the disk refused the last write: drop until the retry
        self._outage = False  # failing since the last successful write
        self._outage_logged = False  # ... and that was said
        self._last_fail_log = -_QUIET_S
        self._pending_dropped = 0  # dropped since the last announcement
        self._retry_at = 0.0

    # -- caller side ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (the first file is opened there)."""
        if not self.stream:
            os.makedirs(self.directory, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="memwarden-snapshots", daemon=True)
        self._thread.start()

    def submit(self, record: Record) -> bool:
        """Queue `record`; return False (and count it) when it was dropped instead.

        Drops happen when the queue is full or while the disk is failing. Thread-safe,
        never blocks, never raises.
        """
        queue = self._queue
        if self.stream and type(record) is Burst:
            return True  # left out by design, not dropped (see the module's doc)
        if self._failing or len(queue) >= self.queue_limit or self._stop:
            self._count_drop(1)
            return False
        queue.append(record)
        if len(queue) > self.queue_limit >> 2 and not self._wake.is_set():
            self._wake.set()
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, close the file and stop the thread (waits at most `timeout_s`)."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("snapshot writer did not finish within %.1fs; %d records left",
                            timeout_s, len(self._queue))

    # -- writer thread -------------------------------------------------------------------

    def _count_drop(self, n: int) -> None:
        # Plain increments from two threads may lose a count under contention; the figures
        # are diagnostics, and a lock here would put the writer's contention on the caller.
        self.dropped += n
        self._pending_dropped += n

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # the thread must never die silently and take snapshots with it
            log.exception("snapshot writer stopped by an unexpected error")
        finally:
            self._close_file()

    def _loop(self) -> None:
        queue = self._queue
        encode_into = self._encoder.encode_into
        buffer = self._buffer
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            stopping = self._stop
            if self._failing:
                self._retry()
            else:
                if self._fd < 0:
                    self._open_next()
                # Write when the chunk is full or the file reaches its size: files end
                # within one record of `max_bytes`.
                limit = 1 if self.stream else min(_WRITE_CHUNK,
                                                  max(self.max_bytes - self._size, 1))
                while queue and len(buffer) < limit:
                    record = queue.popleft()
                    mark = len(buffer)
                    try:
                        encode_into(record, buffer, -1)
                    except (TypeError, ValueError, OverflowError) as e:
                        del buffer[mark:]  # never leave half a record in the file
                        log.warning("snapshot record %s not encodable, skipped: %s",
                                    type(record).__name__, e)
                        self._count_drop(1)
                        continue
                    buffer.extend(b"\n")
                    self._buffered += 1
                now = time.monotonic()
                if len(buffer) >= limit or now >= next_flush or stopping:
                    self._flush()
                    next_flush = now + self.flush_interval_s
            if stopping and (not queue or self._failing):
                self._flush()
                while queue:  # the disk failed during shutdown: count what is left
                    queue.popleft()
                    self._count_drop(1)
                return
            if not queue or self._failing:
                # Sleep until something is due (the flush, the retry of a failing disk), not
                # on a short poll: each wake of this thread costs the whole process CPU, and
                # submit() wakes it early once the queue fills (measured: 20 wakes a second
                # were 0.2 % of a core, an eighth of an idle memwarden).
                due = self._retry_at if self._failing else next_flush
                self._wake.wait(min(max(due - time.monotonic(), 0.001), self.flush_interval_s))
                self._wake.clear()

    def _flush(self) -> None:
        if not self._buffer or self._fd < 0:
            return
        if self._removed():  # writing on would go into a file nobody can read
            self._close_file()
            self._open_next()
            if self._fd < 0:
                self._count_drop(self._buffered)
                self._buffer.clear()
                self._buffered = 0
                return
        if self._pending_dropped and not self._failing:
            self._announce_drops()
        if self._write(self._buffer):
            self.written += self._buffered
        else:
            self._count_drop(self._buffered)
        self._buffer.clear()
        self._buffered = 0
        if self._size >= self.max_bytes:
            self._close_file()
            self._open_next()

    def _announce_drops(self) -> None:
        n = self._pending_dropped
        note = Event(t=time.time(), type="dropped", dropped=n,
                     message=f"{n} snapshot records dropped (disk full or slow)")
        line = self._encoder.encode(note) + b"\n"
        if self._write(line):  # not counted in `written`: that counts submitted records
            self._pending_dropped -= n

    def _write(self, data: bytes | bytearray) -> bool:
        """Write all of `data` or nothing (a partial line is cut off again); False on failure."""
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as e:
            self._fail(e)
            if done:
                try:  # never leave half a line: the reader would count it as corrupt
                    os.ftruncate(self._fd, self._size)
                except OSError:
                    log.debug("could not cut back a partial snapshot line", exc_info=True)
            return False
        self._size += done
        if self._outage:
            self._outage = False
            if self._outage_logged:
                log.warning("snapshots: writing to %s again; %d records dropped in total",
                            self.directory, self.dropped)
        return True

    def _fail(self, error: OSError) -> None:
        if not self._outage:
            self._outage = True
            now = time.monotonic()
            self._outage_logged = now - self._last_fail_log >= _QUIET_S
            if self._outage_logged:
                self._last_fail_log = now
                reason = errno.errorcode.get(error.errno or 0, str(error.errno))
                log.warning("snapshots: cannot write to %s (%s: %s); dropping records until "
                            "it works again, supervision goes on", self.directory, reason,
                            error.strerror)
        self._failing = True
        self._retry_at = time.monotonic() + _RETRY_S

    def _retry(self) -> None:
        if time.monotonic() < self._retry_at:
            return
        if self._fd < 0:
            self._failing = False
            self._open_next()
        else:
            self._failing = False
            if self._pending_dropped:
                self._announce_drops()

    def _removed(self) -> bool:
        """True when the open file has no name any more (it, or its directory, was removed)."""
        if self.stream:
            return False
        try:
            return os.fstat(self._fd).st_nlink == 0
        except OSError:
            return True

    def _open_next(self) -> None:
        if self.stream:
            self._open_stream()
            return
        path = os.path.join(self.directory, f"{self._stem}{self._index:04d}.jsonl")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        try:
            try:
                fd = os.open(path, flags, 0o644)
            except FileNotFoundError:  # the directory was removed: make it again
                os.makedirs(self.directory, exist_ok=True)
                log.warning("snapshots: %s was removed; created it again", self.directory)
                fd = os.open(path, flags, 0o644)
        except OSError as e:
            self._fail(e)
            return
        self._fd, self._size = fd, 0
        self._index += 1
        self.files.append(path)
        header = msgspec.structs.replace(self.header, t=time.time(), file_index=self._index - 1)
        if not self._write(self._encoder.encode(header) + b"\n"):
            # A file without its header is useless to the reader: remove it and retry later.
            self._close_file()
            self.files.pop()
            self._index -= 1
            with contextlib.suppress(OSError):
                os.unlink(path)
            return
        self._prune()

    def _open_stream(self) -> None:
        """Standard output, duplicated: closing the writer leaves it open for the rest."""
        try:
            fd = os.dup(1)
        except OSError as e:
            self._fail(e)
            return
        os.set_inheritable(fd, False)
        self._fd, self._size = fd, 0
        self._index += 1
        self.files.append(STDOUT)
        header = msgspec.structs.replace(self.header, t=time.time(), file_index=0)
        if not self._write(self._encoder.encode(header) + b"\n"):
            self._close_file()
            self.files.pop()
            self._index -= 1

    def _close_file(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def _prune(self) -> None:
        """Keep this host's `keep` newest files; remove those older than `max_age_s`.

        Newest by modification time, not by name: names of different runs differ in pid
        width and an index can outgrow its padding; and a file another writer on the same
        host is still appending to (containers of one pod share a hostname) is among the
        newest, so it is not taken from under it.
        """
        try:
            found = []
            for name in os.listdir(self.directory):
                if name.startswith(self._prefix) and ".jsonl" in name:
                    with contextlib.suppress(OSError):  # gone meanwhile
                        found.append((os.stat(os.path.join(self.directory, name)).st_mtime,
                                      name))
        except OSError as e:
            log.warning("snapshots: cannot list %s for retention: %s", self.directory, e)
            return
        found.sort()
        now = time.time()
        current = os.path.basename(self.files[-1]) if self.files else None
        for i, (mtime, name) in enumerate(found):
            if name != current and (now - mtime > self.max_age_s or i < len(found) - self.keep):
                with contextlib.suppress(OSError):  # gone already, or not ours to remove
                    os.unlink(os.path.join(self.directory, name))


__all__ = ["STDOUT", "SnapshotWriter", "file_prefix"]
