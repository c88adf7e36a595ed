"""The supervisor's end of a worker channel: framing JSON lines, decoding, never failing."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import anyio
import msgspec

from workers import protocol

log = logging.getLogger("memwarden")

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
    """The worker's messages until it closes its end; bad lines are logged and skipped."""
    reader = LineReader(who)
    while True:
        await anyio.wait_readable(sock)
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            return
        for message in reader.feed(data):
            yield message


class LineReader:
    """Split a byte stream into decoded messages; bad input is logged, counted and dropped."""

    def __init__(self, who: str, max_line: int = protocol.MAX_LINE) -> None:
        self.who = who
        self.max_line = max_line
        self.errors = 0
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[protocol.FromWorker]:
        """Return the complete messages in `data` (plus what was buffered)."""
        self._buf += data
        out: list[protocol.FromWorker] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > self.max_line:
                    self._reject(f"a line longer than {self.max_line} bytes")
                    self._discarding = True
                    self._buf.clear()
                return out
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._discarding:  # the tail of an oversized line
                self._discarding = False
                continue
            if len(line) > self.max_line:
                self._reject(f"a line longer than {self.max_line} bytes")
                continue
            if not line.strip():
                continue
            try:
                out.append(_decoder.decode(line))
            except msgspec.DecodeError as e:
                self._reject(f"{e} in {line[:120]!r}")

    def _reject(self, what: str) -> None:
        self.errors += 1
        log.warning("channel of %s: ignored %s", self.who, what)
