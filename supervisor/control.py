"""The control socket: `memwarden status | top | investigate | set | replace | stop`.

One JSON line in, one JSON line out, per connection, over a Unix socket only the owner can
use. This module owns that wire format; the main loop answers the requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable

import anyio
import anyio.abc
import msgspec

log = logging.getLogger("memwarden")

MAX_REQUEST = 64 * 1024


class _Request(msgspec.Struct, tag_field="op"):
    pass


class Status(_Request, tag="status"):
    """The workers, their memory and level, the sampler's counters."""


class Stop(_Request, tag="stop"):
    """Stop every worker gracefully, then exit (like TERM)."""


class Replace(_Request, tag="replace"):
    """Start a new generation of `worker`, retire the old one once it is ready."""

    worker: str


class Investigate(_Request, tag="investigate"):
    """Ask `worker` for a leak report (answered in the log and the snapshots)."""

    worker: str
    top: int = 20


class Set(_Request, tag="set"):
    """Change limits of `worker` live (a `limits` message on its channel)."""

    worker: str
    limits: dict[str, int | float]


Request = Status | Stop | Replace | Investigate | Set


class WorkerStatus(msgspec.Struct, kw_only=True):
    name: str
    generation: int
    pid: int
    state: str
    profile: str
    uptime_s: float
    rss: int | None = None
    procs: int | None = None
    level: str | None = None
    growth: float | None = None
    generations: int = 0


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    ok: bool
    message: str = ""
    workers: list[WorkerStatus] = []
    limit: int | None = None
    container: int | None = None
    ticks: int = 0
    late: int = 0
    missed: int = 0


_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)


def default_path() -> str:
    """Where the socket lives unless `--control` says otherwise."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"memwarden-{os.getuid()}.sock")


def decode_request(line: bytes) -> Request:
    """Raise msgspec.DecodeError for anything that is not a known request."""
    return _decoder.decode(line)


def _claim(path: str) -> bool:
    """True if `path` is free (or a stale socket, removed); False if a live server has it."""
    if not os.path.exists(path):
        return True
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return True
    finally:
        probe.close()
    return False


async def serve(path: str, answer: Callable[[Request], Reply],
                task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Answer requests on `path` until cancelled; the socket file is removed at the end."""
    if not _claim(path):
        log.warning("control socket %s belongs to another memwarden; running without one", path)
        task_status.started()
        return
    old = os.umask(0o077)
    try:
        listener = await anyio.create_unix_listener(path)
    except OSError as e:
        log.warning("no control socket at %s: %s", path, e.strerror or e)
        task_status.started()
        return
    finally:
        os.umask(old)
    task_status.started()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(5), contextlib.suppress(
                    OSError, anyio.BrokenResourceError, anyio.EndOfStream,
                    anyio.ClosedResourceError):
                data = b""
                while b"\n" not in data and len(data) < MAX_REQUEST:
                    chunk = await stream.receive()
                    if not chunk:
                        break
                    data += chunk
                try:
                    reply = answer(decode_request(data.split(b"\n", 1)[0]))
                except msgspec.DecodeError as e:
                    reply = Reply(ok=False, message=f"bad request: {e}")
                await stream.send(msgspec.json.encode(reply) + b"\n")

    try:
        await listener.serve(handle)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def ask(path: str, request: Request, timeout: float = 10.0) -> Reply:
    """Send one request to the memwarden at `path`; raise OSError when none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(msgspec.json.encode(request) + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return _reply_decoder.decode(data)
