"""The supervisor's end of a worker channel: framing JSON lines, decoding, never failing."""

from __future__ import annotations

import logging

import msgspec

from workers import protocol

log = logging.getLogger("memwarden")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(protocol.FromWorker)


def encode(message: protocol.ToWorker) -> bytes:
    """One message as a line."""
    return _encoder.encode(message) + b"\n"


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
