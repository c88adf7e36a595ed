"""Readiness probes and handed-over listening sockets, as the configuration states them.

A worker that does not speak the channel cannot say "I am serving"; a probe asks from
outside, as Kubernetes and systemd do: a TCP connection accepted (`ready_tcp`), an HTTP
answer 2xx or 3xx (`ready_http`), a command that exits 0 (`ready_exec`), a file that
exists and is newer than the generation (`ready_file`). One probe per worker, its own or
else the top-level one. `listen` are the addresses memwarden binds once and hands to every
generation (`LISTEN_FDS`), so that the old and the new generation accept on one socket.

A TCP or HTTP probe on a port the old generation still holds cannot tell the generations
apart by the port (`ambiguity`): the old one would answer for the new one. The probe
counts only an answer from the new generation's own processes (`loop.readiness`), and
`--listen` lets both generations accept on the port at once.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from supervisor.settings.config import Config, ConfigError, WorkerConfig, label
from supervisor.settings.validate import parse_address

Kind = Literal["tcp", "http", "exec", "file"]
KINDS: tuple[Kind, ...] = ("tcp", "http", "exec", "file")
#: Listening sockets handed to one worker at most (fds 3 to 34).
MAX_LISTEN = 32


@dataclass(frozen=True, slots=True)
class Probe:
    """One readiness probe. `text` is the value as given, for the log; `host`/`port` for
    tcp and http, `path` the URL's path or the file, `argv` the command of exec."""

    kind: Kind
    text: str
    host: str = ""
    port: int = 0
    path: str = ""
    argv: tuple[str, ...] = ()

    def describe(self) -> str:
        """The probe for people: `--ready-http http://127.0.0.1:8077/health`."""
        return f"--ready-{self.kind} {self.text}"


def parse(kind: Kind, text: str) -> Probe:
    """A probe of `kind` from its text; raise ValueError naming the accepted form."""
    if "\0" in text:
        raise ValueError("expected a value without NUL bytes")
    if kind == "tcp":
        host, port = parse_address(text)
        if port == 0:
            raise ValueError(f"expected HOST:PORT with a port above 0, got {text!r}")
        return Probe(kind, text, host=host, port=port)
    if kind == "http":
        url = urllib.parse.urlsplit(text)
        try:
            port = url.port or 80
        except ValueError:
            port = -1
        if url.scheme != "http" or not url.hostname or port <= 0:
            raise ValueError("expected an http:// URL such as http://127.0.0.1:8000/health, "
                             f"got {text!r}")
        if not _loopback(url.hostname):
            raise ValueError("expected a URL on this machine (127.0.0.1, ::1 or localhost): "
                             "the probe asks this worker, not the network, got "
                             f"{url.hostname!r}")
        path = url.path or "/"
        return Probe(kind, text, host=url.hostname, port=port,
                     path=path + (f"?{url.query}" if url.query else ""))
    if kind == "exec":
        try:
            argv = tuple(shlex.split(text))
        except ValueError as e:
            raise ValueError(f"expected a command line as a shell would split it: {e}") from None
        if not argv:
            raise ValueError("expected a command such as 'pg_isready -h 127.0.0.1', got none")
        return Probe(kind, text, argv=argv)
    if not text or not os.path.isabs(text):
        raise ValueError(f"expected an absolute file path, got {text!r}")
    return Probe(kind, text, path=text)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def probe_of(w: WorkerConfig | None, cfg: Config) -> Probe | None:
    """The worker's probe: its own when it names one, else the top-level one, else None.
    Raise ProbeError for more than one or a malformed one."""
    for source in (w, cfg):
        if source is None:
            continue
        given = [(k, getattr(source, f"ready_{k}")) for k in KINDS
                 if getattr(source, f"ready_{k}") is not None]
        if len(given) > 1:
            raise ProbeError(f"ready_{given[1][0]}", "expected one readiness probe per worker, "
                             f"got ready_{given[0][0]} and ready_{given[1][0]}")
        if given:
            kind, text = given[0]
            try:
                return parse(kind, text)
            except ValueError as e:
                raise ProbeError(f"ready_{kind}", str(e)) from None
    return None


def listen_of(w: WorkerConfig | None, cfg: Config) -> tuple[tuple[str, int], ...]:
    """The addresses handed to the worker: its own `listen`, else the top-level one. Raise
    ProbeError for a malformed address, a repeated one or too many."""
    texts = w.listen if w is not None and w.listen is not None else cfg.listen
    out: list[tuple[str, int]] = []
    for text in texts:
        try:
            address = parse_address(text)
        except ValueError as e:
            raise ProbeError("listen", str(e)) from None
        if address in out:
            raise ProbeError("listen", f"expected each address once, got {text!r} twice")
        out.append(address)
    if len(out) > MAX_LISTEN:
        raise ProbeError("listen", f"expected at most {MAX_LISTEN} addresses, got {len(out)}")
    return tuple(out)


class ProbeError(ValueError):
    """A probe or listen setting that is not usable; `key` is the field's name."""

    def __init__(self, key: str, what: str) -> None:
        super().__init__(what)
        self.key = key


def ambiguity(probe: Probe | None, listen: tuple[tuple[str, int], ...]) -> str | None:
    """Why `probe` on a port that is not handed over cannot serve a replacement, or None.

    During a replacement the old generation holds the port; the new one, unable to bind
    it, cannot answer on it before the old one lets go."""
    if probe is None or probe.kind not in ("tcp", "http"):
        return None
    if any(port == probe.port for _, port in listen):
        return None
    return (f"{probe.describe()} probes port {probe.port}, which the old generation still "
            "holds while its replacement starts: the probe cannot tell the generations "
            "apart by the port alone. Only an answer from the new generation's own processes "
            "counts, so a server that must bind that port itself will not be ready before "
            "the old one lets go, and each replacement fails its start. Pass --listen "
            f"{_address(probe.host, probe.port)} so that memwarden binds the port once and "
            "hands it to every generation (LISTEN_FDS)")


def check(cfg: Config, origin: Mapping[str, str]) -> None:
    """Raise ConfigError, naming the field as its source spells it, for the first probe or
    listen setting of `cfg` or of a `[[worker]]` that is not usable."""
    entries: list[tuple[str, WorkerConfig | None]] = [("", None)]
    entries += [(f"worker[{i}].", w) for i, w in enumerate(cfg.worker)]
    for prefix, w in entries:
        try:
            probe_of(w, cfg)
            listen_of(w, cfg)
        except ProbeError as e:
            own = w is not None and getattr(w, e.key) is not None
            raise ConfigError(f"{label((prefix if own else '') + e.key, origin)}: {e}") from None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["KINDS", "MAX_LISTEN", "Kind", "Probe", "ProbeError", "ambiguity", "check",
           "listen_of", "parse", "probe_of"]
