"""What is supervised: each worker's resolved settings, and the environment it starts with."""

from __future__ import annotations

import signal
from dataclasses import dataclass

import msgspec

from supervisor.config import Config, Profiles, WorkerConfig
from supervisor.exitstatus import parse_signal
from supervisor.policy import PolicySettings, WorkerSettings
from supervisor.restarts import Restart
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
