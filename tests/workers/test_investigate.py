"""The leak investigator: the state by shape, the arrays inside it with where they are,
growth between reports, and a finding; on live workers and on state files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers.conftest import ROOT, Spawner
from workers.finding import Figures, worker_finding
from workers.investigate import Investigator, duplicate_ids, growth, largest_containers
from workers.protocol import Investigate
from workers.shapes import Array, Walk, shape_of

pytestmark = pytest.mark.timeout(90)

GROWING = [sys.executable, str(ROOT / "tests" / "workers" / "growing_worker.py")]
MB = 1_000_000


class Leaked:
    """A type only this test makes, so its growth is unambiguous."""


def test_growth_between_two_reports_names_the_growing_type() -> None:
    inv = Investigator()
    first = inv.report("1", top=5)
    assert not {"builtins.function", "builtins.type"} & set(first.growth)  # no import noise
    held = [Leaked() for _ in range(5000)]
    big = list(range(100_000))
    second = inv.report("2", top=5, state_files=[])
    name = f"{__name__}.Leaked"
    assert second.growth.get(name, 0) >= 5000, second.growth
    assert first.ms > 0 and second.ms > 0
    assert second.largest[0]["len"] >= len(big)
    assert second.objects > 5000 and second.blocks > 0 and second.rss > 0
    assert second.objects_per_mb and second.objects_per_mb > 0
    assert first.finding.startswith("First report")
    del held, big


def test_growth_and_largest_containers_functions() -> None:
    assert growth({"a": 5, "b": 1}, {"a": 7, "b": 1, "c": 9}, top=1) == {"c": 9}
    assert growth({}, {"a": 2, "b": 1}, top=5, leave_out=frozenset({"a"})) == {"b": 1}
    found = largest_containers([[1, 2, 3], {"k": 1}, "not a container", (1, 2)], top=2)
    assert [(c["type"], c["len"]) for c in found] == [("list", 3), ("tuple", 2)]


@pytest.mark.parametrize(("obj", "shape"), [
    ({"id": 1, "url": "u", "links": []}, "{id, links, url}"),
    ({"id": 1, "type": "page", "links": []}, "type=page"),
    ({"id": 1, "kind": "x" * 41}, "{id, kind}"),
    (Leaked(), f"{__name__}.Leaked"),
    ([1, 2], "list"),
])
def test_state_objects_are_grouped_by_their_own_shape(obj: object, shape: str) -> None:
    assert shape_of(obj) == shape


def test_arrays_are_named_by_where_they_are_and_their_growth_told() -> None:
    state = {"a": {"id": "a", "meta": {"links": list(range(5000))}},
             "b": {"id": "b", "tags": ["x"] * 3, 7: [[1, 2]]}}
    walk = Walk()
    for key, obj in state.items():
        walk.entry("store", f"store[{key!r}]", obj)
    arrays = walk.top_arrays(3)
    assert [(a.where, a.length) for a in arrays] == [
        ("store['a'].meta.links", 5000), ("store['b'].tags", 3), ("store['b'][7][0]", 2)]
    assert arrays[0].grew is None
    assert [(s.shape, s.count) for s in walk.top_shapes(5)] == [("{id, meta}", 1),
                                                                ("{7, id, tags}", 1)]
    state["a"]["meta"]["links"] += range(3000)  # type: ignore[index]
    again = Walk(before=walk.lengths())
    for key, obj in state.items():
        again.entry("store", f"store[{key!r}]", obj)
    assert again.top_arrays(1)[0].to_dict() == {"where": "store['a'].meta.links",
                                                "type": "list", "len": 8000,
                                                "bytes": again.top_arrays(1)[0].nbytes,
                                                "grew": 3000}


def figures(rss_mb: float, tracked: int = 100_000, blocks: int = 500_000, state: int = 1000,
            t: float = 0.0) -> Figures:
    return Figures(t, int(rss_mb * MB), tracked, blocks, state)


@pytest.mark.parametrize(("before", "now", "says"), [
    (figures(100), figures(220, t=60), "Memory grew 120 MB over 60 s while objects stayed at "
     "1,000: look outside the stores — native memory"),
    (figures(100), figures(220, blocks=900_000), "Python allocated 400,000 more blocks"),
    (figures(100), figures(220, state=5000), "with the stores, which grew by 4,000 objects"),
    (figures(100), figures(220, tracked=400_000), "300,000 Python objects appeared outside "
     "the stores (which hold 1,000); the type that grew most is t.T (+9)"),
    (figures(100), figures(105), "Memory changed by 5 MB to 105 MB"),
])
def test_the_finding_says_what_the_figures_point_at(before: Figures, now: Figures,
                                                     says: str) -> None:
    text = worker_finding(now, before, store_growth={}, histories={}, arrays=[],
                          top_type=("t.T", 9))
    assert says in text, text


def test_the_finding_names_history_growth_large_arrays_and_duplicates() -> None:
    arrays = [Array("w.objects['big'].items", "list", 200_000, 1_600_056, 0),
              Array("w.seen", "list", 3000, 24_056, 2000)]
    text = worker_finding(figures(100), figures(101), store_growth={"w.journal": 2500},
                          histories={"w.journal": 9000}, arrays=arrays, duplicates=["x", "y"])
    assert "The history w.journal grew by 2,500 entries to 9,000." in text
    assert "w.seen, a list, grew by 2,000 to 3,000 elements." in text
    assert "The largest array in the state is w.objects['big'].items: a list of 200,000" in text
    assert "2 duplicate id(s) in the state files (first: x)" in text


def test_duplicates_over_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"id":1}\n{"id":2}\n{"id":1}\n{"id":2,"_rev":1}\n'
                    '{"id":3}\n{"id":3,"_deleted":true}\n{"id":3}\nbad\n{"id":4')
    dups, malformed, lines, torn = duplicate_ids(str(path))
    assert dups == ["1"] and malformed == 1 and lines == 9 and torn


def investigate_file(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.investigate", *args],
                          cwd=ROOT, capture_output=True, timeout=60, text=True)


def test_command_line_shows_the_state_not_the_interpreter(tmp_path: Path) -> None:
    path = tmp_path / "automaton.jsonl"
    with path.open("w") as f:
        for i in range(50):
            f.write(json.dumps({"id": f"obj-{i}", "step": i, "data": "x" * 100}) + "\n")
        f.write(json.dumps({"id": "obj-7", "_rev": 1, "step": 7,
                            "items": list(range(200_000))}) + "\n")
    out = investigate_file(str(path), "--top", "3")
    assert out.returncode == 0, out.stderr
    assert "50 objects" in out.stdout and "duplicate ids: 0" in out.stdout
    assert "builtins.function" not in out.stdout
    assert "{data, id, step}" in out.stdout and "{id, items, step}" in out.stdout
    assert "200,000" in out.stdout and "obj-7.items" in out.stdout
    found = json.loads(investigate_file(str(path), "--json").stdout)
    assert found["arrays"][0] == {"where": "obj-7.items", "type": "list", "len": 200_000,
                                  "bytes": found["arrays"][0]["bytes"]}
    assert [(s["shape"], s["count"]) for s in found["shapes"]] == [
        ("{id, items, step}", 1), ("{data, id, step}", 49)]
    assert "The largest array in the state is obj-7.items: a list of 200,000" in \
        found["finding"]


def test_command_line_errors(tmp_path: Path) -> None:
    missing = investigate_file(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id":"a"}\nnot json\n{"id":"a"}\n\xff\xfe\n')
    found = investigate_file(str(bad), "--json")
    assert found.returncode == 1
    assert "2 malformed line(s)" in json.loads(found.stdout)["finding"]


def test_a_worker_whose_history_grows_is_told_so(spawn: Spawner, tmp_path: Path) -> None:
    _, sup = spawn([*GROWING, str(tmp_path / "state.jsonl")])
    assert sup is not None
    sup.expect("ready")
    sup.send(Investigate(id="a"))
    first = sup.expect("report", lambda m: m["id"] == "a")
    assert not first.get("error"), first
    big = "growing.objects['big'].items"
    assert first["arrays"][0]["where"] == big and first["arrays"][0]["len"] == 200_000
    assert big in first["finding"] and "200,000" in first["finding"]
    journal = first["stores"]["growing.journal"]
    sup.expect("stats", lambda m: m["stores"]["growing.journal"] >= journal + 3000)
    sup.send(Investigate(id="b"))
    second = sup.expect("report", lambda m: m["id"] == "b")
    assert second["store_growth"]["growing.journal"] >= 3000
    assert "The history growing.journal grew by" in second["finding"], second["finding"]
    seen = next(a for a in second["arrays"] if a["where"] == "growing.seen")
    assert seen["grew"] >= 3000
    assert "growing.seen, a list, grew by" in second["finding"]
    assert any(s["shape"] == "{id, n}" and s["count"] == 500 for s in second["shapes"])


def test_memory_outside_python_objects_points_outside_the_stores(spawn: Spawner,
                                                                 tmp_path: Path) -> None:
    _, sup = spawn([*GROWING, str(tmp_path / "state.jsonl"), "--native"])
    assert sup is not None
    sup.expect("ready")
    sup.send(Investigate(id="a"))
    first = sup.expect("report", lambda m: m["id"] == "a")
    sup.expect("stats", lambda m: m["rss"] >= first["rss"] + 60 * MB)
    sup.send(Investigate(id="b"))
    second = sup.expect("report", lambda m: m["id"] == "b")
    assert "while objects stayed at 501: look outside the stores" in second["finding"], \
        second["finding"]
    assert "growing.mapped, a list, grew by" in second["finding"]
