"""Dependencies point one way: supervisor -> snapshots, workers.protocol; never back."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STDLIB_ONLY_PLUS = {"msgspec"}


def _imports(package: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update((str(path.relative_to(ROOT)), a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("workers", ("supervisor", "snapshots", "anyio", "psutil")),
        ("snapshots", ("supervisor", "anyio", "psutil", "objgraph")),
    ],
)
def test_dependencies_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    bad = sorted(
        f"{where} imports {name}"
        for where, name in _imports(package)
        if name.split(".")[0] in forbidden
    )
    assert not bad, "\n".join(bad)


def test_snapshots_use_only_the_worker_protocol() -> None:
    bad = sorted(
        f"{where} imports {name}"
        for where, name in _imports("snapshots")
        if name.startswith("workers") and name != "workers.protocol"
    )
    assert not bad, "\n".join(bad)
