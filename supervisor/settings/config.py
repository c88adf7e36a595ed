"""Configuration: one typed schema, read from defaults < TOML file < environment < command line.

Validation happens once, here, at the edge. Errors are `ConfigError` carrying the field's
name as the user wrote it (`--high`, `MEMWARDEN_HIGH`, `high` in the file) and the
accepted form; only the command line turns them into exit status 2.
"""

from __future__ import annotations

import os
import shlex
import stat
import tomllib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from supervisor.core.units import (
    DURATION_FORM,
    RATE_FORM,
    SIZE_FORM,
    Size,
    parse_duration,
    parse_rate,
    parse_size,
)
from workers.protocol import Limits, escape


class Duration(float):
    """Seconds, written as `1ms`, `250us`, `5s`."""


class Rate(float):
    """Bytes per second, written as `5MB/s`."""


Restart = Literal["never", "on-failure", "always"]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


def _size(text: str) -> Any:
    return msgspec.field(default_factory=lambda: parse_size(text))


class ProfileLimits(Limits, forbid_unknown_fields=True, frozen=True):
    """A profile's limits as the configuration takes them: strict about unknown keys like
    every other table (`max_object = 10`, a typo, was silently ignored). The wire's `Limits`
    stays lenient, so that a worker ignores a field newer than itself."""


class Profiles(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Limits per profile; a generation started under HIGH pressure runs with `high`."""

    normal: ProfileLimits = ProfileLimits()
    high: ProfileLimits = ProfileLimits(
        max_objects=1000, max_history=250, gc_interval_s=3.0, trim_interval_s=7.0
    )
    critical: ProfileLimits = ProfileLimits(
        max_objects=500, max_history=100, gc_interval_s=2.0, trim_interval_s=5.0
    )


class Pressure(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Classifier inputs beyond the size thresholds (`medium`, `high`, `critical` at top level)."""

    growth_medium: Rate = Rate(5e6)
    growth_high: Rate = Rate(10e6)
    growth_window: Duration = Duration(5.0)
    headroom_medium: Fraction = 0.25
    headroom_high: Fraction = 0.10
    headroom_reserve: Size = _size("5%")
    exhaustion_high: Duration = Duration(10.0)
    exhaustion_critical: Duration = Duration(2.0)
    confirm: PositiveInt = 3
    margin: Fraction = 0.05
    dwell_medium: Duration = Duration(30.0)
    dwell_high: Duration = Duration(5.0)
    dwell_critical: Duration = Duration(1.0)


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One `[[worker]]` entry; unset fields inherit the top-level values."""

    name: str
    command: list[str]
    replicas: PositiveInt = 1
    cwd: str | None = None
    env: dict[str, str] = {}
    restart: Restart | None = None
    medium: Size | None = None
    high: Size | None = None
    critical: Size | None = None
    medium_signal: str | None = None
    ready_after: Duration | None = None
    ready_tcp: str | None = None
    ready_http: str | None = None
    ready_exec: str | None = None
    ready_file: str | None = None
    listen: list[str] | None = None
    grace: Duration | None = None
    profiles: Profiles | None = None


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything `memwarden run` takes. Field names are the option names with `_` for `-`."""

    interval: Duration = Duration(0.001)
    discover_interval: Duration = Duration(0.1)
    ring: Duration = Duration(60.0)
    medium: Size = _size("50MB")
    high: Size = _size("200MB")
    critical: Size = _size("500MB")
    limit: Size | None = None
    cooldown: Duration = Duration(5.0)
    cooldown_max: Duration = Duration(300.0)
    on_baseline_high: Literal["continue", "exit"] = "continue"
    grace: Duration = Duration(10.0)
    critical_grace: Duration = Duration(2.0)
    restart: Restart = "never"
    restart_budget: PositiveInt = 5
    restart_window: Duration = Duration(60.0)
    backoff_initial: Duration = Duration(0.5)
    backoff_max: Duration = Duration(30.0)
    ready_after: Duration = Duration(1.0)
    ready_timeout: Duration = Duration(30.0)
    ready_tcp: str | None = None
    ready_http: str | None = None
    ready_exec: str | None = None
    ready_file: str | None = None
    listen: list[str] = []
    baseline_generations: PositiveInt = 3
    medium_signal: str | None = None
    investigate_on_retire: bool = False
    oom_score_adj: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = 500
    own_oom_score_adj: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = -1000
    subreaper: bool = True
    realtime: bool = False
    measure: Literal["auto", "cgroup", "pss", "rss"] = "auto"
    dry_run: bool = False
    snapshots: str | None = "memwarden-snapshots"
    snapshot_file_size: Size = _size("64MiB")
    snapshot_files: int = 8
    snapshot_max_age: Duration = Duration(7 * 86400.0)
    sample_period: Duration = Duration(1.0)
    metrics: str | None = None
    control: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    pressure: Pressure = msgspec.field(default_factory=Pressure)
    profiles: Profiles = msgspec.field(default_factory=Profiles)
    worker: list[WorkerConfig] = []
    command: list[str] = []


#: A configuration file larger than this is not one (memwarden's own is a few KiB).
MAX_FILE = 1 << 20


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and the accepted form."""


_FORMS: dict[type, tuple[Any, str]] = {
    Size: (parse_size, SIZE_FORM),
    Duration: (lambda v: Duration(parse_duration(v)), DURATION_FORM),
    Rate: (lambda v: Rate(parse_rate(v)), RATE_FORM),
}


def _dec_hook(type_: type, value: Any) -> Any:
    parse = _FORMS.get(type_)
    if parse is None:
        raise NotImplementedError
    try:
        return parse[0](value)
    except (TypeError, OverflowError):  # msgspec reports ValueError only, with the path
        raise ValueError(f"expected {parse[1]}") from None


def enc_hook(obj: Any) -> Any:
    """Encode the config's own types for records meant for people (the snapshot header)."""
    if isinstance(obj, Size):  # exact, so that a recorded config reads back as it was
        return str(obj)
    if isinstance(obj, Duration | Rate):
        return float(obj)
    raise NotImplementedError(type(obj))


#: Settings of the `[pressure]` table that the command line and the environment also take at
#: the top level (`--growth-high 20MB/s`, `MEMWARDEN_GROWTH_HIGH`).
NESTED = {"growth_medium": "pressure", "growth_high": "pressure", "growth_window": "pressure"}

#: Top-level fields that are plain strings in the environment but typed otherwise.
_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def from_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    fields = {**_top_level_fields(), **dict.fromkeys(NESTED, str)}
    for name, field_type in fields.items():
        key = "MEMWARDEN_" + name.upper()
        if key not in environ or name in ("worker", "pressure", "profiles"):
            continue
        raw = environ[key]
        if field_type is bool:
            low = raw.strip().lower()
            if low not in _BOOL_TRUE | _BOOL_FALSE:
                raise ConfigError(f"{key}: expected true or false, got {raw!r}")
            values[name] = low in _BOOL_TRUE
        elif name == "listen":  # several addresses: separated by spaces
            values[name] = raw.split()
        elif name == "command":
            try:
                values[name] = shlex.split(raw)
            except ValueError as e:  # an unbalanced quote
                raise ConfigError(f"{key}: expected a command line as a shell would split "
                                  f"it, got {e}") from None
        elif field_type is int:
            try:
                values[name] = int(raw)
            except ValueError:
                raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
        else:
            values[name] = raw
        origin[name] = key
    return values, origin


def _top_level_fields() -> dict[str, Any]:
    hints = {f.name: f.type for f in msgspec.structs.fields(Config)}
    return {name: (int if t == PositiveInt or name.endswith("oom_score_adj") else t)
            for name, t in hints.items()}


def read_file(path: str, source: str = "--config") -> dict[str, Any]:
    """Return the TOML file's table; raise ConfigError (naming `source`, the option or the
    variable that gave the path) when unreadable, not a regular file or not TOML."""
    where = f"{source} {_printable(path)}"
    try:
        # O_NONBLOCK: opening a FIFO for reading blocks until a writer comes (memwarden hung
        # forever on `--config fifo`); a device or a socket is no configuration either.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        with open(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigError(f"{where}: not a regular file "
                                  f"({_KINDS.get(stat.S_IFMT(mode), 'not a file')}); "
                                  "expected a TOML file")
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise ConfigError(f"{where}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE:
        raise ConfigError(f"{where}: larger than {MAX_FILE // 1024} KiB; "
                          "not a memwarden configuration")
    try:
        return tomllib.loads(data.decode())
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a memwarden "
                          "configuration") from None


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def _printable(text: str) -> str:
    """A path as one line of an error shows it: control characters escaped."""
    return escape(text, 300)


def convert(values: Mapping[str, Any], origin: Mapping[str, str] | None = None) -> Config:
    """Validate a plain mapping into a Config, field by field (types, units, finite
    numbers); raise ConfigError naming the field. `load` adds the checks across fields."""
    try:
        return msgspec.convert(dict(values), Config, dec_hook=_dec_hook, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(_explain(str(e), origin or {})) from None
    except RecursionError:
        raise ConfigError("configuration nested too deeply to be a memwarden "
                          "configuration") from None


def label(path: str, origin: Mapping[str, str]) -> str:
    """How an error names the setting at `path` (`high`, `worker[0].high`): as its source
    spells it (`--high`, `MEMWARDEN_HIGH`, `worker[0].high (in m.toml)`), or `high (default)`."""
    derived = origin.get(f"derived:{path}")
    if derived is not None:  # left unset, and following others (`validate.derive`)
        return f"{path} (derived from {derived})"
    top = path.split(".")[0].split("[")[0]
    leaf = path.rpartition(".")[2]
    if leaf in NESTED and path == f"{NESTED[leaf]}.{leaf}" and leaf in origin:
        return origin[leaf]  # given at the top level: `--growth-high`, MEMWARDEN_GROWTH_HIGH
    given = origin.get(top)
    if given is None:
        return f"{path} (default)"
    if path == top:
        return given
    return f"{path}{given[given.index(' (in '):]}" if " (in " in given else path


def _explain(message: str, origin: Mapping[str, str]) -> str:
    # msgspec says "<what> - at `$.high`" or "Object contains unknown field `x` - at `$`".
    what, _, where = message.rpartition(" - at ")
    if not what:
        what, where = message, "`$`"
    path = where.strip("`").removeprefix("$").lstrip(".")
    if what.startswith("Object contains unknown field"):
        unknown = what.split("`")[1]
        full = f"{path}.{unknown}" if path else unknown
        top = full.split(".")[0].split("[")[0]
        where = origin.get(top, "")
        where = where[where.index(" (in "):] if " (in " in where else ""
        return (f"unknown setting {full!r}{where}: not a memwarden option "
                "(see `memwarden run --help`)")
    name = label(path, origin).removesuffix(" (default)")
    if what.startswith("Invalid enum value"):
        allowed = CHOICES.get(path.split(".")[-1].split("[")[0])
        if allowed:
            what = f"expected one of {', '.join(allowed)}, got {what.split(' ', 3)[-1]}"
    return f"{name}: {_lower_first(what)}"


#: The values of the settings that take one of a few words (also what shell completion offers).
CHOICES = {"restart": ("never", "on-failure", "always"),
           "on_baseline_high": ("continue", "exit"),
           "measure": ("auto", "cgroup", "pss", "rss"),
           "log_level": ("debug", "info", "warning", "error"),
           "log_format": ("text", "json")}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text


__all__ = [
    "CHOICES",
    "Config",
    "ConfigError",
    "Duration",
    "Pressure",
    "Profiles",
    "Rate",
    "WorkerConfig",
    "enc_hook",
    "label",
]
