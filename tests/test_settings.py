"""Every setting reaches what it configures.

The fields are read from the configuration schema itself (`Config`, `[pressure]`, each
`[[worker]]` key, each profile's limits): each is set to a value that is not its default,
and its effect is looked for where it must show, in the objects the composition root
(`supervisor.app`) hands out, or, for what only a running memwarden does, in one real
run. A field added to the schema without an entry in `EFFECTS` fails
`test_every_field_of_the_schema_has_an_effect_checked_here`.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from supervisor import app
from supervisor.loop.arbiter import Arbiter
from supervisor.loop.events import EventLog
from supervisor.settings import config, loading
from supervisor.settings.specs import WorkerSpec, worker_env
from tests.conftest import wait_until
from workers import protocol

MB = 1_000_000


@dataclass
class Built:
    """What the composition root built from one configuration."""

    assembly: app.Assembly
    arbiter: Arbiter

    @property
    def spec(self) -> WorkerSpec:
        return self.assembly.specs[0]

    def env(self, profile: str = "normal") -> dict[str, str]:
        """The environment the arbiter starts generation 1 of the first worker with."""
        cfg = self.assembly.cfg
        return worker_env({}, self.spec, 1, profile,
                          investigate_on_retire=cfg.investigate_on_retire)

    def limits(self, profile: str) -> dict[str, Any]:
        return json.loads(self.env(profile)[protocol.ENV_LIMITS])


def build(values: dict[str, Any]) -> Iterator[Built]:
    base: dict[str, Any] = {"command": ["true"], "measure": "rss", "snapshots": ""}
    cfg = loading.load({**base, **values}, environ={})
    assembly = app.assemble(cfg)
    arbiter = app.build(assembly, EventLog())
    try:
        yield Built(assembly, arbiter)
    finally:
        arbiter.close()


Check = Callable[[Built], object]
#: field -> (a value that is not the default, what shows that it took effect). Values are
#: given as a user would write them in the TOML file.
EFFECTS: dict[str, tuple[Any, Check]] = {
    "interval": ("2ms", lambda b: b.arbiter.sampler.interval_ns == 2_000_000),
    "discover_interval": ("250ms",
                          lambda b: b.arbiter.sampler._discoverer.interval_s == 0.25),
    "ring": ("10s", lambda b: b.arbiter.sampler.capacity == 10_000),
    "medium": ("60MB", lambda b: b.spec.thresholds.rss[0] == 60 * MB),
    "high": ("300MB", lambda b: b.spec.thresholds.rss[1] == 300 * MB),
    "critical": ("900MB", lambda b: b.spec.thresholds.rss[2] == 900 * MB),
    "limit": ("4GB", lambda b: b.assembly.limit == 4000 * MB
              and b.arbiter.sampler.container() is not None),
    "cooldown": ("7s", lambda b: b.assembly.policy.cooldown_s == 7.0),
    "cooldown_max": ("9min", lambda b: b.assembly.policy.cooldown_max_s == 540.0),
    "on_baseline_high": ("exit", lambda b: b.assembly.policy.on_baseline_high == "exit"),
    "grace": ("4s", lambda b: b.spec.grace == 4.0
              and _settings(b, "worker").grace_s == 4.0),
    "critical_grace": ("3s", lambda b: b.assembly.policy.critical_grace_s == 3.0),
    "restart": ("always", lambda b: _settings(b, "worker").restart == "always"),
    "restart_budget": (9, lambda b: b.assembly.policy.restart_budget == 9),
    "restart_window": ("2min", lambda b: b.assembly.policy.restart_window_s == 120.0),
    "backoff_initial": ("1s", lambda b: b.assembly.policy.backoff_initial_s == 1.0),
    "backoff_max": ("1min", lambda b: b.assembly.policy.backoff_max_s == 60.0),
    "ready_after": ("3s", lambda b: b.spec.ready_after == 3.0),
    "ready_timeout": ("45s", lambda b: b.assembly.policy.ready_timeout_s == 45.0),
    "ready_tcp": ("127.0.0.1:9", lambda b: _probe(b.spec) == ("tcp", "127.0.0.1", 9)),
    "ready_http": ("http://[::1]:8000/up", lambda b: _probe(b.spec) == ("http", "::1", 8000)
                   and b.spec.probe is not None and b.spec.probe.path == "/up"),
    "ready_exec": ("test -e /tmp", lambda b: b.spec.probe is not None
                   and b.spec.probe.argv == ("test", "-e", "/tmp")),
    "ready_file": ("/tmp/up", lambda b: _probe(b.spec) == ("file", "", 0)),
    "listen": (["127.0.0.1:0", ":8077"], lambda b: b.spec.listen == (
        ("127.0.0.1", 0), ("127.0.0.1", 8077))),
    "baseline_generations": (5, lambda b: b.assembly.policy.baseline_generations == 5),
    "medium_signal": ("USR1", lambda b: b.spec.medium_signal == signal.SIGUSR1),
    "investigate_on_retire": (True, lambda b: b.env()[
        protocol.ENV_INVESTIGATE_ON_SHUTDOWN] == "1"),
    "measure": ("pss", lambda b: b.arbiter.measure.how == "pss"
                and b.arbiter.sampler.measure == "pss"),
    "dry_run": (True, lambda b: b.assembly.policy.dry_run),
    "snapshot_file_size": ("2MiB", lambda b: _writer(b).max_bytes == 2 << 20),
    "snapshot_files": (3, lambda b: _writer(b).keep == 3),
    "snapshot_max_age": ("2h", lambda b: _writer(b).max_age_s == 7200.0),
    "sample_period": ("2s", lambda b: app.header(b.arbiter).sample_period_s == 2.0),
    "command": (["sleep", "1"], lambda b: b.spec.argv == ["sleep", "1"]),
    "worker": ([{"name": "a", "command": ["true"]}, {"name": "b", "command": ["false"]}],
               lambda b: [s.name for s in b.assembly.specs] == ["worker", "a", "b"]),
    # [pressure]: the classifier's lines.
    "pressure.growth_medium": ("7MB/s", lambda b: b.spec.thresholds.growth[0] == 7 * MB),
    "pressure.growth_high": ("12MB/s", lambda b: b.spec.thresholds.growth[1] == 12 * MB),
    "pressure.growth_window": ("8s",
                               lambda b: b.spec.thresholds.growth_window_ns == 8 * 10**9),
    "pressure.headroom_medium": (0.3, lambda b: b.spec.thresholds.headroom[0] == 0.3),
    "pressure.headroom_high": (0.15, lambda b: b.spec.thresholds.headroom[1] == 0.15),
    "pressure.headroom_reserve": ("100MB",
                                  lambda b: b.spec.thresholds.headroom[2] == 100 / 4000),
    "pressure.exhaustion_high": ("20s", lambda b: b.spec.thresholds.exhaustion_s[1] == 20.0),
    "pressure.exhaustion_critical": ("4s",
                                     lambda b: b.spec.thresholds.exhaustion_s[2] == 4.0),
    "pressure.confirm": (5, lambda b: b.spec.thresholds.confirm == 5),
    "pressure.margin": (0.1, lambda b: b.spec.thresholds.margin == 0.1),
    "pressure.dwell_medium": ("1min", lambda b: b.spec.thresholds.dwell_ns[0] == 60 * 10**9),
    "pressure.dwell_high": ("10s", lambda b: b.spec.thresholds.dwell_ns[1] == 10 * 10**9),
    "pressure.dwell_critical": ("2s", lambda b: b.spec.thresholds.dwell_ns[2] == 2 * 10**9),
    # Each [[worker]] key, on a worker of its own (see `_worker`).
    "worker.name": ("indexer", lambda b: _worker(b).name == "indexer"),
    "worker.command": (["sleep", "2"], lambda b: _worker(b).argv == ["sleep", "2"]),
    "worker.replicas": (3, lambda b: [s.name for s in b.assembly.specs[1:]] == [
        "w-1", "w-2", "w-3"]),
    "worker.cwd": ("/tmp", lambda b: _worker(b).cwd == "/tmp"),
    "worker.env": ({"A": "1"}, lambda b: worker_env({}, _worker(b), 1, "normal")["A"] == "1"),
    "worker.restart": ("on-failure", lambda b: _settings(b,
        _worker(b).name).restart == "on-failure"),
    "worker.medium": ("40MB", lambda b: _worker(b).thresholds.rss[0] == 40 * MB
                      and b.spec.thresholds.rss[0] == 50 * MB),
    "worker.high": ("60MB", lambda b: _worker(b).thresholds.rss[1] == 60 * MB
                    and b.spec.thresholds.rss[1] == 200 * MB),
    "worker.critical": ("800MB", lambda b: _worker(b).thresholds.rss[2] == 800 * MB
                        and b.spec.thresholds.rss[2] == 500 * MB),
    "worker.medium_signal": ("USR2", lambda b: _worker(b).medium_signal == signal.SIGUSR2),
    "worker.ready_after": ("2s", lambda b: _worker(b).ready_after == 2.0),
    "worker.ready_tcp": (":9", lambda b: _probe(_worker(b)) == ("tcp", "127.0.0.1", 9)
                         and b.spec.probe is None),
    "worker.ready_http": ("http://localhost/", lambda b: _probe(_worker(b)) == (
        "http", "localhost", 80)),
    "worker.ready_exec": ("true", lambda b: _probe(_worker(b)) == ("exec", "", 0)),
    "worker.ready_file": ("/tmp/w", lambda b: _probe(_worker(b)) == ("file", "", 0)),
    "worker.listen": (["127.0.0.1:0"], lambda b: _worker(b).listen == (("127.0.0.1", 0),)
                      and b.spec.listen == ()),
    "worker.grace": ("6s", lambda b: _settings(b, _worker(b).name).grace_s
                     == 6.0),
    "worker.profiles": ({"high": {"max_objects": 7}}, lambda b: json.loads(worker_env(
        {}, _worker(b), 1, "high")[protocol.ENV_LIMITS])["max_objects"] == 7),
    # What only a running memwarden shows (`run_observed`, one real run for them all).
    "oom_score_adj": (600, lambda b: _observed()["worker_oom_score_adj"] == 600),
    "own_oom_score_adj": (100, lambda b: _observed()["own_oom_score_adj"] == 100),
    "subreaper": (False, lambda b: _observed()["orphan_parent"] != _observed()["memwarden"]),
    "realtime": (True, lambda b: _observed()["realtime"]),
    "snapshots": ("snaps", lambda b: _observed()["snapshots"]),
    "metrics": ("127.0.0.1:0", lambda b: _observed()["metrics"]),
    "control": ("ctl.sock", lambda b: _observed()["control"]),
    "log_level": ("debug", lambda b: _observed()["debug_lines"]),
    "log_format": ("json", lambda b: _observed()["json_lines"]),
}
# Each profile's limits: the environment of a generation started with that profile.
for _profile in ("normal", "high", "critical"):
    for _field in msgspec.structs.fields(protocol.Limits):
        _default = getattr(getattr(config.Profiles(), _profile), _field.name)
        _value = _default + 1 if isinstance(_default, int) else _default + 0.5
        EFFECTS[f"profiles.{_profile}.{_field.name}"] = (
            _value, lambda b, p=_profile, f=_field.name, v=_value: b.limits(p)[f] == v)


def schema_fields() -> set[str]:
    """Every field a user can set, as `EFFECTS` names them."""
    out: set[str] = set()
    nested = {"pressure": config.Pressure, "worker": config.WorkerConfig}
    for f in msgspec.structs.fields(config.Config):
        if f.name in nested:
            out.update(f"{f.name}.{g.name}" for g in msgspec.structs.fields(nested[f.name]))
            out.add(f.name) if f.name == "worker" else None
        elif f.name == "profiles":
            for p in msgspec.structs.fields(config.Profiles):
                out.update(f"profiles.{p.name}.{g.name}"
                           for g in msgspec.structs.fields(protocol.Limits))
        else:
            out.add(f.name)
    return out


def test_every_field_of_the_schema_has_an_effect_checked_here() -> None:
    fields = schema_fields()
    assert not fields - set(EFFECTS), f"fields without a check: {sorted(fields - set(EFFECTS))}"
    assert not set(EFFECTS) - fields, f"checks of no field: {sorted(set(EFFECTS) - fields)}"


def _values(path: str, value: Any) -> dict[str, Any]:
    """The configuration that sets `path` to `value` and nothing else of note."""
    head, _, rest = path.partition(".")
    if head == "worker" and rest:
        entry: dict[str, Any] = {"name": "w", "command": ["true"], rest: value}
        return {"worker": [entry]}
    if head == "profiles":
        profile, _, name = rest.partition(".")
        return {"profiles": {profile: {name: value}}}
    if path == "pressure.headroom_reserve":  # a fraction of the limit: needs one
        return {"pressure": {rest: value}, "limit": "4GB"}
    if head == "pressure":
        return {"pressure": {rest: value}}
    return {path: value}


def _settings(b: Built, worker: str) -> Any:
    """The settings the policy holds for `worker` (its lifecycle's own copy)."""
    return b.arbiter.policy._worker(worker).settings


def _worker(b: Built) -> WorkerSpec:
    """The `[[worker]]` entry's spec (the command line's worker comes first)."""
    return b.assembly.specs[1]


def _probe(spec: WorkerSpec) -> tuple[str, str, int] | None:
    """A spec's readiness probe as (kind, host, port)."""
    p = spec.probe
    return None if p is None else (p.kind, p.host, p.port)


def _writer(b: Built) -> Any:
    cfg = msgspec.structs.replace(b.assembly.cfg, snapshots=str(_tmp / "w"))
    arbiter = app.build(app.assemble(cfg), EventLog())
    try:
        writer = app.open_writer(arbiter)
        assert writer is not None
        writer.close()
        return writer
    finally:
        arbiter.close()


_tmp = pathlib.Path()
_run: dict[str, Any] = {}


def _observed() -> dict[str, Any]:
    return _run


BUILT_FIELDS = sorted(p for p in EFFECTS if p not in (
    "oom_score_adj", "own_oom_score_adj", "subreaper", "realtime", "snapshots", "metrics",
    "control", "log_level", "log_format"))


@pytest.mark.parametrize("path", BUILT_FIELDS)
def test_a_setting_shows_in_what_the_composition_root_builds(path: str, tmp_path) -> None:
    global _tmp
    _tmp = tmp_path
    value, check = EFFECTS[path]
    for built in build(_values(path, value)):
        assert check(built), f"{path} = {value!r} has no effect"


# The worker of the real run: it writes its own environment's investigate flag, then forks a
# child that forks a grandchild and exits, so that the grandchild is an orphan; the
# grandchild writes the pid of its new parent.
OBSERVED = r"""
import os, sys, time
out = sys.argv[1]
child = os.fork()
if child == 0:
    if os.fork() == 0:
        time.sleep(0.5)
        with open(out + ".orphan", "w") as f:
            f.write(str(os.getppid()))
        time.sleep(600)
    os._exit(0)
os.waitpid(child, 0)
time.sleep(600)
"""


@pytest.mark.timeout(90)
def test_what_only_a_running_memwarden_shows(memwarden, tmp_path) -> None:
    runtime = [p for p in EFFECTS if p not in BUILT_FIELDS]
    values = {p: EFFECTS[p][0] for p in runtime}
    args = ["run", "--measure", "rss", "--ready-after", "0.2s",
            "--oom-score-adj", str(values["oom_score_adj"]),
            "--own-oom-score-adj", str(values["own_oom_score_adj"]),
            "--no-subreaper", "--realtime", "--snapshots", str(tmp_path / values["snapshots"]),
            "--metrics", values["metrics"], "--control", str(tmp_path / values["control"]),
            "--log-level", values["log_level"], "--log-format", values["log_format"],
            "--", sys.executable, "-c", OBSERVED, str(tmp_path / "w")]
    m = memwarden(*args)
    try:
        orphan = tmp_path / "w.orphan"
        wait_until(lambda: m.proc.poll() is not None or (orphan.exists() and orphan.read_text()),
                   what="the orphan's parent")
        assert m.proc.poll() is None, m.stderr()
        worker = wait_until(lambda: _child_of(m.pid), what="the worker")
        lines = wait_until(lambda: "metrics on" in m.stderr() and m.stderr().splitlines(),
                           what="the metrics line")
        assert all(line.startswith("{") for line in lines), lines
        _run.update(
            memwarden=m.pid,
            worker_oom_score_adj=int(pathlib.Path(f"/proc/{worker}/oom_score_adj").read_text()),
            own_oom_score_adj=int(pathlib.Path(f"/proc/{m.pid}/oom_score_adj").read_text()),
            orphan_parent=int(orphan.read_text()),
            realtime=_sampler_is_realtime(m.pid, m.stderr()),
            snapshots=wait_until(lambda: list((tmp_path / "snaps").glob("*.jsonl")),
                                 what="a snapshot file"),
            metrics=any("metrics on http://127.0.0.1:" in x for x in lines),
            control=(tmp_path / "ctl.sock").exists(),
            debug_lines=any(json.loads(x).get("level") == "debug" for x in lines),
            json_lines=all(isinstance(json.loads(x), dict) for x in lines),
        )
    finally:
        m.signal(signal.SIGTERM)
        m.wait(30)
    for path in runtime:
        value, check = EFFECTS[path]
        assert check(None), f"{path} = {value!r} has no effect: {_run}"  # type: ignore[arg-type]


def _child_of(pid: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                return int(entry)
    return None


def _sampler_is_realtime(pid: int, log: str) -> bool:
    """A thread of memwarden (its sampler's) runs under SCHED_FIFO, or memwarden said why
    it may not."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = pathlib.Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[38]) == 1:  # policy: SCHED_FIFO
            return True
    return "realtime" in log
