"""Listening sockets bound once by memwarden and handed to every generation of a worker.

Two generations of a server cannot both bind one port: the new one fails ("Address in
use") or retries until the old one has let go, and connections in between are refused.
Bound here once, before any worker starts, one socket is inherited by every generation as
systemd's socket activation passes it (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, fds
from 3 on), which gunicorn, uvicorn (`--fd 3`), hypercorn and sd_listen_fds(3) read: the
old and the new generation accept from one queue during the overlap, and a connection
made while neither accepts waits in the backlog instead of being refused.

memwarden keeps its copies at descriptors of 64 and above, close-on-exec, so that the
child's own setup (`process.spawn`) can move them to 3, 4, ... without overwriting one
with another.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: memwarden's copies of handed-over sockets sit at this descriptor or above.
HIGH_FD = 64
#: The backlog of a handed-over socket: connections made while no generation accepts
#: (the old one closing, the new one not yet accepting) wait in it.
BACKLOG = 1024


class ListenError(ValueError):
    """An address that cannot be bound; the message names it and why, in one line."""


@dataclass(frozen=True, slots=True)
class Listener:
    """One bound socket: its descriptor (>= HIGH_FD) and its name in `LISTEN_FDNAMES`."""

    fd: int
    name: str
    address: tuple[str, int]


def bind(address: tuple[str, int]) -> Listener:
    """Bind and listen on `address` (host, port); raise ListenError saying why not."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR, as every server sets it: a port left in TIME_WAIT by memwarden's
        # previous run is free at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
        bound = sock.getsockname()[:2]
    except OSError as e:
        raise ListenError(f"--listen {_text(address)}: cannot bind: {e.strerror or e}") from None
    finally:
        sock.close()
    # LISTEN_FDNAMES separates names with ':', and a name may not hold one.
    return Listener(fd, f"{bound[0]}-{bound[1]}".replace(":", "_"), (bound[0], bound[1]))


def bind_all(addresses: list[tuple[str, int]]) -> dict[tuple[str, int], Listener]:
    """Bind every address once; raise ListenError, with nothing left bound, for the first
    that cannot be."""
    out: dict[tuple[str, int], Listener] = {}
    try:
        for address in addresses:
            if address not in out:
                out[address] = bind(address)
    except ListenError:
        close(out.values())
        raise
    return out


def close(listeners: Iterable[Listener]) -> None:
    """Close memwarden's copies (the generations keep theirs until they exit)."""
    for listener in listeners:
        with contextlib.suppress(OSError):
            os.close(listener.fd)


def environment(env: dict[str, str], listeners: tuple[Listener, ...]) -> None:
    """Set `LISTEN_FDS` and `LISTEN_FDNAMES` in `env` for `listeners` moved to fds 3, 4, ...
    (`LISTEN_PID`, the worker's own pid, is set where it runs: `process.spawn`); without
    listeners, remove them: a memwarden socket-activated itself must not pass its own on."""
    for name in VARIABLES:
        env.pop(name, None)
    if listeners:
        env["LISTEN_FDS"] = str(len(listeners))
        env["LISTEN_FDNAMES"] = ":".join(x.name for x in listeners)


#: The variables of socket activation (sd_listen_fds(3)).
VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def accepted_by(server_port: int, client_port: int,
                members: Callable[[], list[int]]) -> int | None:
    """Which of the pids `members()` lists (asked only once the connection is accepted)
    holds the server's end of the TCP connection from local port `client_port` to
    `server_port`: its pid, 0 when the connection has been accepted by a
    process not among them, None when it is not accepted yet (still in the backlog: the
    kernel gives it a descriptor, and /proc/net/tcp an inode, only at accept).

    This is how a probe tells which generation answered: two generations that accept on
    one handed-over socket, or an old one still holding the port, look the same from the
    client's side.
    """
    inode = _server_inode(server_port, client_port)
    if inode is None:
        return None
    if inode < 0:
        return -1
    target = f"socket:[{inode}]"
    for pid in members():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return 0


def _server_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the accepted server end of client_port -> server_port; None while not
    accepted; -1 once the server closed its end (our end in CLOSE_WAIT)."""
    server = (f":{server_port:04X}", f":{client_port:04X}")
    client = (f":{client_port:04X}", f":{server_port:04X}")
    closed = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) <= 9:
                        continue
                    ends = (fields[1][-5:], fields[2][-5:])
                    if ends == server and fields[9] != "0":
                        return int(fields[9])
                    if ends == client and fields[3] == _CLOSE_WAIT:
                        closed = True
        except OSError:
            continue
    return -1 if closed else None


#: /proc/net/tcp's state of an end whose peer has closed.
_CLOSE_WAIT = "08"


def _text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["BACKLOG", "HIGH_FD", "VARIABLES", "ListenError", "Listener", "accepted_by", "bind",
           "bind_all", "close", "environment"]
