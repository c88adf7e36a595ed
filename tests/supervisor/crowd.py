"""Hostile clients for the listeners' tests: many connections held open, idle or slow.

A thread keeps `n` connections open at every moment: when memwarden closes one (its read
deadline), another takes its place at once, as a persistent attacker would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable


class Crowd:
    """`n` connections from `connect`, each `idle` (sends nothing), `half` (half a request,
    then nothing) or `slow` (a request one byte a second); kept open until `close`."""

    def __init__(self, connect: Callable[[], socket.socket], n: int, mode: str,
                 request: bytes = b'{"op":"status"}\n') -> None:
        self.connect, self.n, self.mode, self.request = connect, n, mode, request
        self.opened = 0
        self._socks: list[tuple[socket.socket, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Crowd:
        for _ in range(self.n):
            self._socks.append(self._open())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for s, _ in self._socks:
            s.close()

    def open_now(self) -> int:
        """Connections open this moment, from our side (not yet seen closed)."""
        return sum(1 for s, _ in self._socks if s.fileno() >= 0)

    def _open(self) -> tuple[socket.socket, int]:
        s = self.connect()
        s.setblocking(False)
        self.opened += 1
        if self.mode == "half":
            s.send(self.request[: len(self.request) // 2])
        return s, 0

    def _run(self) -> None:
        next_byte = time.monotonic() + 1.0
        while not self._stop.wait(0.05):
            tick = self.mode == "slow" and time.monotonic() >= next_byte
            if tick:
                next_byte += 1.0
            for i, (s, sent) in enumerate(self._socks):
                closed = False
                try:
                    closed = s.recv(4096) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                if tick and not closed and sent < len(self.request) - 1:
                    try:
                        s.send(self.request[sent:sent + 1])
                        sent += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed = True
                if closed:
                    s.close()
                    with contextlib.suppress(OSError):
                        self._socks[i] = self._open()
                    continue
                self._socks[i] = (s, sent)
