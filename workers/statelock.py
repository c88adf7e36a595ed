"""The lock file beside a state file (`automaton.jsonl.lock`): who may write, who loaded last.

Two generations of a worker share one state file while a replacement starts (make before
break). This file is what keeps them from corrupting it; it is never renamed or deleted,
so every process that opens the path locks the same inode.

* **The writers' mutex**: an open-file-description lock (`F_OFD_SETLKW`) on byte 0, held
  only for one append or one compaction. The kernel releases it when its holder dies, even
  by SIGKILL, so a crash can never leave the state file locked.
* **Loaders' epochs**: each process that loads the state takes the next epoch number and
  holds a lock on byte `epoch` for as long as it runs. A process is *superseded* while a
  lock on a higher byte is held, i.e. while a newer loader is alive: it then neither
  compacts nor saves its trims (see `workers.statefile`). When the newer one dies, its lock
  goes with it and the older one is in charge again.
* **The header** (the file's first line, rewritten under the mutex): the last epoch given
  out, the data file's version (raised by every compaction, before it renames the new
  file into place) and the pid of the last loader, for messages.

Why OFD locks rather than `flock` or `lockf`: `flock` has one lock per file, not ranges;
`lockf` locks belong to the process and are all dropped when *any* of its descriptors of
the file is closed. OFD locks (Linux 3.15 and later) have neither problem.
"""

from __future__ import annotations

import fcntl
import os
import struct
import weakref
from typing import Protocol

#: `struct flock` on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (+ padding).
_FLOCK = struct.Struct("@hhqqi4x")
_HEADER_SIZE = 96
_MAGIC = b"memwarden-state-lock"


class _ForkAware(Protocol):
    def _forget_in_child(self) -> None: ...


#: Open lock and state files. A forked child would share their open file descriptions,
#: and with them the parent's locks: a parent killed while it held the mutex would leave
#: it held for as long as the child lived. The child closes its copies at once.
_open_files: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def forget_in_child(obj: _ForkAware) -> None:
    """Have `obj._forget_in_child()` called in every child forked from now on."""
    _open_files.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_open_files):
        obj._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Header:
    """The lock file's header: epoch given out last, data file version, last loader's pid."""

    __slots__ = ("epoch", "pid", "version")

    def __init__(self, epoch: int = 0, version: int = 0, pid: int = 0) -> None:
        self.epoch, self.version, self.pid = epoch, version, pid

    def encode(self) -> bytes:
        line = b"%s epoch=%d version=%d pid=%d" % (_MAGIC, self.epoch, self.version, self.pid)
        return line.ljust(_HEADER_SIZE - 1) + b"\n"

    @classmethod
    def decode(cls, raw: bytes) -> Header:
        """Parse a header; anything unreadable counts as a fresh one (all zeros)."""
        fields = raw.split()
        if not fields or fields[0] != _MAGIC:
            return cls()
        values: dict[bytes, int] = {}
        for field in fields[1:]:
            key, _, value = field.partition(b"=")
            if value.isdigit():
                values[key] = int(value)
        return cls(values.get(b"epoch", 0), values.get(b"version", 0), values.get(b"pid", 0))


class LockFile:
    """An open lock file. Not thread-safe: its owner serialises calls (the Automaton's lock).

    Raises OSError when the file cannot be created or opened, and RuntimeError where the
    platform has no OFD locks.
    """

    def __init__(self, path: str) -> None:
        if not hasattr(fcntl, "F_OFD_SETLKW"):
            raise RuntimeError("shared state files need open-file-description locks "
                               "(Linux 3.15 or later)")
        self.path = path
        self.epoch = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        forget_in_child(self)

    def _forget_in_child(self) -> None:
        # Closing the child's descriptor releases nothing: the parent's still refers to
        # the same open file description, which holds the locks.
        self.close()

    def _lock(self, cmd: int, kind: int, start: int, length: int) -> tuple[int, int]:
        """Run an OFD lock command; return the (l_type, l_start) the kernel answered."""
        if self._fd < 0:
            raise RuntimeError(f"{self.path} is closed (a forked child cannot write its "
                               "parent's state file: open an Automaton of its own)")
        answer = fcntl.fcntl(self._fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))
        l_type, _, l_start, _, _ = _FLOCK.unpack(answer)
        return l_type, l_start

    def acquire(self) -> None:
        """Take the writers' mutex, waiting as long as another writer holds it."""
        self._lock(fcntl.F_OFD_SETLKW, fcntl.F_WRLCK, 0, 1)

    def release(self) -> None:
        """Release the writers' mutex."""
        self._lock(fcntl.F_OFD_SETLK, fcntl.F_UNLCK, 0, 1)

    def header(self) -> Header:
        """Read the header (hold the mutex for a consistent answer)."""
        return Header.decode(os.pread(self._fd, _HEADER_SIZE, 0))

    def _write_header(self, header: Header) -> None:
        os.pwrite(self._fd, header.encode(), 0)

    def claim(self) -> int:
        """Become the newest loader: take the next epoch and hold its lock while this
        process runs. Call with the mutex held; returns the epoch."""
        header = self.header()
        header.epoch += 1
        header.pid = os.getpid()
        self._write_header(header)
        self._lock(fcntl.F_OFD_SETLK, fcntl.F_WRLCK, header.epoch, 1)
        self.epoch = header.epoch
        return header.epoch

    def bump_version(self) -> int:
        """Raise the data file's version (before replacing the file); mutex held."""
        header = self.header()
        header.version += 1
        self._write_header(header)
        return header.version

    def superseded(self) -> bool:
        """True while a process that loaded after this one is alive."""
        if self.epoch == 0:
            return False
        # A length of 0 reaches to the end of any file: every later epoch at once.
        l_type, _ = self._lock(fcntl.F_OFD_GETLK, fcntl.F_WRLCK, self.epoch + 1, 0)
        return l_type != fcntl.F_UNLCK

    def close(self) -> None:
        """Close the file, which releases every lock this process held on it (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.epoch = 0
