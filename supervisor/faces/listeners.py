"""Bounded listeners for the control socket and `--metrics`: bound at start, served forever.

Both are bound by the command line before any worker starts, so that a busy port, an
address not on this machine or an unusable socket path is exit status 2 with one line,
not a traceback once workers run. Serving survives what a client or the machine can do:
at most `MAX_CONNECTIONS` at a time (others wait in a kernel backlog of `BACKLOG`), each
given `READ_S` to send its request (the handlers' own deadline) and `DEADLINE_S` in all; and
when descriptors run out (`EMFILE`, `ENFILE`) the accept loop backs off and logs instead of
ending memwarden. Measured before: idle connections to either socket until the descriptor
limit ended memwarden with exit 1; with 32 connections at a time, each allowed 5 s (the
control socket 15 s) to ask, 64 slow clients made every `/livez` take 5 s and 100 half
requests made `memwarden status --check` give up after 20 s; with a backlog of 128, 741 of
1,000 concurrent connections were refused at connect.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

log = logging.getLogger("memwarden.listeners")

#: Connections served at once: far more than a slow or idle client can hold for long (each
#: is closed after `READ_S` without a request), far fewer than memwarden's descriptors.
MAX_CONNECTIONS = 512
#: Seconds a client has to send its whole request (a probe or a scraper sends it at once):
#: what keeps a slow or idle client from holding a connection's place.
READ_S = 2.0
DEADLINE_S = 5.0
#: Connections the kernel holds for us beyond those served (the kernel caps it at
#: net.core.somaxconn, 4096 by default).
BACKLOG = 1024
#: Waits after an accept failed for want of descriptors or memory: doubling to the last.
BACKOFF_S = (0.01, 0.05, 0.25, 1.0)
_LOG_EVERY_S = 10.0


class ListenError(ValueError):
    """A listener cannot be opened; the message says which address and why, in one line."""


def bind_tcp(host: str, port: int, what: str) -> socket.socket:
    """A listening TCP socket on `host:port` (the first address `host` resolves to).

    Raise ListenError naming `what` (the option) for an unknown host, a port in use, an
    address that is not this machine's, or a port that needs privileges.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ListenError(f"{what}: cannot resolve host {host!r} ({e})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return _listen(sock, address, f"{what}: cannot listen on {host}:{port}")


def bind_unix(path: str, what: str) -> socket.socket:
    """A listening Unix socket at `path` (which must not exist); raise ListenError."""
    return _listen(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path,
                   f"{what}: cannot listen at {path}")


def _listen(sock: socket.socket, address: object, failed: str) -> socket.socket:
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise ListenError(f"{failed}: {_why(e)}") from None
    sock.setblocking(False)
    return sock


def _why(e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return "the address is in use (another program listens there)"
    if e.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine's"
    if e.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return e.strerror or str(e)


Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


async def serve(sock: socket.socket, handle: Handler, name: str, *,
                max_connections: int = MAX_CONNECTIONS, deadline_s: float = DEADLINE_S) -> None:
    """Accept on `sock` and run `handle` per connection until cancelled; never raises for
    what clients do or for a shortage of descriptors. `sock` is closed at the end."""
    listener = await anyio.abc.SocketListener.from_socket(sock)
    slots = anyio.Semaphore(max_connections)
    failures = 0
    next_log = 0.0

    async def one(stream: anyio.abc.SocketStream) -> None:
        try:
            async with stream:
                with anyio.move_on_after(deadline_s), contextlib.suppress(
                        OSError, anyio.BrokenResourceError, anyio.EndOfStream,
                        anyio.ClosedResourceError):
                    await handle(stream)
        except Exception:  # a fault in answering one client must not end memwarden
            log.exception("%s: internal error while answering; serving goes on", name)
        finally:
            slots.release()

    async with listener, anyio.create_task_group() as tg:
        while True:
            if slots.value == 0 and time.monotonic() >= next_log:
                next_log = time.monotonic() + _LOG_EVERY_S
                log.warning("%s: %d connections open; new ones wait", name, max_connections)
            await slots.acquire()
            try:
                stream = await listener.accept()
            except (OSError, anyio.BrokenResourceError) as e:
                # anyio wraps a Unix socket's OSError; a TCP one comes as it is.
                error = e if isinstance(e, OSError) else e.__cause__
                slots.release()
                if time.monotonic() >= next_log:
                    next_log = time.monotonic() + _LOG_EVERY_S
                    log.warning("%s: cannot accept a connection (%s); trying again", name,
                                getattr(error, "strerror", None) or error or e)
                if getattr(error, "errno", None) != errno.ECONNABORTED:
                    # Out of descriptors the socket stays readable: without a pause this
                    # loop would spin. Any other failure is paused on too, in case it lasts.
                    await anyio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                    failures += 1
                continue
            failures = 0
            tg.start_soon(one, stream)


__all__ = ["DEADLINE_S", "MAX_CONNECTIONS", "READ_S", "ListenError", "bind_tcp", "bind_unix",
           "serve"]
