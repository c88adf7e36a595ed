"""`--metrics HOST:PORT`: the supervisor's figures in the Prometheus text format, on demand."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import anyio
import anyio.abc

log = logging.getLogger("memwarden")

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
    """`HOST:PORT` or `:PORT` (port 0: any free port); raise ValueError naming the form."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--metrics: expected HOST:PORT such as 127.0.0.1:9464, got {text!r}")
    return host or "0.0.0.0", int(port)


async def serve(address: str, collect: Callable[[], list[Gauge]],
                task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Answer every HTTP request with the current figures; report the bound port when started."""
    host, port = parse_address(address)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    task_status.started(bound)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        # A client that hangs up or stalls must never take the supervisor down with it.
        async with stream:
            with anyio.move_on_after(5), contextlib.suppress(
                OSError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError):
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

    await listener.serve(handle)
