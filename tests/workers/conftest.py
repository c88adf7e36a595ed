"""Fixtures for the worker library's tests: real processes on a real socketpair.

`SupervisorEnd` plays the supervisor's side of the channel; `spawn` starts a worker
process holding the other end and kills it (by pid) when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgspec
import pytest

from tests.conftest import ROOT, python
from tests.conftest import wait_until as shared_wait_until
from workers.protocol import ENV_FD, ENV_GENERATION, ENV_LIMITS, ENV_PROFILE, ENV_WORKER, Limits

__all__ = ["ROOT", "WAIT_S", "Spawner", "SupervisorEnd", "wait_until", "worker_env"]

WAIT_S = 30.0  # generous: the machine is shared and noisy
T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout_s: float = WAIT_S, what: str = "condition") -> T:
    """`tests.conftest.wait_until` with this package's longer default deadline."""
    return shared_wait_until(cond, timeout_s, what)


class SupervisorEnd:
    """The supervisor's end of a channel socketpair: send raw lines or messages, read
    decoded messages with a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.seen: list[dict[str, Any]] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, msg: msgspec.Struct) -> None:
        self.sock.sendall(msgspec.json.encode(msg) + b"\n")

    def _read(self, timeout_s: float) -> bool:
        self.sock.settimeout(max(0.001, timeout_s))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        if not data:
            return False
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        self.seen += [json.loads(line) for line in lines if line.strip()]
        return True

    def expect(self, kind: str, where: Callable[[dict[str, Any]], bool] = lambda m: True,
               timeout_s: float = WAIT_S) -> dict[str, Any]:
        """Return the first message of type `kind` matching `where`, consuming those
        before it; fail at the deadline or when the worker closes the channel."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, msg in enumerate(self.seen):
                if msg.get("type") == kind and where(msg):
                    del self.seen[: i + 1]
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} message within {timeout_s} s; "
                                     f"saw {self.seen[-5:]}")
            if not self._read(min(left, 0.5)):
                raise AssertionError(f"channel closed before a {kind!r} message; "
                                     f"saw {self.seen[-5:]}")


def worker_env(fd: int | None, limits: Limits | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMWARDEN_")}
    env["PYTHONPATH"] = str(ROOT)
    if fd is not None:
        env.update({ENV_FD: str(fd), ENV_WORKER: "test", ENV_GENERATION: "1",
                    ENV_PROFILE: "normal"})
    if limits is not None:
        env[ENV_LIMITS] = msgspec.json.encode(limits).decode()
    env.update(extra)
    return env


class Spawner:
    """Starts processes and kills every one still running at teardown, by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.socks: list[socket.socket] = []

    def __call__(self, argv: list[str], *, channel: bool = True, limits: Limits | None = None,
                 env: dict[str, str] | None = None, **popen: Any
                 ) -> tuple[subprocess.Popen[bytes], SupervisorEnd | None]:
        ours = theirs = None
        if channel:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.socks += [ours, theirs]
        fd = theirs.fileno() if theirs else None
        full_env = worker_env(fd, limits)
        full_env.update(env or {})
        proc = subprocess.Popen(argv, env=full_env, pass_fds=[fd] if fd is not None else [],
                                cwd=popen.pop("cwd", ROOT), **popen)
        self.procs.append(proc)
        if theirs is not None:
            theirs.close()  # the worker holds it now; EOF reaches us when it exits
        return proc, SupervisorEnd(ours) if ours else None

    def python(self, code: str, **kw: Any) -> tuple[subprocess.Popen[bytes], SupervisorEnd | None]:
        return self(python(code), **kw)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=WAIT_S)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()
        for sock in self.socks:
            sock.close()


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.cleanup()
