"""Acceptance on what memwarden itself records: a leak it keeps replacing is called a leak at
its rate, the recommendation does not learn from it, the demo's leak is named, a headless
Chromium's record gives figures consistent with the record, and the three formats print the
same figures."""

from __future__ import annotations

import contextlib
import html
import pathlib
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator

import msgspec
import pytest

from snapshots import memory, text
from snapshots.analysis import Analysis, Options, analyze
from snapshots.html import render
from snapshots.report import Report
from snapshots.schema import Event, Sample
from tests.conftest import ROOT, Memwarden, wait_until

LEAKY = str(ROOT / "scripts" / "leaky_worker.py")
AUTOMATON = str(ROOT / "scripts" / "example_automaton.py")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
#: Real runs of memwarden for tens of seconds each: the full suite only.
pytestmark = pytest.mark.slow


def _records(snaps: pathlib.Path) -> tuple[list[Sample], list[Event]]:
    """The samples and events written so far (a line still being written is skipped)."""
    samples, events = [], []
    for path in sorted(snaps.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                if b'"kind":"sample"' in line:
                    samples.append(msgspec.json.decode(line, type=Sample))
                elif b'"kind":"event"' in line:
                    events.append(msgspec.json.decode(line, type=Event))
    return samples, events


def _spawns(snaps: pathlib.Path) -> int:
    return sum(1 for e in _records(snaps)[1] if e.type == "spawn")


def _record(tmp: pathlib.Path, args: list[str], replacements: int, timeout: float
            ) -> pathlib.Path:
    """Run memwarden with `args` until it has made `replacements` replacements, stop it with
    SIGTERM (its tree is killed whatever happens) and return the snapshot directory."""
    snaps = tmp / "snaps"
    m = Memwarden(["run", "--snapshots", str(snaps), *args], tmp)
    try:
        wait_until(lambda: _spawns(snaps) >= replacements, timeout=timeout,
                   what=f"{replacements} replacements")
        m.signal(signal.SIGTERM)
        m.wait(30)
    finally:
        m.kill_tree()
    return snaps


@pytest.fixture(scope="module")
def leak_run() -> Iterator[tuple[pathlib.Path, Analysis]]:
    """A worker leaking 5 MB/s under --high 80MB, replaced at least three times."""
    with tempfile.TemporaryDirectory(prefix="memwarden-leak-") as tmp:
        snaps = _record(pathlib.Path(tmp), ["--high", "80MB", "--", sys.executable, LEAKY,
                                            "--rate", "5MB/s", "--max", "400"], 3, 150)
        yield snaps, analyze([str(snaps)])


@pytest.mark.timeout(240)
def test_a_leak_replaced_again_and_again_is_a_leak_at_its_rate(leak_run) -> None:  # type: ignore[no-untyped-def]
    _, a = leak_run
    (w,) = a.report.workers
    assert w.verdict in ("likely", "confirmed"), w.reasons
    assert w.leak is not None and w.leak.replaced >= 3
    assert w.leak.rate_mb_s == pytest.approx(5.0, rel=0.25)
    assert w.leak.summary.startswith("leak: ") and w.leak.summary in text.render(a.report)
    assert not any("long enough" in r for r in w.reasons)
    # The recommendation is not derived from the leaking peaks.
    (adv,) = a.report.recommendations[0].workers
    leaking_peaks = [g.rss_max for g in w.generations if g.in_leak]
    assert adv.peak < min(leaking_peaks)
    assert adv.high.value <= 80e6 * 1.01  # never a bigger HIGH for a leak
    assert "every generation leaked" in adv.high.reason and "MB/s" in adv.high.reason


@pytest.mark.timeout(240)
def test_the_three_formats_agree_on_every_figure(leak_run) -> None:  # type: ignore[no-untyped-def]
    _, a = leak_run
    out = text.render(a.report)
    page = render(a)
    doc = msgspec.json.decode(msgspec.json.encode(a.report), type=Report)
    cells = re.findall(r"<td>(.*?)</td>", page)
    for w in doc.workers:
        facts = text.figures(w)
        assert len(facts) >= 3 + len(w.generations) - 1  # duration, leak, time to, at ready
        for name, value in facts:
            assert value in out, (name, value)  # text
            assert html.escape(value) in cells, (name, value)  # HTML, beside its name
            assert html.escape(name) in cells, name
        for g in w.generations:
            row = text.generation_row(g)
            assert "  ".join(row) in re.sub(r" {2,}", "  ", out), row
            assert "".join(f"<td>{html.escape(c)}</td>" for c in row) in page, row
    for rec in doc.recommendations:
        for adv in rec.workers:
            assert adv.high.reason in out and html.escape(adv.high.reason) in page


@pytest.mark.timeout(240)
@pytest.mark.skipif(BROWSER is None, reason="Debian's chromium is not installed")
def test_the_report_of_the_run_in_chromium_has_its_legend(leak_run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.snapshots.test_html_browser import _browser

    _, a = leak_run
    report = tmp_path / "report.html"
    report.write_text(render(a))
    dom = _browser(tmp_path, "--dump-dom", report.as_uri()).stdout
    assert 'class="legend"' in dom and "level strip: high" in dom
    assert "memory: the " in dom  # the compared figure is named
    for x in re.findall(r'<line class="trend" x1="[\d.-]+" y1="[\d.-]+" x2="([\d.-]+)"', dom):
        assert float(x) <= 944.01  # within the record, never past its end


@pytest.mark.timeout(240)
def test_the_demo_names_its_leak(tmp_path: pathlib.Path) -> None:
    # scripts/demo.sh's run, for its default 30 s (at 25 s, on a busy host, the second
    # generation could end before it had grown long enough to count)
    snaps = tmp_path / "snaps"
    until = str(int(time.time()) + 30)  # the worker's own deadline, as the demo sets it
    m = Memwarden(["run", "--medium", "30MB", "--high", "45MB", "--critical", "80MB",
                   "--cooldown", "5s", "--sample-period", "0.25s", "--snapshots", str(snaps),
                   "--", sys.executable, AUTOMATON, "--until", until, "--leak-kb", "4",
                   "--state", str(tmp_path / "automaton.jsonl")], tmp_path)
    try:
        m.wait(120)
    finally:
        m.kill_tree()
    for a in (analyze([str(snaps)]), analyze([str(snaps)], Options(window_s=0.5))):
        (w,) = a.report.workers  # the default window, and the demo's 0.5 s
        assert w.verdict in ("likely", "confirmed"), w.reasons
        assert w.leak is not None and w.leak.summary in text.render(a.report)
        assert w.attribution.kind != "fragmentation"
        (adv,) = a.report.recommendations[0].workers
        assert adv.high.value <= 45e6 * 1.01, adv.high.reason  # no bigger HIGH for a leak


PAGE = ("<!DOCTYPE html><html><body><script>const kept = []; setInterval(() => "
        "{ const a = new Uint8Array(2e6); a.fill(1); kept.push(a); }, 200);</script>"
        "</body></html>")


@pytest.mark.timeout(300)
@pytest.mark.skipif(BROWSER is None, reason="Debian's chromium is not installed")
def test_a_chromium_record_gives_figures_consistent_with_the_record(
        tmp_path: pathlib.Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(PAGE)
    # A profile per generation: a replacement starts beside the browser it replaces.
    browser = (f'exec {BROWSER} --headless --no-sandbox --disable-gpu --no-first-run '
               "--disable-background-networking --disable-component-update --disable-sync "
               '--remote-debugging-port=0 --user-data-dir="$0-$MEMWARDEN_GENERATION" "$1"')
    snaps = _record(tmp_path, ["--high", "400MB", "--", "sh", "-c", browser,
                               str(tmp_path / "profile"), page.as_uri()], 3, 200)
    samples, events = _records(snaps)
    a = analyze([str(snaps)])
    (w,) = a.report.workers
    first, last = min(s.t for s in samples), max(s.t for s in samples)
    assert (w.start, w.end) == (first, last)
    out = text.render(a.report)
    assert f"({text.duration(last - first)})" in out
    by_gen: dict[int, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.t):
        by_gen.setdefault(s.generation, []).append(s)
    ready = {e.generation: e for e in events if e.type == "ready"}
    for g in w.generations:
        mine = by_gen[g.generation]
        assert g.uptime_s == mine[-1].t - mine[0].t <= last - first
        if g.generation in ready:  # at ready: the figure memwarden measured and logged
            assert g.at_ready == ready[g.generation].rss
            assert text.size(g.at_ready) in ready[g.generation].message
        else:
            assert g.at_ready == int(memory.columns(mine[:1])[1][0])
    for x in w.replacements:
        assert x.rss_after == next(g.at_ready for g in w.generations
                                   if g.generation == x.generation)
    # the newest generation sampled in the record's last two periods, not one that exited
    live = max(g for g, mine in by_gen.items() if last - mine[-1].t <= 2.0)
    gone = {e.generation for e in events if e.type == "exit" and e.t <= last}
    assert w.projections, "no time to a threshold for the generation running at the end"
    for p in w.projections:
        assert p.generation == live and p.generation not in gone, (p, live, gone)
        assert p.from_t == last and p.from_bytes == int(memory.highest(by_gen[live][-1]))
        if p.reached:
            assert p.from_bytes >= p.bytes and p.seconds == 0
        elif p.seconds is not None:
            assert p.from_bytes < p.bytes and p.seconds > 0
            rate = (w.segment.relevant.slope_mb_h / 3600 * 1e6 if p.rate_from == "trend"
                    else w.leak.rate_mb_s * 1e6 if w.leak else None)
            assert rate and p.from_bytes + p.seconds * rate == pytest.approx(p.bytes, rel=1e-6)
        assert text.projection(p) in out
