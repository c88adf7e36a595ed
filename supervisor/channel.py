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
        for message in reader.messages(data):
            yield message


class LineReader(protocol.LineSplitter):
    """The protocol's framing plus decoding; bad input is logged, counted and dropped."""

    def __init__(self, who: str, max_line: int = protocol.MAX_LINE) -> None:
        super().__init__(max_line)
        self.who = who
        self.errors = 0

    def messages(self, data: bytes) -> list[protocol.FromWorker]:
        """Return the complete messages in `data` (plus what was buffered)."""
        out: list[protocol.FromWorker] = []
        for line in self.feed(data):
            if not line.strip():
                continue
            try:
                out.append(_decoder.decode(line))
            except msgspec.DecodeError as e:
                self._reject(f"{e} in {line[:120]!r}")
        return out

    def _discard(self) -> None:
        super()._discard()
        self._reject(f"a line longer than {self.max_line} bytes")

    def _reject(self, what: str) -> None:
        self.errors += 1
        log.warning("channel of %s: ignored %s", self.who, what)
