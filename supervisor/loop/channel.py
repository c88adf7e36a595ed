"""The supervisor's end of a worker channel: framing JSON lines, decoding, never failing.

Everything a worker sends is untrusted. A line that does not decode is dropped, counted
and logged at most once per interval (`dropped.DropLog`); nothing a worker writes can
raise out of `messages`. A worker that writes faster than `RATE` lines per second is read
more slowly: its writes wait in the socket's buffer (or block), and the event loop and the
sampler keep their time. Measured before the limit: a worker sending 259,000 valid
messages a second took 0.8 of a core in the event loop and made 79 % of 1 ms ticks late.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator

import anyio
import msgspec

from supervisor.loop.dropped import INTERVAL_S, DropLog
from workers import protocol

log = logging.getLogger("memwarden.channel")

#: Lines per second one channel may deliver on average, and in one burst. A cooperative
#: worker sends a few a second (stats, trims, reports); this leaves a hundredfold margin.
RATE = 500.0
BURST = 1000.0
#: Bytes read at a time: bounds the work done in one turn of the event loop (decoding
#: 16 KiB of small messages takes well under a millisecond).
READ_SIZE = 16384

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(protocol.FromWorker)


def encode(message: protocol.ToWorker) -> bytes:
    """One message as a line."""
    return _encoder.encode(message) + b"\n"


def send(sock: socket.socket, message: protocol.ToWorker, who: str) -> bool:
    """Send without blocking; False (logged) when the worker's buffer is full or gone.

    A worker that does not read its channel must not stall supervision.
    """
    try:
        sock.send(encode(message))
        return True
    except OSError as e:
        log.debug("channel of %s: message dropped (%s)", who, e)
        return False


async def messages(sock: socket.socket, who: str) -> AsyncIterator[protocol.FromWorker]:
    """The worker's messages until it closes its end; bad lines are counted and skipped.

    Never raises for anything the worker sends; reads at most `RATE` lines a second on
    average (see `Throttle`).
    """
    reader = LineReader(who)
    throttle = Throttle(who)
    try:
        while True:
            await anyio.wait_readable(sock)
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                return
            seen = reader.lines_seen
            for message in reader.messages(data):
                yield message
            # A line costs one token, and so does each KiB: a stream of bytes without
            # newlines is read no faster than lines are.
            pause = throttle.spend(max(reader.lines_seen - seen, len(data) >> 10))
            if pause > 0:
                await anyio.sleep(pause)
    finally:
        reader.dropped.flush()


class Throttle:
    """A token bucket of lines: `spend` says how long to wait before reading on."""

    def __init__(self, who: str, rate: float = RATE, burst: float = BURST) -> None:
        self.who = who
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._at = time.monotonic()
        self._next_log = 0.0

    def spend(self, cost: int) -> float:
        """Take `cost` tokens; return the seconds to pause before reading on (0: none)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate) - cost
        self._at = now
        if self.tokens >= 0:
            return 0.0
        if now >= self._next_log:
            self._next_log = now + INTERVAL_S
            log.warning("channel of %s: more than %g lines a second; reading it more slowly",
                        self.who, self.rate)
        return -self.tokens / self.rate


class LineReader(protocol.LineSplitter):
    """The protocol's framing plus decoding; bad input is counted, logged and dropped."""

    def __init__(self, who: str, max_line: int = protocol.MAX_LINE) -> None:
        super().__init__(max_line)
        self.who = who
        self.dropped = DropLog(f"channel of {who}")
        self.lines_seen = 0

    @property
    def errors(self) -> int:
        """Lines dropped so far (undecodable, unknown or too long)."""
        return self.dropped.total

    def messages(self, data: bytes) -> list[protocol.FromWorker]:
        """Return the complete messages in `data` (plus what was buffered)."""
        out: list[protocol.FromWorker] = []
        lines = self.feed(data)
        self.lines_seen += len(lines)
        for line in lines:
            if not line.strip():
                continue
            message, why = protocol.decode_line(_decoder, line)
            if isinstance(message, protocol.Report):
                why = protocol.report_problem(message)
            if why is None:
                out.append(message)
            else:
                self.dropped.drop(why)
        return out

    def _discard(self) -> None:
        super()._discard()
        self.lines_seen += 1
        self.dropped.drop(f"a line longer than {self.max_line} bytes")
