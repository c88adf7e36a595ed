"""`--metrics HOST:PORT`: memwarden's HTTP endpoint: `/metrics`, `/livez`, `/readyz`.

Served on the bounded accept loop the control socket also uses (`listeners`), in the
event loop: a thread of its own would compete with the sampler for the interpreter.
`:PORT` means this machine only, and the address is bound before any worker starts (a
busy port is exit status 2).

* `/metrics`: the figures (`metrics`), OpenMetrics when the scraper asks for it, else the
  text format 0.0.4; gzip when accepted.
* `/livez`: 200 while the sampler ticks (`health`), else 503 with the reason.
* `/readyz`: 200 while live and every worker has a ready generation, else 503.
* Any other path is 404; a method other than GET or HEAD is 405.
"""

from __future__ import annotations

import gzip
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from supervisor.faces import listeners
from supervisor.loop.health import Health
from supervisor.settings import validate

if TYPE_CHECKING:
    # deferred: prometheus-client, only with --metrics
    from supervisor.loop.arbiter import Arbiter

log = logging.getLogger("memwarden.endpoint")

#: The longest request head read; a scraper's or a probe's is a few hundred bytes.
MAX_HEAD = 8192
PATHS = ("/metrics", "/livez", "/readyz")
Render = Callable[[str], tuple[bytes, str]]  # Accept header -> (body, content type)
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, *, head: bool = False) -> bytes:
        """The whole HTTP/1.1 response; `head` leaves the body out (HEAD)."""
        lines = [f"HTTP/1.1 {self.status} {_REASONS[self.status]}",
                 f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", "Connection: close",
                 *(f"{k}: {v}" for k, v in self.headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (
            b"" if head else self.body)


class BadRequest(ValueError):
    """A request head that is not HTTP; `status` is the answer to give."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def parse_head(data: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path without the query, headers with lower-case names) of a request head;
    raise BadRequest. Nothing in it is trusted: it only selects one of three answers."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        raise BadRequest(431 if len(data) >= MAX_HEAD else 400, "incomplete request head")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(400, "not an HTTP request line")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1].split("?", 1)[0], headers


class Site:
    """Answers one request from `health` and `render` (None: /metrics is not served)."""

    def __init__(self, health: Health, render: Render | None) -> None:
        self.health = health
        self.render = render

    def respond(self, method: str, path: str, headers: dict[str, str]) -> Response:
        if method not in ("GET", "HEAD"):
            return Response(405, b"only GET and HEAD\n", headers={"Allow": "GET, HEAD"})
        if path == "/metrics" and self.render is not None:
            body, content_type = self.render(headers.get("accept", ""))
            extra = {}
            if "gzip" in headers.get("accept-encoding", ""):
                body, extra = gzip.compress(body, 6), {"Content-Encoding": "gzip"}
            return Response(200, body, content_type, extra)
        if path == "/livez":
            live = self.health.live()
            return _verdict(live.ok, live.why, "live")
        if path == "/readyz":
            live, ready = self.health.live(), self.health.ready()
            return _verdict(live.ok and ready.ok, live.why or ready.why, "ready")
        return Response(404, f"not found; memwarden serves {', '.join(PATHS)}\n".encode())


def _verdict(ok: bool, why: str, what: str) -> Response:
    if ok:
        return Response(200, b"ok\n")
    return Response(503, f"not {what}: {why}\n".encode())


def open_socket(address: str, what: str = "--metrics") -> socket.socket:
    """Bind the metrics address before anything starts; raise ValueError (one line) for a
    malformed address, ListenError for a busy port or an address not on this machine."""
    host, port = validate.parse_address(address)
    return listeners.bind_tcp(host, port, what)


async def serve(sock: socket.socket, arbiter: Arbiter,
                task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the arbiter's figures and health on the bound `sock` until cancelled; report
    the bound port once started. Events are counted from here on (`metrics.EventCounts`)."""
    # deferred: prometheus-client, only with --metrics
    from supervisor.faces import (
        metrics,  # prometheus-client: only with --metrics
        view,
    )

    counts = metrics.EventCounts()
    arbiter.events.listeners.append(counts)
    # Each scrape lists the trees' processes by RSS (a statm read each); their PSS, a page
    # table walk each, is for `memwarden status`, which reads it off the event loop.
    exposition = metrics.Exposition(lambda: view.status(arbiter, view.members(arbiter)),
                                    counts)
    await serve_site(sock, Site(arbiter.health, exposition.render), task_status=task_status)


async def serve_site(sock: socket.socket, site: Site,
                     task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
                     ) -> None:
    """Answer every request on `sock` from `site` until cancelled. Clients cannot end it
    (`listeners`)."""
    host, bound = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info("metrics on http://%s:%d/metrics%s; health at /livez and /readyz", shown, bound,
             " (this machine only)" if host in ("127.0.0.1", "::1") else "")
    task_status.started(bound)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        data = b""
        # A probe or a scraper sends its head at once; a slow or idle client is closed after
        # READ_S (64 clients sending a byte a second made every /livez wait 5 s).
        with anyio.move_on_after(listeners.READ_S) as reading:
            while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
                chunk = await stream.receive(4096)
                if not chunk:
                    return
                data += chunk
        if reading.cancelled_caught:
            return
        try:
            method, path, headers = parse_head(data)
        except BadRequest as e:
            await stream.send(Response(e.status, f"{e}\n".encode()).encode())
            return
        response = site.respond(method, path, headers)
        await stream.send(response.encode(head=method == "HEAD"))

    await listeners.serve(sock, handle, "metrics")


__all__ = ["MAX_HEAD", "PATHS", "BadRequest", "Response", "Site", "open_socket",
           "parse_head", "serve", "serve_site"]
