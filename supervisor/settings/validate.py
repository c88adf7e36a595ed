"""The checks across a whole configuration, after each value has its form (`config.convert`).

Ranges (so that nothing accepted breaks later: a 10,000,000 h interval once killed the
sampler thread, `replicas = 100000000` grew memwarden by 115 MB/s), the order of thresholds
per worker after inheritance, unique worker names, runnable commands and environments,
signals a worker can handle. Every error is a `ConfigError` of one line naming the field as
its source spells it (`--high`, `MEMWARDEN_HIGH`, `high (in m.toml)`) and the accepted form.

`against_limit` does the checks that need the memory limit, once the edge has found it.
Its rule for a threshold above the limit: set by the user, an error (it can never fire);
a default, a warning (memwarden must still run in a container smaller than its defaults).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import signal
from collections.abc import Iterator, Mapping

import msgspec

from supervisor.core.exitstatus import parse_signal
from supervisor.core.units import MAX_BYTES, Size, spell_duration, spell_rate
from supervisor.settings.config import (
    Config,
    ConfigError,
    Profiles,
    Rate,
    WorkerConfig,
    label,
)
from workers.protocol import Limits, escape, shown

#: Durations, in seconds: the smallest and largest accepted.
DURATIONS: dict[str, tuple[float, float]] = {
    "interval": (100e-6, 60.0),  # below 100 us a tick cannot be kept in Python
    "discover_interval": (1e-3, 60.0),
    "ring": (1.0, 86400.0),
    "cooldown": (0.0, 86400.0),
    "cooldown_max": (0.0, 7 * 86400.0),
    "grace": (0.0, 3600.0),
    "critical_grace": (0.0, 3600.0),
    "restart_window": (1.0, 7 * 86400.0),
    "backoff_initial": (0.0, 3600.0),
    "backoff_max": (0.0, 86400.0),
    "ready_after": (0.0, 3600.0),
    "ready_timeout": (0.01, 86400.0),
    "sample_period": (0.01, 3600.0),
    "growth_window": (0.1, 3600.0),
    "exhaustion_high": (0.0, 86400.0),
    "exhaustion_critical": (0.0, 86400.0),
    "dwell_medium": (0.0, 86400.0),
    "dwell_high": (0.0, 86400.0),
    "dwell_critical": (0.0, 86400.0),
    "snapshot_max_age": (60.0, 30 * 86400.0),
}
#: Workers (replicas included) one memwarden supervises at most.
MAX_WORKERS = 256
INTEGERS: dict[str, tuple[int, int]] = {
    "restart_budget": (1, 10000),
    "baseline_generations": (1, 1000),
    "confirm": (1, 10000),
    "replicas": (1, MAX_WORKERS),
    "snapshot_files": (1, 10000),
}
#: The size of one snapshot file, smallest and largest: below it rotation would outrun
#: the writer (a burst record alone is tens of KiB), above it one file is past handling.
SNAPSHOT_FILE_SIZE = (64 * 1024, 64 * 2**30)
#: Samples one worker's ring holds at most (16 bytes each), and all rings together.
MAX_RING_SAMPLES = 1_000_000
MAX_RING_BYTES = 256 * 2**20
#: Bounds of the limits a profile gives a worker (`workers.protocol.Limits`).
LIMIT_BOUNDS: dict[str, tuple[float, float]] = {
    "max_objects": (1, 10**9),
    "max_history": (1, 10**9),
    "gc_interval_s": (1e-3, 86400.0),
    "trim_interval_s": (1e-3, 86400.0),
    "trim_threshold_bytes": (0, MAX_BYTES),
    # 0 keeps the interpreter's own; beyond a million a generation would never collect.
    "gc_threshold0": (0, 10**6),
    "gc_threshold1": (0, 10**6),
    "gc_threshold2": (0, 10**6),
}
LIMIT_NAMES = tuple(f.name for f in msgspec.structs.fields(Limits))

NAME_FORM = "a name of letters, digits, '.', '_' or '-' (at most 64, starting with one of " \
    "the first two)"
#: Matched whole (`fullmatch`): `$` also matches before a final newline, and a name ending in
#: one passed and forged log lines.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Signals a worker can be sent under MEDIUM pressure: ones a program installs a handler
#: for, that mean nothing else to the kernel or to a shell.
MEDIUM_SIGNALS = frozenset({signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
                            signal.SIGALRM, signal.SIGURG, signal.SIGIO, signal.SIGPWR,
                            signal.SIGVTALRM, signal.SIGPROF, signal.SIGRTMIN,
                            signal.SIGRTMAX})
_REFUSED = {
    "cannot be caught: the worker would be killed or stopped instead of trimming": (
        signal.SIGKILL, signal.SIGSTOP),
    "asks a process to end: the worker would stop instead of trimming (memwarden sends it "
    "itself when it retires one)": (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                                    signal.SIGABRT),
    "reports a fault of the process itself (by default it dumps core)": (
        signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP,
        signal.SIGSYS, signal.SIGXCPU, signal.SIGXFSZ, signal.SIGPIPE),
    "is job control: the worker would stop, or not hear it": (
        signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCONT, signal.SIGCHLD),
}
SIGNAL_FORM = "a signal a worker handles: USR1, USR2, HUP, WINCH, ALRM, URG, IO, PWR, " \
    "VTALRM, PROF, RTMIN or RTMAX"


def format_duration(seconds: float) -> str:
    """A duration as a person would write it in the configuration, exactly (100us, 60s,
    24h): a bound shown in an error must not be rounded past the value it refuses."""
    return spell_duration(seconds)


def check(cfg: Config, origin: Mapping[str, str]) -> None:
    """Raise ConfigError for the first value out of range or in conflict with another."""
    def fail(path: str, what: str) -> ConfigError:
        return ConfigError(f"{label(path, origin)}: {what}")

    for path, value in _fields(cfg):
        key = path.rsplit(".", 1)[-1]
        if key in DURATIONS:
            lo, hi = DURATIONS[key]
            if value is not None and not lo <= float(value) <= hi:
                raise fail(path, f"expected a duration from {format_duration(lo)} to "
                           f"{format_duration(hi)}, got {format_duration(float(value))}")
        elif key in INTEGERS:
            lo, hi = INTEGERS[key]
            if not lo <= value <= hi:
                raise fail(path, f"expected an integer from {lo} to {hi}, got {value}")
    _check_pairs(cfg, fail, origin)
    if cfg.limit is not None and cfg.limit.percent is not None:
        raise fail("limit", f"expected a size such as 512MB (the limit itself cannot be a "
                   f"share of the limit), got {cfg.limit}")
    if cfg.limit is not None and not cfg.limit.bytes:
        raise fail("limit", f"expected a size above 0, such as 512MB, got {cfg.limit}")
    for path, profiles in _profiles(cfg):
        for name in ("normal", "high", "critical"):
            problem = limits_problem(getattr(profiles, name))
            if problem:
                raise fail(f"{path}.{name}.{problem[0]}", problem[1])
    _check_signals(cfg, fail)
    _check_paths(cfg, fail)
    names = _check_workers(cfg, fail)
    samples = float(cfg.ring) / float(cfg.interval)
    if samples > MAX_RING_SAMPLES or samples * 16 * len(names) > MAX_RING_BYTES:
        raise fail("ring", f"{len(names)} worker(s) with {format_duration(float(cfg.ring))} at "
                   f"{format_duration(float(cfg.interval))} would hold "
                   f"{samples * 16 * len(names) / 1e6:.0f}MB in rings (at most "
                   f"{MAX_RING_SAMPLES} samples each, {MAX_RING_BYTES >> 20}MiB in all): "
                   "shorten --ring or lengthen --interval")
    for path, th in _threshold_sets(cfg, origin):
        _check_order(path, th, fail, origin, limit=None)


def against_limit(cfg: Config, origin: Mapping[str, str], limit: int | None) -> list[str]:
    """The checks that need the memory limit (bytes, None when none is known).

    Raise ConfigError for a share of an unknown limit, thresholds out of order once
    resolved, or a threshold set above the limit; return warnings (a default above it).
    """
    def fail(path: str, what: str) -> ConfigError:
        return ConfigError(f"{label(path, origin)}: {what}")

    warnings: list[str] = []
    for path, th in _threshold_sets(cfg, origin):
        # What the user set is named first: a derived share follows one that was set.
        for size, where in sorted(th.values(), key=lambda e: f"derived:{e[1]}" in origin):
            if size.percent is not None and limit is None:
                raise fail(where, f"{size} is a share of the memory limit, but none is known "
                           "(no cgroup limit found): give --limit SIZE, or a size such as "
                           "200MB")
        _check_order(path, th, fail, origin, limit=limit)
        if limit is None:
            continue
        for name, (size, where) in th.items():
            value = size.resolve(limit)
            if value is None or value <= limit:
                continue
            text = (f"{size} is above the memory limit ({Size(bytes=limit)}): the "
                    f"{name.upper()} level could never be reached by RSS")
            if where.split(".")[0].split("[")[0] in origin and f"derived:{where}" not in origin:
                raise fail(where, text + f"; expected at most {Size(bytes=limit)} or a share "
                           "such as 90%")
            warning = f"{label(where, origin)}: {text} (the container's headroom still " \
                f"raises it); set --{name} lower to use it"
            if warning not in warnings:
                warnings.append(warning)
    return warnings


#: The default proportions of the thresholds (50MB : 200MB : 500MB, 5MB/s : 10MB/s): what
#: an unset threshold keeps to the ones set (README, "Thresholds you leave unset").
_LEVELS = ("medium", "high", "critical")
_RATIO = {"medium": 1.0, "high": 4.0, "critical": 10.0}
_GROWTH_RATIO = {"growth_medium": 1.0, "growth_high": 2.0}


def derive(cfg: Config, given: Mapping[str, object], origin: dict[str, str]) -> Config:
    """`cfg` with every threshold the user left unset derived from the ones set, so that a
    user who sets one threshold gets the others following it instead of an error about a
    default they never set (`--high 700MB` alone was refused: the default CRITICAL is 500MB).

    `given` is the merged raw configuration (what was set, from any source). Each derived
    path is noted in `origin` as `derived:<path>` -> the setting(s) it follows, so that
    messages say `critical (derived from --high)`. The rule, from the nearest level set on
    each side, for sizes of one kind: medium = min(default, high / 4) (or critical / 10);
    critical = max(default, 2.5 x high) (or 10 x medium); high = default clamped to
    [4 x medium, critical / 2.5] (their geometric mean when that range is empty); shares of
    the limit follow shares in the same proportions (without the byte defaults), a derived
    CRITICAL at most 100% (else off); growth_high = max(default, 2 x growth_medium),
    growth_medium = min(default, growth_high / 2).
    """
    defaults = Config()
    top_set = {n: getattr(cfg, n) for n in _LEVELS if n in given}
    changes: dict[str, Size] = {}
    if top_set:  # also what the workers that set none of their own inherit
        changes = _derive_sizes(top_set, {n: getattr(defaults, n) for n in _LEVELS})
        for name in changes:
            origin[f"derived:{name}"] = _followed(name, top_set, origin)
    workers = []
    for i, w in enumerate(cfg.worker):
        own = {n: getattr(w, n) for n in _LEVELS if getattr(w, n) is not None}
        if not own:
            workers.append(w)
            continue
        set_here = {**top_set, **own}
        derived = _derive_sizes(set_here, {n: getattr(defaults, n) for n in _LEVELS})
        for name in derived:
            origin[f"derived:worker[{i}].{name}"] = _followed(name, set_here, origin, i, own)
        workers.append(msgspec.structs.replace(w, **derived))
    pressure = cfg.pressure
    inner = given.get("pressure")
    growth_set = {n: float(getattr(pressure, n)) for n in _GROWTH_RATIO
                  if n in given or (isinstance(inner, Mapping) and n in inner)}
    if len(growth_set) == 1:
        (name, value), = growth_set.items()
        other = "growth_high" if name == "growth_medium" else "growth_medium"
        scaled = value * _GROWTH_RATIO[other] / _GROWTH_RATIO[name]
        default = float(getattr(defaults.pressure, other))
        rate = max(default, scaled) if other == "growth_high" else min(default, scaled)
        pressure = msgspec.structs.replace(pressure, **{other: Rate(rate)})
        origin[f"derived:pressure.{other}"] = label(f"pressure.{name}", origin)
    return msgspec.structs.replace(cfg, **changes, worker=workers, pressure=pressure)


def _followed(name: str, set_here: Mapping[str, Size], origin: Mapping[str, str],
              index: int | None = None, own: Mapping[str, Size] = {}) -> str:
    """The settings a derived `name` follows, as their sources spell them."""
    near = [n for n in _LEVELS if n in set_here and n != name]
    paths = [f"worker[{index}].{n}" if n in own else n for n in near]
    return " and ".join(label(p, origin) for p in paths)


def _derive_sizes(set_: Mapping[str, Size], defaults: Mapping[str, Size]) -> dict[str, Size]:
    """The unset levels of `set_` (level -> Size), by the rule of `derive`."""
    out: dict[str, Size] = {}
    for level in _LEVELS:
        if level in set_:
            continue
        at = _LEVELS.index(level)
        below = [n for n in _LEVELS[:at] if n in set_ and not set_[n].off]
        above = [n for n in _LEVELS[at + 1:] if n in set_ and not set_[n].off]
        if not below and not above:
            continue
        # The nearest set neighbour decides the kind (bytes or a share of the limit); set
        # ones of the other kind cannot be compared before the limit is known.
        percent = set_[(below[-1:] or above)[0]].percent is not None
        below = [n for n in below[-1:] if (set_[n].percent is not None) == percent]
        above = [n for n in above[:1] if (set_[n].percent is not None) == percent]
        lo = [_amount(set_[n]) * _RATIO[level] / _RATIO[n] for n in below]
        hi = [_amount(set_[n]) * _RATIO[level] / _RATIO[n] for n in above]
        if lo and hi and (percent or max(lo) > min(hi)):
            # Both neighbours set: between them (at the default proportions if they leave
            # room, as a byte default does; else their geometric mean).
            value = math.sqrt(_amount(set_[below[-1]]) * _amount(set_[above[0]]))
            if not percent:
                value = min(max(float(defaults[level].bytes or 0), max(lo)), min(hi)) \
                    if max(lo) <= min(hi) else value
        elif percent:
            value = max(lo) if lo else min(hi)
        else:
            value = float(defaults[level].bytes or 0)
            value = min(max([value, *lo]), *hi) if hi else max([value, *lo])
        if percent:
            floor = max((_amount(set_[n]) for n in below), default=0.0)
            out[level] = Size(percent=min(value, 100.0)) if min(value, 100.0) > floor else Size()
        else:
            out[level] = Size(bytes=min(int(value), MAX_BYTES))
    return out


def _amount(size: Size) -> float:
    return float(size.percent if size.percent is not None else size.bytes or 0)


def limits_problem(limits: Limits) -> tuple[str, str] | None:
    """(field, what is wrong) for limits a worker must not be given, or None."""
    for name, (lo, hi) in LIMIT_BOUNDS.items():
        value = getattr(limits, name)
        if not (math.isfinite(value) and lo <= value <= hi):
            return name, f"expected a number from {lo:.10g} to {hi:.10g}, got {value}"
    return None


def limits_refused(given: dict[str, int | float]) -> str | None:
    """Why `given` (from `memwarden set` or any client of the socket) cannot be sent to a
    worker, or None: the same bounds as a profile in the configuration, so
    that nothing a client sends reaches a worker that the command line would refuse
    (`gc_interval_s = 1e308` once raised OverflowError in the worker's client)."""
    if not given:
        return "no limits given; expected KEY=NUMBER such as max_objects=500"
    for key, value in given.items():
        if key not in LIMIT_NAMES:
            return (f"unknown limit {shown(key, 60)}; known: "
                    f"{', '.join(LIMIT_NAMES)}")
        lo, hi = LIMIT_BOUNDS[key]
        integral = isinstance(getattr(Limits(), key), int)
        if isinstance(value, bool) or (integral and not isinstance(value, int)) \
                or not lo <= value <= hi:  # also false for nan
            kind = "an integer" if integral else "a number"
            return (f"{key}: expected {kind} from {lo:.10g} to {hi:.10g}, got "
                    f"{shown(value)}")
    return None


def signal_problem(text: str) -> str | None:
    """What is wrong with `text` as a `--medium-signal`, or None when a worker can get it."""
    try:
        sig = parse_signal(text)
    except ValueError:
        return f"expected {SIGNAL_FORM}, got {text!r}"
    if sig in MEDIUM_SIGNALS:
        return None
    reason = next((why for why, sigs in _REFUSED.items() if sig in sigs), "is not one of them")
    return f"{sig.name} {reason}; expected {SIGNAL_FORM}"


# -- the pieces ------------------------------------------------------------------------------

def _fields(cfg: Config) -> Iterator[tuple[str, object]]:
    for f in msgspec.structs.fields(Config):
        yield f.name, getattr(cfg, f.name)
    for f in msgspec.structs.fields(cfg.pressure):
        yield f"pressure.{f.name}", getattr(cfg.pressure, f.name)
    for i, w in enumerate(cfg.worker):
        for f in msgspec.structs.fields(WorkerConfig):
            yield f"worker[{i}].{f.name}", getattr(w, f.name)


def _profiles(cfg: Config) -> Iterator[tuple[str, Profiles]]:
    yield "profiles", cfg.profiles
    for i, w in enumerate(cfg.worker):
        if w.profiles is not None:
            yield f"worker[{i}].profiles", w.profiles


def _check_pairs(cfg: Config, fail, origin: Mapping[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Pairs that must be ordered; the one of the two the user set is blamed."""
    p, d = cfg.pressure, format_duration

    def rate(value: float) -> str:
        return spell_rate(value)

    # (low field, its value as text, high field, its value as text, ok, why the order)
    pairs = [
        ("backoff_initial", d(cfg.backoff_initial), "backoff_max", d(cfg.backoff_max),
         cfg.backoff_initial <= cfg.backoff_max, ""),
        ("cooldown", d(cfg.cooldown), "cooldown_max", d(cfg.cooldown_max),
         cfg.cooldown <= cfg.cooldown_max, "; the cooldown grows from one to the other"),
        ("interval", d(cfg.interval), "sample_period", d(cfg.sample_period),
         cfg.interval <= cfg.sample_period, ""),
        ("pressure.growth_medium", rate(p.growth_medium), "pressure.growth_high",
         rate(p.growth_high), p.growth_medium <= p.growth_high, ""),
        ("pressure.headroom_high", f"{p.headroom_high:g}", "pressure.headroom_medium",
         f"{p.headroom_medium:g}", p.headroom_high <= p.headroom_medium,
         "; MEDIUM comes first, with more headroom left"),
        ("pressure.exhaustion_critical", d(p.exhaustion_critical), "pressure.exhaustion_high",
         d(p.exhaustion_high), p.exhaustion_critical <= p.exhaustion_high, ""),
        ("ready_after", d(cfg.ready_after), "ready_timeout", d(cfg.ready_timeout),
         cfg.ready_after < cfg.ready_timeout,
         "; a replacement that does not speak the channel is ready only after ready_after"),
    ]
    for i, w in enumerate(cfg.worker):
        if w.ready_after is not None:
            pairs.append((f"worker[{i}].ready_after", d(w.ready_after), "ready_timeout",
                          d(cfg.ready_timeout), w.ready_after < cfg.ready_timeout, ""))
    for low, low_text, high, high_text, ok, why in pairs:
        if ok:
            continue
        top = high.split(".")[0]
        if top in origin or low.split(".")[0].split("[")[0] not in origin:
            raise fail(high, f"expected more than {low.rsplit('.', 1)[-1]} ({low_text}), "
                       f"got {high_text}{why}")
        raise fail(low, f"expected less than {high.rsplit('.', 1)[-1]} ({high_text}), "
                   f"got {low_text}{why}")


def _check_signals(cfg: Config, fail) -> None:  # type: ignore[no-untyped-def]
    entries = [("medium_signal", cfg.medium_signal)] + [
        (f"worker[{i}].medium_signal", w.medium_signal) for i, w in enumerate(cfg.worker)]
    for path, text in entries:
        if text is not None:
            problem = signal_problem(text)
            if problem:
                raise fail(path, problem)


def _no_nul(text: str) -> bool:
    return "\0" not in text


def _check_paths(cfg: Config, fail) -> None:  # type: ignore[no-untyped-def]
    if cfg.snapshots and not _no_nul(cfg.snapshots):
        raise fail("snapshots", "expected a directory path, got one with a NUL byte")
    lo, hi = SNAPSHOT_FILE_SIZE
    size = cfg.snapshot_file_size
    if size.bytes is None or not lo <= size.bytes <= hi:
        raise fail("snapshot_file_size", f"expected a size from {Size(bytes=lo)} to "
                   f"{Size(bytes=hi)} such as 64MiB, got {size}")
    if cfg.control:
        if not _no_nul(cfg.control):
            raise fail("control", "expected a socket path, got one with a NUL byte")
        if len(os.fsencode(cfg.control)) > 107:
            raise fail("control", "expected a socket path of at most 107 bytes (the limit "
                       f"of a Unix socket address), got {len(os.fsencode(cfg.control))}")
    if cfg.metrics:
        try:
            parse_address(cfg.metrics)
        except ValueError as e:
            raise fail("metrics", str(e)) from None


def _check_workers(cfg: Config, fail) -> list[str]:  # type: ignore[no-untyped-def]
    """Check each worker's command, cwd and env; return every expanded worker name."""
    names: dict[str, str] = {}
    entries: list[tuple[str, WorkerConfig]] = [
        (f"worker[{i}]", w) for i, w in enumerate(cfg.worker)]
    if cfg.command:
        entries.insert(0, ("command", WorkerConfig(name="worker", command=cfg.command)))
    for path, w in entries:
        where = path if path == "command" else f"{path}.name"
        if not _NAME.fullmatch(w.name):
            raise fail(where, f"expected {NAME_FORM}, got {escape(repr(w.name), 80)}")
        expanded = [w.name] if w.replicas == 1 else [
            f"{w.name}-{i + 1}" for i in range(w.replicas)]
        for name in expanded:
            if name in names:
                raise fail(where, f"worker name {name!r} is taken by {names[name]}; expected "
                           "a name of its own for each worker")
            names[name] = "the command line's worker" if path == "command" else where
        cmd = path if path == "command" else f"{path}.command"
        if not w.command or not w.command[0]:
            raise fail(cmd, "expected the program to run and its arguments, such as "
                       "[\"python3\", \"worker.py\"], got none")
        if not all(map(_no_nul, w.command)):
            raise fail(cmd, "expected arguments without NUL bytes")
        if w.cwd is not None and (not _no_nul(w.cwd) or not os.path.isdir(w.cwd)):
            raise fail(f"{path}.cwd", f"expected an existing directory, got {w.cwd!r}")
        for key, value in w.env.items():
            if not key or "=" in key or not _no_nul(key) or not _no_nul(value):
                raise fail(f"{path}.env", "expected names without '=' or NUL bytes and values "
                           f"without NUL bytes, got {key!r}")
    if len(names) > MAX_WORKERS:
        raise fail("worker", f"expected at most {MAX_WORKERS} workers (replicas included), "
                   f"got {len(names)}")
    return list(names)


Thresholds = dict[str, tuple[Size, str]]  # level -> (size, the path it came from)


def _threshold_sets(cfg: Config, origin: Mapping[str, str]) -> Iterator[tuple[str, Thresholds]]:
    """Each worker's medium, high and critical after inheritance, with where each came from."""
    top: Thresholds = {n: (getattr(cfg, n), n) for n in ("medium", "high", "critical")}
    if cfg.command or not cfg.worker:
        yield "", top
    for i, w in enumerate(cfg.worker):
        own = {n: (getattr(w, n), f"worker[{i}].{n}") for n in ("medium", "high", "critical")
               if getattr(w, n) is not None}
        yield f"worker[{i}]", {**top, **own}


def _check_order(path: str, th: Thresholds, fail, origin: Mapping[str, str],  # type: ignore[no-untyped-def]
                 *, limit: int | None) -> None:
    # Two levels that were both set are compared first, across a derived one between them:
    # the message is then about what the user wrote.
    pairs = sorted(itertools.combinations(_LEVELS, 2), key=lambda pair: sum(
        f"derived:{th[level][1]}" in origin for level in pair))
    for lower, upper in pairs:
        (a, a_at), (b, b_at) = th[lower], th[upper]
        if a.percent is not None and b.percent is not None:
            wrong = a.percent >= b.percent
        else:
            va, vb = a.resolve(limit), b.resolve(limit)
            wrong = va is not None and vb is not None and va >= vb
        if wrong:
            given = (b_at.split(".")[0].split("[")[0] in origin or "[" in b_at) \
                and f"derived:{b_at}" not in origin
            if given:
                blamed, what = b_at, f"{upper} {b} is not above {lower} {a} "
                other = a_at
            else:
                blamed, what = a_at, f"{lower} {a} is not below {upper} {b} "
                other = b_at
            raise fail(blamed, f"expected medium < high < critical, but {what}"
                       f"({_source(other, origin)})")


def _source(path: str, origin: Mapping[str, str]) -> str:
    text = label(path, origin)
    return "the default" if text.endswith(" (default)") else text





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


__all__ = [
    "LIMIT_NAMES",
    "MEDIUM_SIGNALS",
    "against_limit",
    "check",
    "derive",
    "limits_problem",
    "limits_refused",
    "parse_address",
    "signal_problem",
]
