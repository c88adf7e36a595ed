"""The composition root: everything `memwarden run` builds, from a validated configuration.

The command line (`cli`) loads and validates the configuration; this module discovers the
memory limit once, resolves every worker's settings against it (`Assembly`), binds the
listeners before any worker starts, builds the arbiter, the sampler and the recorder, and
runs them with the faces (control socket, metrics endpoint, sd_notify) around the loop.
Nothing below it builds another layer's objects from the configuration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.abc
import msgspec

from snapshots.schema import Header
from snapshots.writer import STDOUT, SnapshotWriter
from supervisor.core.policy import PolicySettings
from supervisor.core.pressure import Thresholds
from supervisor.faces import control, endpoint, requests, sdnotify
from supervisor.linux import handoff, sigwait
from supervisor.linux.cgroup import CgroupMemory
from supervisor.loop.arbiter import Arbiter
from supervisor.loop.events import EventLog
from supervisor.loop.recorder import Recorder
from supervisor.sensing import measure
from supervisor.settings import config
from supervisor.settings.probes import ambiguity
from supervisor.settings.specs import WorkerSpec, policy_settings, specs, thresholds

log = logging.getLogger("memwarden.app")

Sockets = tuple[socket.socket | None, socket.socket | None]  # (control, metrics)
Listeners = dict[str, tuple[handoff.Listener, ...]]  # handed-over sockets, by worker


@dataclass(frozen=True)
class Assembly:
    """The configuration resolved once against the machine, before anything runs."""

    cfg: config.Config
    #: memwarden's own memory cgroup (None: none readable), discovered once.
    cgroup: CgroupMemory | None
    #: The limit thresholds resolve against: `--limit`, else the cgroup's (None: unknown).
    limit: int | None
    #: The top-level lines, for the container's classifier and the snapshot header.
    thresholds: Thresholds
    #: Each worker with every inherited value resolved, its own thresholds among them.
    specs: tuple[WorkerSpec, ...]
    policy: PolicySettings


def assemble(cfg: config.Config) -> Assembly:
    """Resolve a validated `cfg` against this machine (reads, no side effects)."""
    cgroup = CgroupMemory.discover()
    limit = cfg.limit.bytes if cfg.limit is not None else None
    if limit is None and cgroup is not None:
        with contextlib.suppress(OSError):
            limit = cgroup.limit()
    return Assembly(cfg=cfg, cgroup=cgroup, limit=limit, thresholds=thresholds(cfg, limit),
                    specs=tuple(specs(cfg, limit)), policy=policy_settings(cfg))


def build(assembly: Assembly, events: EventLog, listeners: Listeners | None = None, *,
          notify: bool = True) -> Arbiter:
    """The arbiter (with its sampler, policy and health), memory measured as asked; raise
    ConfigError for a `--measure` that is not possible here. Nothing runs yet. `notify`
    False leaves the kernel's notifications unarmed: the ticks alone watch memory
    (`scripts/bench_reaction.py` measures both ways; no option asks for it)."""
    how = measure.choose(assembly.cfg.measure, assembly.cgroup, assembly.limit)
    return Arbiter(assembly.cfg, events, specs=assembly.specs, policy=assembly.policy,
                   thresholds=assembly.thresholds, limit=assembly.limit,
                   cgroup=assembly.cgroup, measure=how, listeners=listeners, notify=notify)


def open_listeners(assembly: Assembly) -> Listeners:
    """Bind every worker's `--listen` addresses once, before any worker starts (a worker
    sharing an address with another shares the socket); raise handoff.ListenError (a
    ValueError of one line) for one that cannot be bound."""
    bound = handoff.bind_all([a for spec in assembly.specs for a in spec.listen])
    for listener in bound.values():
        log.info("listening on %s:%d for the workers (handed to every generation as "
                 "LISTEN_FDS)", *listener.address)
    return {spec.name: tuple(bound[a] for a in spec.listen)
            for spec in assembly.specs if spec.listen}


def probe_warnings(assembly: Assembly) -> list[str]:
    """What to say at start-up about probes that cannot tell a generation from its
    replacement (`probes.ambiguity`), one line per worker."""
    out = []
    for spec in assembly.specs:
        why = ambiguity(spec.probe, spec.listen)
        if why is not None:
            out.append(f"worker {spec.name!r}: {why}")
    return out


def open_sockets(cfg: config.Config) -> Sockets:
    """Bind the control socket and the metrics address `cfg` asks for, in that order, before
    any worker starts: (control, metrics), None for one not wanted. Raise ListenError or
    ValueError (one line)."""
    control_sock = None if cfg.control == "" else control.open_socket(cfg.control)
    try:
        metrics_sock = endpoint.open_socket(cfg.metrics) if cfg.metrics else None
    except ValueError:
        if control_sock is not None:
            with contextlib.suppress(OSError):
                os.unlink(control_sock.getsockname())
            control_sock.close()
        raise
    return control_sock, metrics_sock


def _services(arbiter: Arbiter, sockets: Sockets
              ) -> list[Callable[[anyio.abc.TaskGroup], Awaitable[None]]]:
    control_sock, metrics_sock = sockets
    out: list[Callable[[anyio.abc.TaskGroup], Awaitable[None]]] = []
    if metrics_sock is not None:
        async def metrics(tg: anyio.abc.TaskGroup) -> None:
            await tg.start(endpoint.serve, metrics_sock, arbiter)
        out.append(metrics)
    if control_sock is not None:
        async def answer(tg: anyio.abc.TaskGroup) -> None:
            tg.start_soon(control.serve, control_sock, lambda r: requests.answer(arbiter, r))
        out.append(answer)
    return out


def supervise(assembly: Assembly, sockets: Sockets, listeners: Listeners | None = None) -> int:
    """Run everything until the workers are done or memwarden is stopped; return the exit
    status. Raise ConfigError, before any worker starts, for a `--measure` that is not
    possible here."""
    sigwait.block()  # before the first thread (the snapshot writer's) starts
    notifier = sdnotify.Notifier.from_environ()  # before any worker could inherit it
    events = EventLog()
    arbiter = build(assembly, events, listeners)
    writer = open_writer(arbiter)
    if writer is not None:
        events.sink = writer
        arbiter.recorder = Recorder(writer, period_s=assembly.cfg.sample_period,
                                    interval_s=assembly.cfg.interval, limit=arbiter.limit)
    try:
        return anyio.run(sdnotify.supervise, arbiter, notifier, _services(arbiter, sockets))
    finally:
        if writer is not None:
            writer.close()
            if writer.dropped:
                log.warning("%d snapshot records were dropped (disk full or slow)",
                            writer.dropped)


def header(arbiter: Arbiter) -> Header:
    """The snapshot header: where and how this run measures, its settings as resolved."""
    cfg = arbiter.cfg
    lines = arbiter.thresholds.rss
    return Header(
        t=time.time(), host=socket.gethostname(), pod=os.environ.get("POD_NAME")
        or os.environ.get("HOSTNAME"), namespace=os.environ.get("POD_NAMESPACE"),
        container=os.environ.get("CONTAINER_NAME"),
        workload=os.environ.get("WORKLOAD_NAME") or None, supervisor_pid=os.getpid(),
        started=time.time(), limit=arbiter.limit, interval_s=float(cfg.interval),
        sample_period_s=float(cfg.sample_period),
        thresholds={name: int(value) for name, value in zip(("medium", "high", "critical"),
                                                             lines, strict=True)
                    if value is not None},
        config=msgspec.to_builtins(cfg, enc_hook=config.enc_hook),
        measure=arbiter.measure.how,
    )


def open_writer(arbiter: Arbiter) -> SnapshotWriter | None:
    """The snapshot writer, or None (snapshots off, or the directory unusable: supervise
    anyway)."""
    cfg = arbiter.cfg
    if not cfg.snapshots:
        return None
    writer = SnapshotWriter(cfg.snapshots, header(arbiter),
                            max_bytes=cfg.snapshot_file_size.bytes or 0,
                            keep=cfg.snapshot_files, max_age_s=float(cfg.snapshot_max_age))
    try:
        writer.start()
    except OSError as e:
        log.warning("snapshots disabled: cannot use %s (%s)", cfg.snapshots, e.strerror or e)
        return None
    if cfg.snapshots == STDOUT:
        log.info("snapshots to standard output (read them back with memwarden analyze -)")
    return writer


__all__ = ["Assembly", "Listeners", "assemble", "build", "header", "open_listeners",
           "open_sockets", "open_writer", "probe_warnings", "supervise"]
