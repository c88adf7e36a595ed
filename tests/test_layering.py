"""Dependencies point one way, between the packages and between the layers of `supervisor/`.

`supervisor` imports `snapshots` and `workers.protocol`; `snapshots` imports only
`workers.protocol`; `workers` imports neither. Inside `supervisor/` the sub-packages are
layers (`LAYERS`, lowest first): a module imports from its own layer or those below, and
from a lower layer only the modules its package's `__all__` names. No module circle
anywhere, and no import of our own code deferred into a function unless marked
`# deferred: <why>` (an optional or heavy dependency, or the start-up cost of a command).
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The layers of `supervisor/`, lowest first; the modules at its top (cli, app, ...) are above.
LAYERS = ("core", "settings", "linux", "sensing", "loop", "faces")
OURS = ("supervisor", "workers", "snapshots")


class Import:
    """One import of one module: what it names, and whether it sits inside a function."""

    def __init__(self, where: str, target: str, line: int, deferred: bool, marked: bool) -> None:
        self.where, self.target, self.line = where, target, line
        self.deferred, self.marked = deferred, marked

    def __str__(self) -> str:
        return f"{self.where}:{self.line} imports {self.target}"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        yield child, inside
        yield from _walk(child, inside)


def _imports(package: str) -> list[Import]:
    found: list[Import] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        for node, deferred in _walk(ast.parse(source, str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = module.split(".")
                    parent = parent if is_package else parent[:-1]
                    parent = parent[: len(parent) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                # `from pkg import mod` names a module when pkg is a package of ours.
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    is_module = (ROOT / candidate.replace(".", "/")).with_suffix(".py").exists() \
                        or (ROOT / candidate.replace(".", "/") / "__init__.py").exists()
                    targets.append(candidate if is_module else base)
            else:
                continue
            text = " ".join(lines[max(node.lineno - 2, 0): node.end_lineno])  # or the line above
            for target in targets:
                found.append(Import(str(path.relative_to(ROOT)), target, node.lineno, deferred,
                                    "# deferred:" in text))
    return found


def _layer(module: str) -> int:
    """The rank of a module of `supervisor`: its layer's index; the package root (only the
    version) below all; the modules at the top above all."""
    parts = module.split(".")
    if parts == ["supervisor"]:
        return -1
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)


def _exported(package: str) -> set[str]:
    init = ROOT / package.replace(".", "/") / "__init__.py"
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("workers", ("supervisor", "snapshots", "anyio", "psutil")),
        ("snapshots", ("supervisor", "anyio", "psutil", "objgraph")),
    ],
)
def test_dependencies_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    bad = sorted(str(i) for i in _imports(package) if i.target.split(".")[0] in forbidden)
    assert not bad, "\n".join(bad)


def test_snapshots_use_only_the_worker_protocol() -> None:
    bad = sorted(str(i) for i in _imports("snapshots")
                 if i.target.startswith("workers") and i.target != "workers.protocol")
    assert not bad, "\n".join(bad)


def test_every_layer_is_a_package_that_names_what_it_offers() -> None:
    for layer in LAYERS:
        exported = _exported(f"supervisor.{layer}")
        modules = {p.stem for p in (ROOT / "supervisor" / layer).glob("*.py")} - {"__init__"}
        assert exported, f"supervisor/{layer}/__init__.py has no __all__"
        assert exported <= modules, f"{layer}.__all__ names no module: {exported - modules}"


def test_imports_run_downward_between_the_layers() -> None:
    bad = []
    for i in _imports("supervisor"):
        if not i.target.startswith("supervisor"):
            continue
        source = _module_name(ROOT / i.where)
        if _layer(i.target) > _layer(source):
            bad.append(f"{i}: a lower layer imports a higher one")
            continue
        parts = i.target.split(".")
        same = source.split(".")[:2] == parts[:2]
        if len(parts) == 3 and parts[1] in LAYERS and not same \
                and parts[2] not in _exported(".".join(parts[:2])):
            bad.append(f"{i}: not in supervisor.{parts[1]}.__all__")
    assert not bad, "\n".join(sorted(bad))


def test_no_deferred_import_of_our_own_code_without_a_reason() -> None:
    bad = [f"{i}: deferred into a function without '# deferred: <why>'"
           for package in ("supervisor", "workers")
           for i in _imports(package)
           if i.deferred and not i.marked and i.target.split(".")[0] in OURS]
    assert not bad, "\n".join(sorted(bad))


def test_no_module_circle() -> None:
    graph: dict[str, set[str]] = {}
    for package in OURS:
        for i in _imports(package):
            source = _module_name(ROOT / i.where)
            target = i.target
            if target.split(".")[0] in OURS and target != source and \
                    not source.startswith(target + "."):  # a module and its own package
                graph.setdefault(source, set()).add(target)
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)
