"""Configuration: precedence, units, and errors that name the field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from supervisor.core.units import Size, parse_duration, parse_rate, parse_size
from supervisor.settings import config, loading


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200MB", Size(bytes=200_000_000)),
        ("1.5GiB", Size(bytes=int(1.5 * 2**30))),
        ("512k", Size(bytes=512 * 1024)),
        ("80%", Size(percent=80.0)),
        ("1048576B", Size(bytes=1048576)),
    ],
)
def test_sizes(text: str | int, expected: Size) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1ms", 0.001), ("250us", 0.00025), ("5s", 5.0), ("2min", 120.0), (3, 3.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_rates() -> None:
    assert parse_rate("5MB/s") == 5e6
    assert parse_rate("60MB/min") == pytest.approx(1e6)


def test_percent_resolves_against_the_limit() -> None:
    assert parse_size("50%").resolve(1000) == 500
    assert parse_size("50%").resolve(None) is None


def test_precedence_cli_over_env_over_file(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('high = "100MB"\nmedium = "10MB"\ncooldown = "9s"\n')
    env = {"MEMWARDEN_HIGH": "150MB", "MEMWARDEN_COOLDOWN": "3s"}
    cfg = loading.load({"high": "180MB"}, environ=env, file=str(f))
    assert cfg.high == Size(bytes=180_000_000)
    assert cfg.cooldown == 3.0
    assert cfg.medium == Size(bytes=10_000_000)
    assert cfg.interval == 0.001


def test_workers_from_file(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text(
        '[[worker]]\nname = "a"\ncommand = ["sleep", "1"]\nreplicas = 2\nhigh = "1GB"\n'
        'critical = "2GB"\n'
        "[profiles.high]\nmax_objects = 10\n"
    )
    cfg = loading.load({}, environ={}, file=str(f))
    assert cfg.worker[0].replicas == 2
    assert cfg.profiles.high.max_objects == 10


@pytest.mark.parametrize(
    ("cli", "env", "toml", "needle"),
    [
        ({"high": "lots"}, {}, "", "--high: expected a size"),
        ({"interval": "5 parsecs"}, {}, "", "--interval: expected a duration"),
        ({"restart": "sometimes"}, {}, "", "--restart: expected one of never, on-failure, always"),
        ({}, {"MEMWARDEN_GRACE": "soon"}, "", "MEMWARDEN_GRACE: expected a duration"),
        ({}, {"MEMWARDEN_DRY_RUN": "maybe"}, "", "MEMWARDEN_DRY_RUN: expected true or false"),
        ({}, {}, 'hihg = "1MB"\n', "unknown setting 'hihg'"),
        ({}, {}, "[pressure]\nconfirm = 0\n", "pressure.confirm"),
        ({}, {}, '[[worker]]\nname = "a"\ncommand = ["x"]\nbogus = 1\n', "worker[0].bogus"),
    ],
)
def test_errors_name_the_field(tmp_path, cli, env, toml, needle) -> None:
    f = tmp_path / "m.toml"
    f.write_text(toml)
    with pytest.raises(config.ConfigError) as info:
        loading.load(cli, environ=env, file=str(f))
    assert needle in str(info.value)


def _memwarden(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args], capture_output=True, text=True,
        timeout=60, env=env,
    )


def test_bad_value_exits_2_with_one_line() -> None:
    r = _memwarden("run", "--high", "lots", "--", "true")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--high" in lines[0] and "200MB" in lines[0]


def test_unknown_key_in_file_exits_2(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('highh = "1MB"\n')
    r = _memwarden("run", "--config", str(f), "--", "true")
    assert r.returncode == 2
    assert "highh" in r.stderr


def test_unreadable_config_exits_2(tmp_path) -> None:
    r = _memwarden("run", "--config", str(tmp_path / "missing.toml"), "--", "true")
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_no_command_exits_2() -> None:
    r = _memwarden("run")
    assert r.returncode == 2 and "no command given" in r.stderr


def test_help_lists_every_option_with_its_default() -> None:
    r = _memwarden("run", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for option in ("--interval", "--medium", "--high", "--critical", "--limit", "--cooldown",
                   "--grace", "--restart", "--snapshots", "--medium-signal", "--ready-after",
                   "--dry-run", "--metrics", "--config"):
        assert option in text
    assert "(default: 1ms)" in text and "(default: 10s)" in text and "(default: never)" in text


def test_version() -> None:
    r = _memwarden("--version")
    assert r.returncode == 0 and r.stdout.startswith("memwarden ")


# -- every bad value is one line naming the field, its source and the accepted form ----------

NESTED = "x = " + "[" * 5000 + "]" * 5000 + "\n"


@pytest.mark.parametrize(
    ("cli", "env", "toml", "needle"),
    [
        ({"interval": "0"}, {}, "", "--interval: expected a duration from 100us to 1min"),
        ({"interval": "0.0000001ns"}, {}, "", "--interval: expected a duration from 100us"),
        ({"interval": "10000000h"}, {}, "", "--interval: expected a duration"),
        ({"ring": "0"}, {}, "", "--ring: expected a duration from 1s to 1d"),
        ({"ready_timeout": "0"}, {}, "", "--ready-timeout: expected a duration from 10ms"),
        ({"high": "80"}, {}, "", "--high: expected a size with its unit"),
        ({"high": "1" * 400 + "MB"}, {}, "", "--high: expected a size of at most 1PiB"),
        ({}, {"MEMWARDEN_HIGH": "80"}, "", "MEMWARDEN_HIGH: expected a size with its unit"),
        ({}, {}, "high = 80\n", "high (in "),
        ({}, {}, "grace = nan\n", "grace (in "),
        ({}, {}, "cooldown = inf\n", "cooldown (in "),
        ({}, {}, "grace = 1e309\n", "grace (in "),
        ({}, {}, "backoff_max = nan\n", "backoff_max (in "),
        ({}, {}, "[pressure]\nmargin = nan\n", "pressure.margin (in "),
        ({"medium": "300MB", "high": "200MB"}, {}, "",
         "--high: expected medium < high < critical, but high 200MB is not above medium 300MB"),
        ({"medium": "300MB", "critical": "200MB"}, {}, "",
         "--critical: expected medium < high < critical, but critical 200MB is not above "
         "medium 300MB (--medium)"),
        ({"medium_signal": "KILL"}, {}, "", "--medium-signal: SIGKILL cannot be caught"),
        ({"medium_signal": "TERM"}, {}, "", "--medium-signal: SIGTERM asks a process to end"),
        ({"limit": "50%"}, {}, "", "--limit: expected a size such as 512MB"),
        ({"control": "/x" * 60}, {}, "", "--control: expected a socket path of at most 107"),
        ({}, {"MEMWARDEN_COMMAND": "python3 'unclosed"}, "", "MEMWARDEN_COMMAND: expected a"),
        ({}, {}, '[[worker]]\nname = "a"\ncommand = []\n', "worker[0].command (in "),
        ({}, {}, '[[worker]]\nname = "a"\ncommand = ["x"]\nreplicas = 100000000\n',
         "worker[0].replicas (in "),
        ({}, {}, '[[worker]]\nname = "a"\ncommand = ["x"]\n[[worker]]\nname = "a"\n'
         'command = ["y"]\n', "worker[1].name (in "),
        ({}, {}, '[[worker]]\nname = "a b"\ncommand = ["x"]\n', "worker[0].name (in "),
        ({}, {}, '[[worker]]\nname = "a"\ncommand = ["x"]\nenv = {"A\\u0000B" = "1"}\n',
         "worker[0].env (in "),
        ({}, {}, '[[worker]]\nname = "a"\ncommand = ["x\\u0000"]\n', "worker[0].command"),
        ({}, {}, '[[worker]]\nname = "a"\ncommand = ["x"]\nhigh = "600MB"\ncritical = "550MB"\n',
         "worker[0].critical (in "),
        ({}, {}, NESTED, "nested too deeply"),
        ({}, {}, "[profiles.high]\ngc_interval_s = inf\n", "profiles.high.gc_interval_s"),
        ({"ring": "1h"}, {}, "", "--ring: 1 worker(s) with 1h at 1ms"),
        ({"ready_after": "40s"}, {}, "", "--ready-after: expected less than ready_timeout"),
        ({"backoff_initial": "2min", "backoff_max": "1min"}, {}, "",
         "--backoff-max: expected more than backoff_initial (2min)"),
    ],
)
def test_bad_values_name_field_source_and_form(tmp_path, cli, env, toml, needle) -> None:
    f = tmp_path / "m.toml"
    f.write_text(toml)
    cli = {"command": ["true"], **cli} if "worker" not in toml else cli
    with pytest.raises(config.ConfigError) as info:
        loading.load(cli, environ=env, file=str(f))
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_off_turns_a_threshold_off_and_leaves_the_order_to_the_others() -> None:
    cfg = loading.load({"medium": "off", "high": "60MB", "critical": "off", "command": ["x"]},
                      environ={})
    assert cfg.medium.resolve(10**9) is None and cfg.high.resolve(None) == 60_000_000
    assert str(cfg.critical) == "off"


def test_percentages_need_a_known_limit_and_thresholds_fit_under_it() -> None:
    from supervisor.settings import validate

    cfg, origin = loading.load_with_origin({"high": "80%", "critical": "95%", "command": ["x"]},
                                          environ={})
    with pytest.raises(config.ConfigError, match=r"--high: 80% is a share of the memory limit"):
        validate.against_limit(cfg, origin, None)
    assert not validate.against_limit(cfg, origin, 1_000_000_000)
    cfg, origin = loading.load_with_origin({"command": ["x"]}, environ={})
    assert validate.against_limit(cfg, origin, 300_000_000)  # default critical: a warning
    cfg, origin = loading.load_with_origin({"critical": "2GB", "command": ["x"]}, environ={})
    with pytest.raises(config.ConfigError, match=r"--critical: 2GB is above the memory limit"):
        validate.against_limit(cfg, origin, 1_000_000_000)
    cfg, origin = loading.load_with_origin({"medium": "10%", "high": "100MB", "command": ["x"]},
                                          environ={})
    with pytest.raises(config.ConfigError, match="medium < high < critical"):
        validate.against_limit(cfg, origin, 2_000_000_000)  # 200MB is not below 100MB


@pytest.mark.parametrize(
    "args",
    [["--interval", "0"], ["--ring", "0"], ["--ready-timeout", "0"], ["--high", "80"],
     ["--interval", "10000000h"], ["--medium-signal", "KILL"], ["--metrics", "10.255.255.1:9"],
     ["--metrics", "no-port"], ["--medium", "300MB", "--high", "200MB"],
     ["--snapshot-file-size", "10kB"], ["--snapshot-file-size", "50%"],
     ["--snapshot-files", "0"], ["--snapshot-max-age", "10s"], ["--log-format", "yaml"]],
)
def test_the_command_line_exits_2_with_one_line(args) -> None:
    r = _memwarden("run", "--snapshots", "", *args, "--", "true")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memwarden: --"), r.stderr
    assert "Traceback" not in r.stderr


def test_a_busy_metrics_port_exits_2_before_any_worker_starts(tmp_path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        marker = tmp_path / "ran"
        r = _memwarden("run", "--snapshots", "", "--metrics", f"127.0.0.1:{port}", "--",
                       "touch", str(marker))
    assert r.returncode == 2 and "the address is in use" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not marker.exists()


def test_a_default_threshold_above_the_limit_is_a_warning(tmp_path) -> None:
    r = _memwarden("run", "--snapshots", "", "--control", "", "--limit", "300MB", "--",
                   sys.executable, "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert "critical (default): 500MB is above the memory limit (300MB)" in r.stderr


def test_snapshot_retention_comes_from_every_source(tmp_path) -> None:
    defaults = loading.load({"command": ["x"]}, environ={})
    assert (defaults.snapshot_file_size.bytes, defaults.snapshot_files,
            float(defaults.snapshot_max_age)) == (64 * 2**20, 8, 7 * 86400.0)
    toml = tmp_path / "m.toml"
    toml.write_text('snapshot_file_size = "16MiB"\nsnapshot_files = 3\n'
                    'snapshot_max_age = "2d"\n')
    cfg = loading.load({"command": ["x"]}, environ={}, file=str(toml))
    assert (cfg.snapshot_file_size.bytes, cfg.snapshot_files, float(cfg.snapshot_max_age)) == (
        16 * 2**20, 3, 2 * 86400.0)
    cfg = loading.load({"command": ["x"], "snapshot_files": "5"}, file=str(toml), environ={
        "MEMWARDEN_SNAPSHOT_FILE_SIZE": "1GiB", "MEMWARDEN_SNAPSHOT_MAX_AGE": "12h",
        "MEMWARDEN_SNAPSHOT_FILES": "4"})
    assert (cfg.snapshot_file_size.bytes, cfg.snapshot_files, float(cfg.snapshot_max_age)) == (
        2**30, 5, 12 * 3600.0)
    for environ, text in (
            ({"MEMWARDEN_SNAPSHOT_FILES": "0"}, "MEMWARDEN_SNAPSHOT_FILES: expected an "
             "integer from 1 to 10000, got 0"),
            ({"MEMWARDEN_SNAPSHOT_MAX_AGE": "31d"}, "MEMWARDEN_SNAPSHOT_MAX_AGE: expected a "
             "duration such as"),
            ({"MEMWARDEN_SNAPSHOT_FILE_SIZE": "100TB"}, "MEMWARDEN_SNAPSHOT_FILE_SIZE: "
             "expected a size from 64KiB to 64GiB such as 64MiB, got 100000GB")):
        with pytest.raises(config.ConfigError) as e:
            loading.load({"command": ["x"]}, environ=environ)
        assert str(e.value).startswith(text), str(e.value)
    toml.write_text('snapshot_files = 100000\n')
    with pytest.raises(config.ConfigError, match=r"^snapshot_files \(in .*m.toml\): expected an "
                       "integer from 1 to 10000"):
        loading.load({"command": ["x"]}, environ={}, file=str(toml))


def test_the_snapshot_writer_gets_the_retention_settings(tmp_path) -> None:
    from supervisor import app
    from supervisor.loop.events import EventLog

    cfg = loading.load({"command": ["x"], "measure": "rss", "snapshots": str(tmp_path / "s"),
                       "snapshot_file_size": "1MiB", "snapshot_files": "2",
                       "snapshot_max_age": "1h"}, environ={})
    writer = app.open_writer(app.build(app.assemble(cfg), EventLog()))
    try:
        assert (writer.max_bytes, writer.keep, writer.max_age_s) == (2**20, 2, 3600.0)
    finally:
        writer.close()


# -- settings parsed right (issue 21) --------------------------------------------------------

@pytest.mark.parametrize(("given", "recorded"), [
    ("1MB/2s", 500_000.0), ("10MB/10s", 1_000_000.0), ("300MB/min", 5_000_000.0)])
def test_a_rate_is_recorded_over_its_whole_period(given: str, recorded: float) -> None:
    cfg = loading.load({"growth_medium": given, "growth_high": "100MB/s", "command": ["x"]},
                       environ={})
    assert cfg.pressure.growth_medium == recorded


def test_a_rate_over_no_time_is_refused() -> None:
    with pytest.raises(config.ConfigError, match=r"--growth-medium: .*period above 0"):
        loading.load({"growth_medium": "5MB/0s", "command": ["x"]}, environ={})


def test_the_smallest_interval_is_accepted() -> None:
    assert loading.load({"interval": "100us", "command": ["x"]}, environ={}).interval == 1e-4


@pytest.mark.parametrize(("given", "expected"), [
    # (set by the user) -> (medium, high, critical) after the documented rule
    ({"high": "700MB"}, ("50MB", "700MB", "1750MB")),
    ({"high": "100MB"}, ("25MB", "100MB", "500MB")),
    ({"critical": "100MB"}, ("10MB", "40MB", "100MB")),
    ({"medium": "300MB"}, ("300MB", "1200MB", "3GB")),
    ({"medium": "100MB", "critical": "2GB"}, ("100MB", "400MB", "2GB")),
    ({"high": "70%"}, ("17.5%", "70%", "100%")),
    ({"high": "80%", "critical": "95%"}, ("20%", "80%", "95%")),
    ({"medium": "off", "high": "2GB"}, ("off", "2GB", "5GB")),
])
def test_unset_thresholds_follow_the_set_ones(given, expected) -> None:
    cfg, origin = loading.load_with_origin({**given, "command": ["x"]}, environ={})
    assert (str(cfg.medium), str(cfg.high), str(cfg.critical)) == expected
    for name in set(("medium", "high", "critical")) - set(given):
        assert config.label(name, origin).startswith(f"{name} (derived from --")


def test_growth_high_follows_growth_medium_and_back() -> None:
    cfg = loading.load({"growth_medium": "200MB/s", "command": ["x"]}, environ={})
    assert (cfg.pressure.growth_medium, cfg.pressure.growth_high) == (200e6, 400e6)
    cfg = loading.load({"growth_high": "4MB/s", "command": ["x"]}, environ={})
    assert (cfg.pressure.growth_medium, cfg.pressure.growth_high) == (2e6, 4e6)


def test_a_workers_own_threshold_takes_the_others_with_it(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('[[worker]]\nname = "a"\ncommand = ["x"]\nhigh = "600MB"\n'
                 '[[worker]]\nname = "b"\ncommand = ["x"]\n')
    cfg, origin = loading.load_with_origin({}, environ={}, file=str(f))
    a, b = cfg.worker
    assert (str(a.medium), str(a.critical)) == ("50MB", "1500MB")
    assert (b.medium, b.high, b.critical) == (None, None, None)  # the top level's defaults
    assert config.label("worker[0].critical", origin).startswith(
        "worker[0].critical (derived from worker[0].high")


def test_a_derived_threshold_above_the_limit_is_a_warning_not_an_error() -> None:
    from supervisor.settings import validate

    cfg, origin = loading.load_with_origin({"high": "700MB", "command": ["x"]}, environ={})
    warnings = validate.against_limit(cfg, origin, 1_000_000_000)
    assert warnings and "critical (derived from --high)" in warnings[0]


@pytest.mark.parametrize("table", ["profiles.high", "profiles.normal", "profiles.critical"])
def test_an_unknown_key_in_a_profile_is_refused(tmp_path, table: str) -> None:
    f = tmp_path / "m.toml"
    f.write_text(f"[{table}]\nmax_object = 10\n")
    with pytest.raises(config.ConfigError, match=rf"unknown setting '{table}.max_object'"):
        loading.load({"command": ["x"]}, environ={}, file=str(f))
    f.write_text(f'[[worker]]\nname = "a"\ncommand = ["x"]\n[worker.{table}]\nmax_object = 1\n')
    with pytest.raises(config.ConfigError, match=rf"unknown setting 'worker\[0\].{table}"):
        loading.load({}, environ={}, file=str(f))


@pytest.mark.parametrize("via", ["--config", "MEMWARDEN_CONFIG"])
def test_a_fifo_as_configuration_is_refused_at_once(tmp_path, via: str) -> None:
    import os

    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    env = {**os.environ, "MEMWARDEN_CONFIG": str(fifo)} if via != "--config" else None
    args = ["--config", str(fifo)] if via == "--config" else []
    r = _memwarden("run", *args, "--snapshots", "", "--", "true", env=env)  # timeout: 60 s
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"memwarden: {via} {fifo}: not a regular file (a FIFO); expected a TOML file"]


@pytest.mark.parametrize("name", ["api\n", "api\nmemwarden: [db gen 1 pid 1] FORGED", "a\x1b[2J",
                                  "a\u2028b", "a\x00", "ä"])
def test_a_worker_name_is_of_the_safe_characters_only(tmp_path, name: str) -> None:
    import json

    f = tmp_path / "m.toml"
    f.write_text(f'[[worker]]\nname = {json.dumps(name)}\ncommand = ["x"]\n')
    with pytest.raises(config.ConfigError, match=r"worker\[0\]\.name") as info:
        loading.load({}, environ={}, file=str(f))
    assert str(info.value).isprintable()
