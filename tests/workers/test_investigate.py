"""The leak investigator: type growth between two points, and its command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers.conftest import ROOT
from workers.investigate import Investigator, duplicate_ids, growth, largest_containers

pytestmark = pytest.mark.timeout(60)


class Leaked:
    """A type only this test makes, so its growth is unambiguous."""


def test_growth_between_two_reports_names_the_growing_type() -> None:
    inv = Investigator()
    first = inv.report("1", top=5)
    held = [Leaked() for _ in range(5000)]
    big = list(range(100_000))
    second = inv.report("2", top=5, state_files=[])
    name = f"{__name__}.Leaked"
    assert second.growth.get(name, 0) >= 5000, second.growth
    assert first.ms > 0 and second.ms > 0
    assert second.largest[0]["len"] >= len(big)
    assert second.objects > 5000 and second.blocks > 0 and second.rss > 0
    assert second.objects_per_mb and second.objects_per_mb > 0
    del held, big


def test_growth_and_largest_containers_functions() -> None:
    assert growth({"a": 5, "b": 1}, {"a": 7, "b": 1, "c": 9}, top=1) == {"c": 9}
    found = largest_containers([[1, 2, 3], {"k": 1}, "not a container", (1, 2)], top=2)
    assert [(c["type"], c["len"]) for c in found] == [("list", 3), ("tuple", 2)]


def test_duplicates_over_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"id":1}\n{"id":2}\n{"id":1}\n{"id":2,"_rev":1}\n'
                    '{"id":3}\n{"id":3,"_deleted":true}\n{"id":3}\nbad\n{"id":4')
    dups, malformed, lines, torn = duplicate_ids(str(path))
    assert dups == ["1"] and malformed == 1 and lines == 9 and torn


def test_command_line_text_report_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "automaton.jsonl"
    path.write_text("".join(f'{{"id":"o{i}","tags":["a","b"]}}\n' for i in range(2000)))
    out = subprocess.run([sys.executable, "-m", "workers.investigate", str(path), "--top", "3"],
                         cwd=ROOT, capture_output=True, timeout=60, text=True)
    assert out.returncode == 0, out.stderr
    assert "2000 objects" in out.stdout and "duplicate ids: 0" in out.stdout
    assert "builtins.dict" in out.stdout
    missing = subprocess.run([sys.executable, "-m", "workers.investigate",
                              str(tmp_path / "nope.jsonl")],
                             cwd=ROOT, capture_output=True, timeout=60, text=True)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
