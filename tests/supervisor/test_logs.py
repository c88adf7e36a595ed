"""memwarden's log: one logger hierarchy, text for people, JSON lines for a pipeline."""

from __future__ import annotations

import ast
import datetime
import json
import logging
import pathlib
import signal
import subprocess
import sys

from supervisor.loop.events import EventLog, JsonFormatter, TextFormatter
from tests.conftest import ROOT, python, wait_until


def test_every_logger_is_memwarden_dot_its_module() -> None:
    # A logger outside `memwarden.` is never configured: its messages (the refused
    # --realtime among them) would be lost or printed without the prefix.
    seen = 0
    for package in ("supervisor", "snapshots"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = path.stem if package == "supervisor" else f"snapshots.{path.stem}"
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "getLogger":
                    assert len(node.args) == 1 and isinstance(node.args[0], ast.Constant), \
                        f"{path}: getLogger with a computed name"
                    name = node.args[0].value
                    # events.py configures the hierarchy's root; every other module logs
                    # under its own name, wherever it sits.
                    root = "memwarden" if path.stem == "events" else None
                    assert name in (f"memwarden.{module}", root), f"{path}: {name}"
                    seen += 1
    assert seen >= 15


def _record(level: int, message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("memwarden.arbiter", level, __file__, 1, "%s", (message,), None)
    record.__dict__.update(extra)
    return record


def test_text_keeps_its_look_and_names_warnings_and_errors() -> None:
    text = TextFormatter()
    assert text.format(_record(logging.INFO, "ready", worker="web", generation=2, pid=7)) == \
        "memwarden: [web gen 2 pid 7] ready"
    assert text.format(_record(logging.INFO, "metrics on ...")) == "memwarden: metrics on ..."
    assert text.format(_record(logging.WARNING, "slow", worker="web")) == \
        "memwarden: warning: [web] slow"
    assert text.format(_record(logging.ERROR, "gave up")) == "memwarden: error: gave up"


def test_json_is_one_object_per_line_even_for_a_multiline_message() -> None:
    line = JsonFormatter().format(_record(logging.WARNING, "two\nlines", worker="web",
                                          generation=3, pid=9, event="kill"))
    assert "\n" not in line
    got = json.loads(line)
    assert got["level"] == "warning" and got["logger"] == "memwarden.arbiter"
    assert got["message"] == "two\nlines" and got["event"] == "kill"
    assert (got["worker"], got["generation"], got["pid"]) == ("web", 3, 9)
    assert datetime.datetime.fromisoformat(got["time"]).tzinfo is not None


def test_events_carry_worker_and_generation_to_the_log(caplog) -> None:
    events = EventLog()
    with caplog.at_level(logging.INFO, logger="memwarden.events"):
        events.emit("ready", "ready after 1s", worker="web", generation=2, pid=11)
    record = caplog.records[-1]
    assert record.name == "memwarden.events" and record.getMessage() == "ready after 1s"
    assert (record.worker, record.generation, record.pid, record.event) == (  # type: ignore[attr-defined]
        "web", 2, 11, "ready")


def test_a_run_with_json_logs_parses_line_by_line(memwarden, tmp_path) -> None:
    ready = tmp_path / "ready"
    # 500MB by default is above a 300MB limit: a warning, before the workers start.
    m = memwarden("run", "--log-format", "json", "--limit", "300MB", "--ready-after", "0.1s",
                  "--snapshots", "", "--control", "", "--", *python(
                      f"import time; open({str(ready)!r}, 'w').close(); time.sleep(600)"))
    wait_until(lambda: '"event":"ready"' in m.stderr(), what="the ready event in the log")
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    lines = [json.loads(line) for line in m.stderr().splitlines()]
    assert lines and all(line["logger"].startswith("memwarden.") for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    warning = next(line for line in lines if line["level"] == "warning")
    assert "above the memory limit" in warning["message"]
    started = next(line for line in lines if line.get("event") == "start")
    assert (started["worker"], started["generation"]) == ("worker", 1)
    assert started["pid"] > 0 and started["logger"] == "memwarden.events"
    assert any(line.get("event") == "exit" for line in lines)
    assert lines[-1]["message"].startswith("exiting with status 143")


def test_text_logs_name_the_level_of_a_warning(memwarden) -> None:
    m = memwarden("run", "--limit", "300MB", "--snapshots", "", "--control", "", "--",
                  "sleep", "600")
    wait_until(lambda: "started sleep 600" in m.stderr(), what="the start in the log")
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    assert "memwarden: warning: critical (default): 500MB is above the memory limit" in \
        m.stderr()
    assert "memwarden: [worker gen 1 pid " in m.stderr()


def test_a_config_error_is_one_plain_line_in_either_format() -> None:
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", "--log-format", "json",
                        "--metrics", "no-port", "--", "true"], capture_output=True, text=True,
                       timeout=30, cwd=pathlib.Path(ROOT))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("memwarden: --metrics: expected HOST:PORT")
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", "--log-format", "xml",
                        "--", "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == ("memwarden: --log-format: expected one of text, json, got "
                                "'xml'")
