"""What is supervised: slots (a worker identity) and their generations (one process tree each)."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

import anyio
import msgspec

from supervisor.config import Config, Profiles, WorkerConfig
from supervisor.exitstatus import ExitStatus, parse_signal
from supervisor.process import Child
from supervisor.restarts import Restart, RestartTracker
from supervisor.units import Size
from workers import protocol


@dataclass(frozen=True)
class WorkerSpec:
    """A worker entry with every inherited value resolved."""

    name: str
    argv: list[str]
    cwd: str | None
    env: dict[str, str]
    restart: Restart
    medium: Size
    high: Size
    critical: Size
    medium_signal: signal.Signals | None
    ready_after: float
    grace: float
    profiles: Profiles


def specs(cfg: Config) -> list[WorkerSpec]:
    """The workers to run: `[[worker]]` entries (replicas expanded), or the command line's one."""
    entries = list(cfg.worker)
    if cfg.command:
        entries.insert(0, WorkerConfig(name="worker", command=cfg.command))
    out: list[WorkerSpec] = []
    for w in entries:
        sig = w.medium_signal or cfg.medium_signal
        for i in range(w.replicas):
            out.append(
                WorkerSpec(
                    name=w.name if w.replicas == 1 else f"{w.name}-{i + 1}",
                    argv=list(w.command),
                    cwd=w.cwd,
                    env=dict(w.env),
                    restart=w.restart or cfg.restart,
                    medium=w.medium or cfg.medium,
                    high=w.high or cfg.high,
                    critical=w.critical or cfg.critical,
                    medium_signal=parse_signal(sig) if sig else None,
                    ready_after=float(w.ready_after if w.ready_after is not None
                                      else cfg.ready_after),
                    grace=float(w.grace if w.grace is not None else cfg.grace),
                    profiles=w.profiles or cfg.profiles,
                )
            )
    return out


@dataclass(eq=False)
class Generation:
    """One started process tree of a slot."""

    slot: Slot
    number: int
    profile: str
    child: Child
    started: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    spoke: bool = False  # it sent at least one channel message: it is cooperative
    retiring: bool = False
    status: ExitStatus | None = None
    rss_at_ready: int | None = None
    oom_kills_at_start: int = 0
    stats: protocol.Stats | None = None
    exited: anyio.Event = field(default_factory=anyio.Event)
    reported: anyio.Event = field(default_factory=anyio.Event)
    channel_scope: anyio.CancelScope | None = None

    @property
    def key(self) -> str:
        return f"{self.slot.name}#{self.number}"

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def alive(self) -> bool:
        return self.status is None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started


@dataclass(eq=False)
class Slot:
    """A worker identity; generations replace one another under it."""

    spec: WorkerSpec
    restarts: RestartTracker
    current: Generation | None = None
    pending: Generation | None = None
    generations: int = 0
    last_status: ExitStatus | None = None
    done: bool = False  # exited and will not be restarted

    @property
    def name(self) -> str:
        return self.spec.name

    def live(self) -> list[Generation]:
        return [g for g in (self.current, self.pending) if g is not None and g.alive]


def make_slot(spec: WorkerSpec, cfg: Config) -> Slot:
    return Slot(
        spec,
        RestartTracker(
            spec.restart,
            budget=cfg.restart_budget,
            window_s=cfg.restart_window,
            initial_s=cfg.backoff_initial,
            max_s=cfg.backoff_max,
        ),
    )


def worker_env(base: dict[str, str], spec: WorkerSpec, number: int, profile: str,
               *, investigate_on_retire: bool = False) -> dict[str, str]:
    """The worker's environment: ours unchanged, its own additions, then the channel's variables."""
    env = dict(base)
    env.update(spec.env)
    limits: protocol.Limits = getattr(spec.profiles, profile)
    env[protocol.ENV_WORKER] = spec.name
    env[protocol.ENV_GENERATION] = str(number)
    env[protocol.ENV_PROFILE] = profile
    env[protocol.ENV_LIMITS] = msgspec.json.encode(limits).decode()
    env.pop(protocol.ENV_FD, None)
    if investigate_on_retire:
        env[protocol.ENV_INVESTIGATE_ON_SHUTDOWN] = "1"
    return env
