"""Configuration: precedence, units, and errors that name the field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from supervisor import config
from supervisor.units import Size, parse_duration, parse_rate, parse_size


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
    cfg = config.load({"high": "180MB"}, environ=env, file=str(f))
    assert cfg.high == Size(bytes=180_000_000)
    assert cfg.cooldown == 3.0
    assert cfg.medium == Size(bytes=10_000_000)
    assert cfg.interval == 0.001


def test_workers_from_file(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text(
        '[[worker]]\nname = "a"\ncommand = ["sleep", "1"]\nreplicas = 2\nhigh = "1GB"\ncritical = "2GB"\n'
        "[profiles.high]\nmax_objects = 10\n"
    )
    cfg = config.load({}, environ={}, file=str(f))
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
        config.load(cli, environ=env, file=str(f))
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
