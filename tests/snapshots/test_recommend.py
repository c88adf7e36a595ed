"""The recommended settings: sized from the working set and the verdict, each with its reason,
and paste-ready (the TOML loads as memwarden's configuration)."""

from __future__ import annotations

import pathlib
import re
from html import unescape

import pytest

from snapshots import html, synthetic, text
from snapshots.analysis import analyze
from snapshots.recommend import MARGIN, OOM_MIN_BUMP, SUPERVISOR
from snapshots.report import Recommendation
from snapshots.schema import Event, Record
from tests.snapshots import generators

MIB = 2**20


def _recommend(tmp_path: pathlib.Path, records: list[Record]):  # type: ignore[no-untyped-def]
    path = tmp_path / "r.jsonl"
    synthetic.write(str(path), records)
    a = analyze([str(path)])
    path.unlink()
    (rec,) = a.report.recommendations
    return a, rec


def _pasted(tmp_path: pathlib.Path, rec: Recommendation):  # type: ignore[no-untyped-def]
    """The TOML as memwarden reads it, and the Kubernetes and compose sizes in bytes."""
    from supervisor.settings import loading

    conf = tmp_path / "memwarden.toml"
    conf.write_text(rec.toml)
    cfg = loading.load({}, environ={}, file=str(conf))
    k8s = rec.kubernetes.splitlines()
    assert k8s[0] == "resources:" and k8s[1] == "  requests:" and k8s[3] == "  limits:"
    request = int(re.fullmatch(r'    memory: "(\d+)Mi"', k8s[2]).group(1)) * MIB  # type: ignore[union-attr]
    limit = int(re.fullmatch(r'    memory: "(\d+)Mi"', k8s[4]).group(1)) * MIB  # type: ignore[union-attr]
    compose = int(re.fullmatch(r"mem_limit: (\d+)m\n", rec.compose).group(1)) * MIB  # type: ignore[union-attr]
    return cfg, request, limit, compose


def _invariants(rec: Recommendation, limit: int, request: int, compose: int) -> None:
    assert limit == rec.limit.value == compose and request == rec.request.value
    assert request <= limit
    for a in rec.workers:
        assert a.high.value < a.critical.value
        assert a.high.reason and a.critical.reason
        startup = a.startup or 0
        # make before break at HIGH fits under the limit, with the margin and memwarden
        assert limit >= (a.high.value + startup) * (1 + MARGIN) * 0.99 + SUPERVISOR - 16 * MIB
    assert rec.cooldown.value >= 5 and rec.cooldown.reason


def test_healthy_workers_get_thresholds_above_their_working_set(tmp_path) -> None:
    for seed in range(12):
        records, _ = (generators.warmup_with_jitter if seed % 2 else
                      generators.ramped_sawtooth)(seed)
        a, rec = _recommend(tmp_path, records)
        cfg, request, limit, compose = _pasted(tmp_path, rec)
        _invariants(rec, limit, request, compose)
        (w,) = a.report.workers
        (adv,) = rec.workers
        peak = max(g.rss_max for g in w.generations)
        # memwarden replaces nothing that works: HIGH above the observed peak by the margin
        assert adv.high.value >= peak * (1 + MARGIN) * 0.999
        assert cfg.high.bytes == adv.high.value and cfg.critical.bytes == adv.critical.value
        assert cfg.cooldown == rec.cooldown.value
        assert "healthy operation" in adv.high.reason


def test_a_leak_gets_a_high_that_replaces_it_after_about_an_hour(tmp_path) -> None:
    for seed in range(8):
        records, info = generators.gappy_leak(seed)
        a, rec = _recommend(tmp_path, records)
        _, request, limit, compose = _pasted(tmp_path, rec)
        _invariants(rec, limit, request, compose)
        (adv,) = rec.workers
        (w,) = a.report.workers
        assert w.verdict in ("likely", "confirmed")
        assert adv.growth_mb_h == pytest.approx(info["rate_mb_h"], rel=0.1)
        # HIGH: the warm working set with the margin, plus an hour of the leak (kept between
        # half and twice the working set)
        rate = adv.growth_mb_h * 1e6 / 3600
        allowance = min(max(rate * 3600, 0.5 * adv.peak), 2.0 * adv.peak)
        # every generation leaked: bounded, never above the recorded HIGH
        bound = min(adv.peak * (1 + MARGIN) + allowance, w.thresholds["high"])
        assert adv.high.value == pytest.approx(bound, abs=MIB)
        assert adv.peak < max(g.rss_max for g in w.generations)  # not the leak's top
        assert "every generation leaked" in adv.high.reason and "MB/s" in adv.high.reason
        assert any("every generation leaked" in n for n in rec.notes)


def test_an_oom_kill_raises_the_limit_as_vpa_does(tmp_path) -> None:
    values = synthetic.series("flat", 1200, base=300e6)
    records: list[Record] = [synthetic.header(), *synthetic.samples("w", values)]
    records.append(Event(t=1.7e9 + 1199.5, type="exit", worker="w", generation=1,
                         oom_kill=True, signal="SIGKILL", exit_status=137))
    _, rec = _recommend(tmp_path, records)
    peak = max(values) + 0.5e6
    assert rec.limit.value >= max(peak + OOM_MIN_BUMP, peak * 1.2)
    assert "OOM kill" in rec.limit.reason


def test_workers_of_the_recorded_configuration_get_their_own_entries(tmp_path) -> None:
    from supervisor.settings import loading

    recorded = {"cooldown": 5.0, "worker": [
        {"name": "crawler", "command": ["python3", "crawl.py", "--depth", "3"], "replicas": 2},
        {"name": "indexer", "command": ["python3", "index.py"]}]}
    records: list[Record] = [synthetic.header(config=recorded)]
    for name, base in (("crawler-1", 120e6), ("crawler-2", 140e6), ("indexer", 300e6)):
        records += synthetic.samples(name, synthetic.series("sawtooth", 1800, base=base))
    records.sort(key=lambda r: r.t)
    _, rec = _recommend(tmp_path, records)
    assert [a.worker for a in rec.workers] == ["crawler-1", "crawler-2", "indexer"]
    conf = tmp_path / "m.toml"
    conf.write_text(rec.toml)
    cfg = loading.load({}, environ={}, file=str(conf))
    entries = {w.name: w for w in cfg.worker}
    assert entries["crawler"].command == ["python3", "crawl.py", "--depth", "3"]
    assert entries["crawler"].replicas == 2
    by = {a.worker: a for a in rec.workers}
    assert entries["crawler"].high.bytes == max(by["crawler-1"].high.value,
                                                by["crawler-2"].high.value)
    assert entries["indexer"].critical.bytes == by["indexer"].critical.value
    # the container holds all three: the limit is above their peaks together
    assert rec.limit.value > sum(a.peak for a in rec.workers)


@pytest.mark.parametrize("fmt", ["text", "html"])
def test_the_recommendation_is_in_every_format(tmp_path, fmt: str) -> None:
    records, _ = generators.warmup_with_jitter(3)
    a, rec = _recommend(tmp_path, records)
    out = text.render(a.report) if fmt == "text" else unescape(html.render(a))
    for part in ("memwarden.toml", 'high = "', 'critical = "', 'cooldown = "',
                 "resources:", "mem_limit:", rec.limit.text, rec.cooldown.text):
        assert part in out, part
    if fmt == "html":
        assert "Recommended settings" in out


def test_a_worker_with_events_only_gets_no_advice(tmp_path) -> None:
    records: list[Record] = [synthetic.header(),
                             *synthetic.samples("w", synthetic.series("flat", 600))]
    records.append(Event(t=1.7e9 + 10, type="spawn_failed", worker="ghost", generation=1,
                         message="cannot run ./ghost: not found"))
    records.sort(key=lambda r: r.t)
    _, rec = _recommend(tmp_path, records)
    assert [a.worker for a in rec.workers] == ["w"]


def test_a_generation_too_short_to_judge_is_no_healthy_operation_of_a_leak(tmp_path) -> None:
    # Generations replaced at HIGH one after another, then one that ends (its own deadline)
    # a few seconds after ready: it is the next leaking generation cut short, not a working
    # set. Counted as healthy it would make the advice a larger HIGH for a leak.
    for seed in range(4):
        records, _ = generators.generations_at_high(seed, count=3)
        last = max(r.t for r in records)
        records.append(Event(t=last + 0.1, type="spawn", worker="w", generation=4,
                             reason="high pressure", profile="high"))
        records.append(Event(t=last + 1.1, type="ready", worker="w", generation=4))
        records += [s for k in range(1, 9) for s in synthetic.samples(
            "w", [40e6 + 0.3e6 * k], t0=last + 0.1 + k, generation=4)]
        records.append(Event(t=last + 9.2, type="exit", worker="w", generation=4,
                             expected=False, returncode=0))
        records.sort(key=lambda r: r.t)
        a, rec = _recommend(tmp_path, records)
        (w,) = a.report.workers
        (adv,) = rec.workers
        assert w.verdict in ("likely", "confirmed"), w.reasons
        assert adv.high.value <= w.thresholds["high"] * 1.01, adv.high.reason
        assert "every generation leaked" in adv.high.reason
        assert "4, too short to judge" in adv.high.reason, adv.high.reason
