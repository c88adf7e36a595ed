"""What is supervised: each worker's resolved settings, and the environment it starts with.

Every inherited value is resolved here, once, against the one memory limit the composition
root discovered: the sampler, the policy, the status view and the snapshot header read
these objects, never the configuration again.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import msgspec

from supervisor.core.exitstatus import parse_signal
from supervisor.core.policy import PolicySettings, WorkerSettings
from supervisor.core.pressure import Thresholds
from supervisor.core.restarts import Restart
from supervisor.core.units import Size
from supervisor.settings.config import Config, Profiles, WorkerConfig
from supervisor.settings.probes import Probe, listen_of, probe_of
from workers import protocol


@dataclass(frozen=True)
class WorkerSpec:
    """A worker entry with every inherited value resolved."""

    name: str
    argv: list[str]
    cwd: str | None
    env: dict[str, str]
    restart: Restart
    medium_signal: signal.Signals | None
    ready_after: float
    grace: float
    profiles: Profiles
    #: The classifier's lines for this worker: its own medium/high/critical, else the
    #: top-level ones, resolved against the limit.
    thresholds: Thresholds
    #: How a generation that does not speak the channel shows it serves (None: it is
    #: guessed ready after `ready_after` alive).
    probe: Probe | None = None
    #: The addresses bound once and handed to every generation (`LISTEN_FDS`).
    listen: tuple[tuple[str, int], ...] = ()


def thresholds(cfg: Config, limit: int | None, *, medium: Size | None = None,
               high: Size | None = None, critical: Size | None = None,
               ready_after: float | None = None) -> Thresholds:
    """Every classifier line of `cfg` resolved against `limit` (bytes, or None when no limit
    is known); `medium`, `high`, `critical` replace the top-level sizes (a worker's own),
    `ready_after` the top-level `--ready-after` (the start-up assumed before one is seen)."""
    p = cfg.pressure
    reserve = p.headroom_reserve.resolve(limit)
    reserve_fraction = None if reserve is None or not limit else reserve / limit
    return Thresholds(
        rss=((medium or cfg.medium).resolve(limit), (high or cfg.high).resolve(limit),
             (critical or cfg.critical).resolve(limit)),
        growth=(float(p.growth_medium), float(p.growth_high), None),
        growth_window_ns=int(p.growth_window * 1e9),
        headroom=(p.headroom_medium, p.headroom_high, reserve_fraction),
        exhaustion_s=(None, float(p.exhaustion_high), float(p.exhaustion_critical)),
        confirm=p.confirm,
        margin=p.margin,
        dwell_ns=(int(p.dwell_medium * 1e9), int(p.dwell_high * 1e9),
                  int(p.dwell_critical * 1e9)),
        limit=float(limit) if limit else None,
        startup_s=float(cfg.ready_after if ready_after is None else ready_after),
    )


def specs(cfg: Config, limit: int | None = None) -> list[WorkerSpec]:
    """The workers to run: `[[worker]]` entries (replicas expanded), or the command line's
    one, each with its thresholds resolved against `limit`."""
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
                    medium_signal=parse_signal(sig) if sig else None,
                    ready_after=float(w.ready_after if w.ready_after is not None
                                      else cfg.ready_after),
                    grace=float(w.grace if w.grace is not None else cfg.grace),
                    profiles=w.profiles or cfg.profiles,
                    thresholds=thresholds(cfg, limit, medium=w.medium, high=w.high,
                                          critical=w.critical, ready_after=w.ready_after),
                    probe=probe_of(w, cfg),
                    listen=listen_of(w, cfg),
                )
            )
    return out


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


def policy_settings(cfg: Config) -> PolicySettings:
    """The policy's settings from a validated Config."""
    return PolicySettings(
        cooldown_s=float(cfg.cooldown),
        cooldown_max_s=float(cfg.cooldown_max),
        critical_grace_s=float(cfg.critical_grace),
        ready_timeout_s=float(cfg.ready_timeout),
        on_baseline_high=cfg.on_baseline_high,
        baseline_generations=cfg.baseline_generations,
        restart_budget=cfg.restart_budget,
        restart_window_s=float(cfg.restart_window),
        backoff_initial_s=float(cfg.backoff_initial),
        backoff_max_s=float(cfg.backoff_max),
        dry_run=cfg.dry_run,
    )


def worker_settings(spec: WorkerSpec) -> WorkerSettings:
    """What the policy needs to know of one worker."""
    return WorkerSettings(spec.name, grace_s=spec.grace, restart=spec.restart)
