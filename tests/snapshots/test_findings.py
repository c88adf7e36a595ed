"""Growth and objects per MB against the design's targets, leak-report findings, the memory
accessor, replay on millisecond samples, and the HTML tables and lines, in every format."""

from __future__ import annotations

import pathlib
from html import unescape

import msgspec
import pytest

from snapshots import html, memory, synthetic, text
from snapshots.analysis import Analysis, analyze
from snapshots.burst import encode_burst
from snapshots.report import Report
from snapshots.schema import Event, Record
from snapshots.series import SampleView
from snapshots.verdict import growth_rating
from tests.snapshots.generators import T0

MB = synthetic.MB


def _analyse(tmp_path: pathlib.Path, records: list[Record]) -> Analysis:
    path = tmp_path / "r.jsonl"
    synthetic.write(str(path), records)
    return analyze([str(path)])


def _all_formats(a: Analysis) -> tuple[str, Report, str]:
    decoded = msgspec.json.decode(msgspec.json.encode(a.report), type=Report)
    return text.render(a.report), decoded, unescape(html.render(a))


@pytest.mark.parametrize(("mb_s", "rating"), [(0.0, "healthy"), (0.99, "healthy"),
                                              (1.0, "elevated"), (5.0, "elevated"),
                                              (5.01, "warning"), (10.0, "warning"),
                                              (10.01, "critical")])
def test_growth_rating_follows_the_design_targets(mb_s: float, rating: str) -> None:
    assert growth_rating(mb_s * 1e6) == rating


def test_growth_and_objects_per_mb_against_the_targets_in_every_format(tmp_path) -> None:
    records: list[Record] = [synthetic.header()]
    values = synthetic.series("flat", 1800, base=400 * MB)
    for i, v in enumerate(values):
        # growth measured live: 12 MB/s for 20 s at 600 s, 0.2 MB/s otherwise; start-up
        # growth in the first seconds is not judged
        slope = 50e6 if i < 3 else 12e6 if 600 <= i < 620 else 0.2e6
        (s,) = synthetic.samples("w", [v], t0=T0 + i, stats={"objects": 1200.0})
        s.slope = slope
        records.append(s)
    a = _analyse(tmp_path, records)
    out, decoded, page = _all_formats(a)
    t = decoded.workers[0].targets
    assert t is not None
    assert t.growth == "healthy" and t.growth_mb_s is not None and abs(t.growth_mb_s) < 0.01
    assert t.growth_peak_mb_s == pytest.approx(12.0) and t.growth_peak == "critical"
    assert t.seconds_over == pytest.approx([20.0, 20.0, 20.0])
    assert t.objects_per_mb == pytest.approx(3.0, rel=0.01) and t.objects == "below"
    assert decoded.workers[0].generations[0].growth_peak_mb_s == pytest.approx(12.0)
    for rendered in (out, page):
        assert "healthy < 1 MB/s, warning > 5, critical > 10" in rendered
        assert "peak 12.0 MB/s: critical" in rendered
        assert "3 objects/MB: below the target (> 10)" in rendered


def test_latest_finding_of_each_generation_is_shown(tmp_path) -> None:
    records: list[Record] = [synthetic.header()]
    records += synthetic.samples("w", [100 * MB] * 60)
    records += synthetic.samples("w", [100 * MB] * 60, t0=T0 + 60, generation=2)
    records.append(Event(t=T0 + 10, type="report", worker="w", generation=1,
                         data={"id": "a", "finding": "dict grew by 40000 entries"}))
    records.append(Event(t=T0 + 50, type="report", worker="w", generation=1,
                         data={"id": "b", "finding": "list of Page objects keeps every page"}))
    records.append(Event(t=T0 + 90, type="report", worker="w", generation=2,
                         data={"id": "c", "growth": {"dict": 3}}))  # an older worker: none
    records.sort(key=lambda r: r.t)
    out, decoded, page = _all_formats(_analyse(tmp_path, records))
    g1, g2 = decoded.workers[0].generations
    assert g1.finding == "list of Page objects keeps every page" and g1.finding_t == T0 + 50
    assert g2.finding is None
    for rendered in (out, page):
        assert "finding, generation 1" in rendered
        assert "list of Page objects keeps every page" in rendered
        assert "dict grew" not in rendered and "finding, generation 2" not in rendered


def test_memory_is_read_through_one_accessor_that_prefers_memory() -> None:
    class WithMemory(SampleView, tag="sample"):
        rss: int = 0
        memory: int | None = None

    plain = SampleView(t=0.0, worker="w", generation=1, rss_min=90, rss_max=110, rss_mean=100)
    assert memory.columns([plain]) == ([90], [100], [110])
    shared = WithMemory(t=0.0, worker="w", generation=1, rss_min=90, rss_max=110,
                        rss_mean=100, rss=100, memory=50)
    old = WithMemory(t=0.0, worker="w", generation=1, rss_min=90, rss_max=110,
                     rss_mean=100, rss=100)
    assert memory.columns([shared, old]) == ([45, 90], [50, 100], [55, 110])
    assert memory.columns([old, old]) == ([90, 90], [100, 100], [110, 110])
    assert memory.highest(shared) == 55 and memory.last(shared) == 50
    assert memory.last(old) == 100


def test_html_generation_table_has_objects_per_mb_and_the_critical_line(tmp_path) -> None:
    records: list[Record] = [synthetic.header()]
    records += synthetic.samples("w", synthetic.series("sawtooth", 1200), stats={"objects": 6e6})
    page = html.render(_analyse(tmp_path, records))
    header = page.split("<th>gen</th>", 1)[1].split("</tr>", 1)[0]
    assert "<th>obj/MB</th>" in header and "<th>at high</th>" in header
    # the y-axis follows the data: a line above it is named in the legend, not drawn
    assert "<title>critical 500.0 MB</title>" not in page
    assert "critical 500.0 MB (above the chart: not drawn)" in page


def _climb_with_burst(high: float, confirm: int) -> tuple[list[Record], float]:
    """1 s summaries of a 10 MB/s climb, and a burst of 1 ms samples around the crossing."""
    ticks = [T0 + i * 0.001 for i in range(20_000)]
    values = [50 * MB + 10 * MB * (t - T0) for t in ticks]
    first = next(i for i, v in enumerate(values) if v >= high)
    records: list[Record] = [synthetic.header(interval_s=0.001)]
    records += synthetic.summarise("w", ticks, values)
    lo = first - 2000
    records.append(encode_burst("w", 1, 1000, "level", ticks[lo],
                                [round((t - T0) * 1e9) for t in ticks[lo:first + 1000]],
                                [int(v) for v in values[lo:first + 1000]], 1000))
    return records, ticks[first + confirm - 1]


def test_replay_runs_on_the_millisecond_samples_where_the_record_has_them(tmp_path) -> None:
    from supervisor.replay import render, replay
    from supervisor.settings import loading

    records, confirmed = _climb_with_burst(high=123.4567 * MB, confirm=3)
    path = tmp_path / "climb.jsonl"
    synthetic.write(str(path), records)
    conf = tmp_path / "c.toml"
    conf.write_text('medium = "80MB"\nhigh = "123456700B"\ncritical = "1GB"\n'
                    '[pressure]\nconfirm = 3\n')
    report = replay([str(path)], loading.load({}, environ={}, file=str(conf)), str(conf))
    (w,) = report.workers
    medium, high = w.replayed
    # the crossing of HIGH lies in the burst: the third 1 ms sample over it confirms
    assert high.level == "high" and not high.approximate
    assert high.t == pytest.approx(confirmed, abs=1e-6)
    # MEDIUM was crossed where only the summaries are: approximate, within its period
    assert medium.level == "medium" and medium.approximate
    assert abs(medium.t - (T0 + 3.0)) <= 1.0
    out = render(report)
    assert "~+" in out and "+-" not in out


@pytest.mark.parametrize(("events", "kind", "reason", "status"), [
    ([Event(t=T0 + 30, type="exit", worker="w", generation=1, exit_status=1),
      Event(t=T0 + 31, type="give_up", worker="w", exit_status=1, attempt=5,
            message="giving up: 5 restarts within 60s")], "gave_up", "restart_budget", 1),
    ([Event(t=T0 + 30, type="exit", worker="w", generation=1, exit_status=0)],
     "exited", "exit", 0),
    ([Event(t=T0 + 30, type="shutdown", message="shutting down (received SIGTERM)"),
      Event(t=T0 + 31, type="exit", worker="w", generation=1, exit_status=143,
            expected=True)], "stopped", "shutdown", None),
    ([], None, None, None),
])
def test_how_supervision_ended(tmp_path, events: list[Event], kind: str | None,
                               reason: str | None, status: int | None) -> None:
    records: list[Record] = [synthetic.header(), *synthetic.samples("w", [1e8] * 30), *events]
    out, decoded, page = _all_formats(_analyse(tmp_path, records))
    ending = decoded.workers[0].ending
    if kind is None:
        assert ending is None and "supervision ended" not in out.lower()
        return
    assert ending is not None and (ending.kind, ending.reason) == (kind, reason)
    assert ending.exit_status == status
    assert "supervision ended" in out.lower() and "supervision ended" in page.lower()
    assert (decoded.gave_up == ["host-a / w"]) == (kind == "gave_up")
