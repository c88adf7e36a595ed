"""The worker's end of the channel: JSON-lines framing over an inherited socket.

The descriptor is used with `os.read`/`os.write` and `select.poll` rather than the
`socket` module: it is all a line channel needs, and it keeps `import workers` light.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable

import msgspec

from workers._log import get_logger
from workers.protocol import DECODE_ERRORS, MAX_LINE, FromWorker, LineSplitter, ToWorker

log = get_logger(__name__)

#: How long `send` waits for room on a non-blocking descriptor before dropping a message.
SEND_WAIT_S = 1.0


#: At most one warning about dropped lines per this many seconds.
DROP_LOG_EVERY_S = 10.0


class Drops:
    """Lines from the supervisor that were dropped: counted, and logged at most once per
    `DROP_LOG_EVERY_S` (a flood of garbage must not become a flood of log lines)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = 0
        self._clock = clock
        self._unlogged = 0
        self._next_log = -float("inf")

    def add(self, why: str, line: bytes = b"") -> None:
        """Count one dropped line; log it unless a warning went out recently."""
        self.count += 1
        self._unlogged += 1
        now = self._clock()
        if now >= self._next_log:
            log.warning("channel: dropped %s line(s) from the supervisor (%s in all); the "
                        "last: %s: %.200r", self._unlogged, self.count, why, line)
            self._unlogged = 0
            self._next_log = now + DROP_LOG_EVERY_S


class LineReader(LineSplitter):
    """The protocol's framing, counting the lines it discards as too long."""

    def __init__(self, drops: Drops | None = None, max_line: int = MAX_LINE) -> None:
        super().__init__(max_line)
        self.drops = drops or Drops()

    def _discard(self) -> None:
        super()._discard()
        self.drops.add(f"longer than {self.max_line} bytes")


_decoder = msgspec.json.Decoder(ToWorker)


def decode(line: bytes, drops: Drops | None = None) -> ToWorker | None:
    """Return the message in `line`, or None when it is empty, malformed or unknown (then
    counted in `drops`). Never raises on any bytes."""
    if not line.strip():
        return None
    try:
        return _decoder.decode(line)
    except DECODE_ERRORS as e:
        # ValidationError is a DecodeError: an unknown type or a bad field lands here too.
        # Invalid UTF-8 and deep nesting raise the other two.
        if drops is not None:
            drops.add(f"{type(e).__name__}: {e}", line)
        return None


class Channel:
    """A connected channel descriptor: send messages, receive decoded ones.

    `send` may be called from any thread. `receive` is meant for one reading thread.
    """

    def __init__(self, fd: int) -> None:
        os.fstat(fd)  # raises OSError (EBADF) at once rather than on first use
        self.fd = fd
        self.closed = False
        self.drops = Drops()
        self._reader = LineReader(self.drops)
        self._encoder = msgspec.json.Encoder()
        self._send_lock = threading.Lock()
        # A pipe wakes the reading thread on close: closing a descriptor does not
        # interrupt a poll() already waiting on it in another thread.
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)

    def send(self, msg: FromWorker) -> bool:
        """Write one message; return False (logged once) if the supervisor is gone."""
        with self._send_lock:
            if self.closed:
                return False
            # A fresh bytes object per message: messages are few (one every few
            # seconds), and a reused bytearray exported through a memoryview cannot be
            # cleared while anything holds the view, which an investigation on the
            # client thread does for a moment (gc.get_objects() holds every view).
            data = self._encoder.encode(msg) + b"\n"
            sent = 0
            try:
                while sent < len(data):
                    try:
                        sent += os.write(self.fd, data[sent:] if sent else data)
                    except BlockingIOError:
                        # Only if someone made the descriptor non-blocking: wait a little
                        # for room rather than lose half a line.
                        if not select.select([], [self.fd], [], SEND_WAIT_S)[1]:
                            log.warning("channel: the supervisor is not reading; a %s "
                                        "message is dropped", type(msg).__name__)
                            return False
            except OSError as e:
                log.warning("channel: supervisor unreachable (%s); messages are dropped", e)
                self.closed = True
                return False
            return True

    def receive(self, timeout_s: float | None) -> list[ToWorker] | None:
        """Wait up to `timeout_s` for input; return the messages it completed
        (possibly none), or None once the supervisor closed its end."""
        if self.closed:
            return None
        ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        events = self._poll.poll(ms)
        if self.closed:
            return None
        if not any(fd == self.fd for fd, _ in events):
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        except OSError as e:
            log.warning("channel: read failed (%s); the channel is closed", e)
            data = b""
        if not data:
            self.closed = True
            return None
        out = []
        for line in self._reader.feed(data):
            msg = decode(line, self.drops)
            if msg is not None:
                out.append(msg)
        return out

    def close(self) -> None:
        """Mark the channel closed and wake the reading thread (idempotent).

        The descriptors are released by `release()` once the reader has stopped.
        """
        with self._send_lock:
            self.closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def release(self) -> None:
        """Close every descriptor; call after the reading thread has stopped."""
        self.close()
        for fd in (self.fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self.fd = self._wake_r = self._wake_w = -1
