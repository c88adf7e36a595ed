"""`--metrics HOST:PORT`: the supervisor's figures in the Prometheus text format, on demand.

Only the listener is hardened here (`listeners`): `:PORT` means this machine only, and the
address is bound before any worker starts (a busy port is exit status 2).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import anyio
import anyio.abc

from supervisor import listeners

log = logging.getLogger("memwarden.metrics")

Gauge = tuple[str, str, dict[str, str], float]  # name, help, labels, value


def render(gauges: list[Gauge]) -> bytes:
    """Prometheus exposition text: one HELP/TYPE block per metric name."""
    lines: list[str] = []
    seen: set[str] = set()
    for name, text, labels, value in gauges:
        if name not in seen:
            seen.add(name)
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        tags = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{tags}}} {value:g}" if tags else f"{name} {value:g}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT` or `:PORT` (port 0: any free port); raise ValueError
    naming the form. Without a host the figures stay on this machine: 127.0.0.1."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not port.isascii() or not 0 <= int(port) < 65536 \
            or "\0" in host:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:9464, :9464 (this machine "
                         f"only) or 0.0.0.0:9464 (every interface), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port)


def open_socket(address: str, what: str = "--metrics") -> socket.socket:
    """Bind the metrics address before anything starts; raise ValueError (one line) for a
    malformed address, ListenError for a busy port or an address not on this machine."""
    host, port = parse_address(address)
    return listeners.bind_tcp(host, port, what)


async def serve(sock: socket.socket, collect: Callable[[], list[Gauge]],
                task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Answer every HTTP request on the bound `sock` with the current figures until
    cancelled; report the bound port when started. Clients cannot end it (`listeners`)."""
    host, bound = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info("metrics on http://%s:%d/metrics%s", shown, bound,
             " (this machine only)" if host in ("127.0.0.1", "::1") else "")
    task_status.started(bound)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 8192:
            chunk = await stream.receive(4096)
            if not chunk:
                return
            request += chunk
        body = render(collect())
        await stream.send(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    await listeners.serve(sock, handle, "metrics")
