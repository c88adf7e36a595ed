"""The control socket: `memwarden status | top | investigate | set | replace | stop`.

One JSON line in, one JSON line out, per connection, over a Unix socket only its owner can
use. This module owns that wire format and the socket's place; the main loop answers.

Where: `--control PATH`, or `memwarden-<uid>/control.sock` in `$XDG_RUNTIME_DIR` or the
temporary directory. That directory is created 0700 and must belong to us with no access
for others, or memwarden refuses it: in /tmp another user could otherwise create the name
first and answer `status`, `stop` and `set` for us. Both ends also check who is at the
other end (`SO_PEERCRED`): the same user, or root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import msgspec

from supervisor.linux.breakdown import Member
from workers import protocol

if TYPE_CHECKING:
    import logging

    import anyio.abc

# The server's side (anyio, the listeners) is imported where it is used: the client's side
# is what `memwarden status --check` runs as a probe, inside the cgroup it watches.


def _log() -> logging.Logger:
    import logging  # the server's side only: the client (a probe) does without it

    return logging.getLogger("memwarden.control")


MAX_REQUEST = 64 * 1024
#: A status of 256 workers is about 60 KiB.
MAX_REPLY = 16 * 2**20


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
    """Ask `worker` for a leak report; the answer is the report (it also goes to the log and
    the snapshots)."""

    worker: str
    #: Bounded as the worker's own protocol bounds it (`top = -1` was forwarded).
    top: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20


class Set(_Request, tag="set"):
    """Change limits of `worker` live (a `limits` message on its channel)."""

    worker: str
    #: Checked against the configuration's bounds before anything is sent
    #: (`validate.limits_refused`).
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
    #: "current", "pending" (a replacement starting) or "retiring".
    role: str = ""
    #: The figure thresholds compare (cgroup working set, or the PSS-corrected tree).
    memory: int | None = None
    #: Processes of the tree, biggest first.
    members: list[Member] = []
    #: The lines its figure is compared with, in bytes: the worker's own `medium`, `high`,
    #: `critical`, else the top-level ones (a line that is off is left out).
    thresholds: dict[str, int] = {}


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    ok: bool
    message: str = ""
    workers: list[WorkerStatus] = []
    limit: int | None = None
    container: int | None = None
    #: The container's own pressure level (None: no limit known).
    container_level: str | None = None
    ticks: int = 0
    late: int = 0
    missed: int = 0
    #: How `memory` is measured: "cgroup", "pss" or "rss".
    measure: str = "rss"
    #: The sampler ticks (None: not said, by a memwarden that predates the field).
    live: bool | None = None
    #: Every worker has a ready generation.
    ready: bool | None = None
    #: Why not live or not ready, for people ("" when both hold).
    health: str = ""
    #: Generations started so far per worker, including workers with none running.
    started: dict[str, int] = {}
    #: Snapshot records written and dropped (None: no snapshots).
    snapshots_written: int | None = None
    snapshots_dropped: int | None = None
    interval_s: float | None = None
    #: What wakes the sampler between its ticks: the kernel's notifications armed, or
    #: "none: <why>" where the ticks alone watch memory ("" from an older memwarden).
    notifications: str = ""
    #: Wake-ups by those notifications so far.
    notified: int = 0


_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class NotOurs(OSError):
    """The socket or its directory belongs to another user: not our memwarden."""


def default_path() -> str:
    """Where the socket lives unless `--control` says otherwise (see the module's doc)."""
    # $TMPDIR, then /tmp, as `tempfile.gettempdir` would find them on Linux; tempfile itself
    # costs a probe 1.1 MB of RSS (it imports random and hashlib).
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(base, f"memwarden-{os.geteuid()}", "control.sock")


def private_dir(directory: str, *, create: bool) -> None:
    """Make sure `directory` is ours alone (created 0700 if `create`); raise NotOurs, OSError."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise NotOurs(errno.EPERM, f"{directory} is not a directory")
    if st.st_uid != os.geteuid():
        raise NotOurs(errno.EPERM, f"{directory} belongs to uid {st.st_uid}, not to us "
                      f"(uid {os.geteuid()}); remove it or use --control PATH")
    if st.st_mode & 0o077:
        raise NotOurs(errno.EPERM, f"{directory} is open to others (mode "
                      f"{stat.S_IMODE(st.st_mode):o}); chmod 700 it or use --control PATH")


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a connected Unix socket."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            _PEERCRED.size))[1]


def _trusted(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def decode_request(line: bytes) -> tuple[Request | None, str | None]:
    """(request, None), or (None, why) for anything that is not a known request; never raises."""
    return protocol.decode_line(_decoder, line)


def _claim(path: str) -> bool:
    """True if `path` is free (or a stale socket, removed); False if a live server has it."""
    # deferred: the server side (anyio, the listeners): the client, a probe, does without
    from supervisor.faces import listeners

    if not os.path.lexists(path):
        return True
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise listeners.ListenError(f"{path} exists and is not a socket; remove it or choose "
                                    "another --control")
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


def open_socket(path: str | None, what: str = "--control") -> socket.socket | None:
    """Bind the control socket at `path` (None: the default place) before anything starts.

    Return None, with a warning, when another memwarden of ours already answers at the
    default place. Raise ListenError (one line) for an unsafe directory, a path given
    explicitly that another memwarden answers at, or one that cannot be bound.
    """
    # deferred: the server side (anyio, the listeners): the client, a probe, does without
    from supervisor.faces import listeners

    explicit = path is not None
    path = path if path is not None else default_path()
    try:
        if not explicit:
            private_dir(os.path.dirname(path), create=True)
        if not _claim(path):
            if explicit:
                raise listeners.ListenError(f"{what} {path}: another memwarden answers there")
            _log().warning("control socket %s belongs to another memwarden; running without one "
                        "(give --control PATH for one of our own)", path)
            return None
    except OSError as e:
        raise listeners.ListenError(f"{what}: {e.strerror or e}") from None
    old = os.umask(0o077)  # the socket file: 0600, for its owner only
    try:
        return listeners.bind_unix(path, what)
    finally:
        os.umask(old)


async def serve(sock: socket.socket, answer: Callable[[Request], Awaitable[Reply]]) -> None:
    """Answer requests on the bound `sock` until cancelled; its file is removed at the end.

    Nothing a client sends raises out of here: a bad request is answered `ok: false`,
    counted and logged at most once per interval; a client of another user is refused.
    """
    import anyio.abc

    # deferred: the server side (anyio, the listeners): the client, a probe, does without
    from supervisor.faces import listeners

    # deferred: the server side (anyio, the listeners): the client, a probe, does without
    from supervisor.loop.dropped import DropLog

    path = sock.getsockname()
    dropped = DropLog("control socket")

    async def handle(stream: anyio.abc.SocketStream) -> None:
        uid = peer_uid(stream.extra(anyio.abc.SocketAttribute.raw_socket))
        if not _trusted(uid):
            dropped.drop(f"a connection from uid {uid}")
            return
        data = b""
        # A request is sent at once: a client that has not sent one within READ_S is not
        # waited for (100 half requests held every place for 15 s and failed the probe).
        with anyio.move_on_after(listeners.READ_S) as reading, contextlib.suppress(
                anyio.EndOfStream):  # a client that sent and shut down
            while b"\n" not in data and len(data) <= MAX_REQUEST:
                data += await stream.receive(MAX_REQUEST)
        if not data and not reading.cancelled_caught:
            return  # connected and left without a word
        if reading.cancelled_caught and b"\n" not in data:
            dropped.drop(f"a request not sent within {listeners.READ_S:g}s "
                         f"({len(data)} bytes of it)")
            return
        line = data.split(b"\n", 1)[0]
        if len(line) > MAX_REQUEST:
            request, why = None, f"a request longer than {MAX_REQUEST} bytes"
        else:
            request, why = decode_request(line)
        if request is None:
            dropped.drop(why or "an empty request")
            reply = Reply(ok=False, message=f"bad request: {why}")
        else:
            try:
                reply = await answer(request)
            except Exception:  # a fault in answering must not end supervision
                _log().exception("internal error while answering %s; supervision goes on",
                              type(request).__name__)
                reply = Reply(ok=False, message="internal error; see memwarden's log")
        await stream.send(msgspec.json.encode(reply) + b"\n")

    try:
        # An investigation waits for the worker's report: up to ANSWER_S, not DEADLINE_S.
        await listeners.serve(sock, handle, "control socket", deadline_s=ANSWER_S)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


#: How long one control connection may take, an investigation's wait for the report
#: (`requests.REPORT_WAIT_S`) included.
ANSWER_S = 15.0


def ask(path: str, request: Request, timeout: float = ANSWER_S + 5.0) -> Reply:
    """Send one request to the memwarden at `path`; raise OSError when none of ours answers
    (NotOurs when the socket, or the default directory, belongs to another user)."""
    if path == default_path():
        private_dir(os.path.dirname(path), create=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        uid = peer_uid(s)
        if not _trusted(uid):
            raise NotOurs(errno.EPERM, f"the socket is served by uid {uid}, not by us")
        s.sendall(msgspec.json.encode(request) + b"\n")
        data = b""
        while not data.endswith(b"\n") and len(data) < MAX_REPLY:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply, why = protocol.decode_line(_reply_decoder, data)
    if reply is None:
        raise OSError(errno.EPROTO, f"not a memwarden answer ({why})")
    return reply
