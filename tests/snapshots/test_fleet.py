"""A fleet: 12 pods' records of 3 workloads give 3 workload rows, each with a verdict over its
replicas and one recommendation, in every format; sources read in parallel give the same
report as read one by one, and the same error."""

from __future__ import annotations

import pathlib
import random
from html import escape

import msgspec
import pytest

from snapshots import fleet, html, synthetic, text
from snapshots.analysis import Options, analyze
from snapshots.reader import UnsupportedVersion
from snapshots.report import Report
from tests.snapshots import fleet_files
from tests.snapshots.fleet_files import PODS, T0, _samples
from tests.snapshots.fleet_files import fleet as write_fleet


def test_pod_owner_from_the_names_kubernetes_generates() -> None:
    assert fleet.owner("indexer-5c8d7f9b4-k2m4n") == "indexer"  # Deployment
    assert fleet.owner("node-agent-x6z8b") == "node-agent"  # DaemonSet
    assert fleet.owner("cache-3") == "cache"  # StatefulSet
    assert fleet.owner("standalone") == "standalone"
    assert fleet.command({"command": ["python", "a.py"]}, "worker") == "python a.py"
    assert fleet.command({"worker": [{"name": "web", "command": ["gunicorn"]}],
                          "command": ["other"]}, "web-2") == "gunicorn"


def test_twelve_pods_of_three_workloads_give_three_rows(tmp_path: pathlib.Path) -> None:
    data = write_fleet(tmp_path / "pods")
    a = analyze([str(data)])
    rows = {w.workload: w for w in a.report.workloads}
    assert sorted(rows) == ["shop/api / worker", "shop/cache / worker",
                            "shop/indexer / worker"]
    for w in rows.values():
        assert w.replicas == 4 and w.by == "pod_owner" and len(w.members) == 4
        assert w.recommendation.workers[0].worker == "worker"  # one recommendation
        assert w.recommendation.workers[0].high.value > 0 and w.recommendation.limit.value > 0
    leak = rows["shop/indexer / worker"]
    assert leak.verdict in ("likely", "confirmed") and leak.leaking == 4
    assert leak.rate_low_mb_s is not None and leak.rate_high_mb_s is not None
    assert 1.7 <= leak.rate_low_mb_s <= leak.rate_high_mb_s <= 2.3
    assert "every generation leaked" in leak.recommendation.workers[0].high.reason
    api = rows["shop/api / worker"]
    assert api.verdict == "none" and api.rate_median_mb_s is None
    # from the 90th percentile of the replicas' healthy peaks, not from the leak's
    assert api.healthy_peak <= max(w.generations[0].rss_max for w in a.report.workers
                                   if w.source.startswith("shop/api"))
    assert api.recommendation.workers[0].high.value >= api.healthy_peak

    out = text.render(a.report)
    page = html.render(a)
    doc = msgspec.json.decode(msgspec.json.encode(a.report), type=Report)
    assert [w.workload for w in doc.workloads] == sorted(rows)
    for w in rows.values():
        assert w.summary in out and escape(w.summary) in page
        assert w.recommendation.workers[0].high.text in out


def test_a_recorded_workload_groups_pods_whatever_their_names(tmp_path) -> None:
    """Headers naming their workload group by it, even where the pod names would say another
    owner (a bare pod, a StatefulSet's ordinal); pods without it are still told by name."""
    data = tmp_path / "pods"
    data.mkdir()
    for seed, name in enumerate(("search-0", "search-canary", "indexer-5c8d7f9b4-k2m4n")):
        fleet_files.pod(data, name, "flat", seed, seconds=600, workload="indexer")
    for seed, name in enumerate(("indexer-5c8d7f9b4-q7r9s", "indexer-5c8d7f9b4-t2v4w"), 3):
        fleet_files.pod(data, name, "flat", seed, seconds=600)
    recorded = [str(data / f"memwarden-{name}-0000.jsonl") for name in (
        "search-0", "search-canary", "indexer-5c8d7f9b4-k2m4n")]
    [row] = analyze(recorded).report.workloads
    assert (row.workload, row.by, row.replicas) == ("shop/indexer / worker", "recorded", 3)
    # in a rollout, pods of older memwardens join the workload they are told to be
    [row] = analyze([str(data)]).report.workloads
    assert (row.workload, row.by, row.replicas) == ("shop/indexer / worker", "pod_owner", 5)
    assert sorted(row.members) == sorted(f"shop/{name}/app / worker" for name in (
        "search-0", "search-canary", "indexer-5c8d7f9b4-k2m4n", "indexer-5c8d7f9b4-q7r9s",
        "indexer-5c8d7f9b4-t2v4w"))


def test_sources_read_in_parallel_give_the_same_report(tmp_path: pathlib.Path) -> None:
    data = write_fleet(tmp_path / "pods")
    one = analyze([str(data)], Options(jobs=1)).report
    two = analyze([str(data)], Options(jobs=2)).report
    one.generated = two.generated = 0.0
    assert msgspec.json.encode(one) == msgspec.json.encode(two)
    assert len(one.sources) == len(PODS)


def test_sources_shared_over_three_processes_give_the_same_report(tmp_path) -> None:
    data = write_fleet(tmp_path / "pods")
    one = analyze([str(data)], Options(jobs=1))
    three = analyze([str(data)], Options(jobs=3))
    one.report.generated = three.report.generated = 0.0
    assert msgspec.json.encode(one.report) == msgspec.json.encode(three.report)
    # what the charts draw comes back from the other processes too
    assert [w.generations[0].windows for w in one.workers] == [
        w.generations[0].windows for w in three.workers]


def test_an_error_in_any_process_is_raised_first_in_source_order(tmp_path) -> None:
    """A later header of a major version this reader does not know stops the analysis, as
    it does on one core: the first such source in order is named, whichever process read
    it."""
    for k in range(4):
        records = [synthetic.header(f"host-{k}"), *_samples("w", 1, T0, [1e8] * 30,
                                                            random.Random(k))]
        if k in (1, 3):
            records.append(synthetic.header(f"host-{k}", t0=T0 + 40))
            records[-1].version = "9.0"
        synthetic.write(str(tmp_path / f"host-{k}.jsonl"), records)
    for jobs in (1, 2, 3):
        with pytest.raises(UnsupportedVersion, match=r"host-1\.jsonl"):
            analyze([str(tmp_path)], Options(jobs=jobs))
