"""The HTML report in a real headless browser: no console errors, a screenshot that is not blank."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import struct
import subprocess
import zlib

import pytest

from snapshots.analysis import analyze
from snapshots.html import render
from tests.snapshots.series_files import write_generations, write_shape

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    BROWSER is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--window-size=1100,1600"]


def _browser(tmp: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.iterdir()))}"
    # start_new_session + killpg on timeout: chromium's helpers must not outlive the test.
    proc = subprocess.Popen([BROWSER, *FLAGS, f"--user-data-dir={profile}", *args],  # type: ignore[list-item]
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate(timeout=10)
        raise AssertionError("chromium did not finish within 90 s") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG into rows of raw pixel bytes."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, channels, rows


def test_report_renders_without_errors_and_is_not_blank(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_generations(data / "crawler.jsonl")
    write_shape(data / "b.jsonl", "sawtooth", host="host-b", worker="parser", seconds=3600)
    report = tmp_path / "report.html"
    report.write_text(render(analyze([str(data)])))
    text = report.read_text()
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # self-contained, nothing to fetch

    shot = tmp_path / "shot.png"
    done = _browser(tmp_path, f"--screenshot={shot}", report.as_uri())
    console = [line for line in done.stderr.splitlines()
               if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line]
    assert not console, "\n".join(console)
    assert shot.exists(), done.stderr[-2000:]

    dom = _browser(tmp_path, "--dump-dom", report.as_uri())
    assert dom.stdout.count('role="img"') == 2 and "crawler" in dom.stdout
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line]

    width, channels, rows = _pixels(shot.read_bytes())
    coloured = sum(1 for row in rows for x in range(0, width * channels, channels * 4)
                   if row[x:x + 3] != b"\xff\xff\xff")
    total = len(rows) * width // 4
    assert coloured > 0.02 * total, f"screenshot nearly blank: {coloured}/{total} pixels"
    # the level strip's green must be somewhere on the page
    assert any(b"\x3a\x9d\x5d" in row for row in rows)


def _dom_scale(dom: str) -> tuple[float, float]:
    """Pixels per MB and per second, from the chart's axis labels as the browser has them."""
    grid = [(float(y) - 4.0, float(mb)) for y, mb in
            re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="end">([\d.]+) MB</text>',
                       dom)]
    ticks = []
    for x, label in re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="middle">'
                               r"(\d\d:\d\d(?::\d\d)?)</text>", dom):
        parts = [int(p) for p in label.split(":")] + [0]
        ticks.append((float(x), parts[0] * 3600 + parts[1] * 60 + parts[2]))
    (y0, mb0), (y1, mb1) = grid[0], grid[-1]
    (x0, s0), (x1, s1) = ticks[0], ticks[-1]
    return (y0 - y1) / (mb1 - mb0), (x1 - x0) / ((s1 - s0) % 86400)


def test_trend_line_in_the_browser_rises_at_the_stated_slope(tmp_path: pathlib.Path) -> None:
    from snapshots import synthetic
    from snapshots.html import PAD_R, TREND_COLOUR, W
    from tests.snapshots.generators import leak_to_a_far_limit

    for seed in (1, 2, 3):
        records, _ = leak_to_a_far_limit(seed)
        synthetic.write(str(tmp_path / "far.jsonl"), records)
        report = tmp_path / f"far-{seed}.html"
        report.write_text(render(analyze([str(tmp_path / "far.jsonl")])))
        dom = _browser(tmp_path, "--dump-dom", report.as_uri()).stdout
        stated = float(re.search(r"<title>trend ([+-][\d.]+) MB/h", dom).group(1))  # type: ignore[union-attr]
        x1, y1, x2, y2 = map(float, re.search(
            r'<line class="trend" x1="([\d.-]+)" y1="([\d.-]+)" x2="([\d.-]+)" '
            r'y2="([\d.-]+)"', dom).groups())  # type: ignore[union-attr]
        px_mb, px_s = _dom_scale(dom)
        drawn = (y1 - y2) / px_mb / ((x2 - x1) / px_s) * 3600
        assert drawn == pytest.approx(stated, rel=0.01), (seed, drawn, stated)
        # The y-axis follows the data: the far limit is named, not drawn.
        assert "limit 8000.0 MB (above the chart: not drawn)" in dom
        # The trend spans the data it was fitted to, never beyond the record's end.
        ends = [float(x) for x in re.findall(r'<line x1="([\d.]+)" x2="[\d.]+" y1="[\d.]+" '
                                             r'y2="[\d.]+" stroke="#555"', dom)]
        assert x2 <= W - PAD_R + 0.01 and not [x for x in ends if x > x2 + 0.01]
        assert 'class="legend"' in dom and "over the span it was fitted to" in dom

        # The pixels the browser painted in the trend's colour lie on that line: it is
        # clipped by the plot, not bent to stay inside it. (The legend's sample of the
        # line, in the same colour, is left out of this page.)
        shot = tmp_path / f"far-{seed}.png"
        chart_only = tmp_path / f"far-{seed}-chart.html"
        chart_only.write_text(re.sub(r'<ul class="legend">.*?</ul>', "", report.read_text()))
        _browser(tmp_path, f"--screenshot={shot}", chart_only.as_uri())
        width, channels, rows = _pixels(shot.read_bytes())
        want = bytes.fromhex(TREND_COLOUR[1:])
        points = [(x, y) for y, row in enumerate(rows) for x in range(width)
                  if all(abs(row[x * channels + c] - want[c]) <= 25 for c in range(3))]
        assert len(points) > 200, f"seed {seed}: {len(points)} trend pixels found"
        n = len(points)
        mx = sum(p[0] for p in points) / n
        my = sum(p[1] for p in points) / n
        slope = (sum((p[0] - mx) * (p[1] - my) for p in points)
                 / sum((p[0] - mx) ** 2 for p in points))
        assert -slope == pytest.approx((y1 - y2) / (x2 - x1), rel=0.03), (seed, slope)
        residual = max(abs(p[1] - (my + slope * (p[0] - mx))) for p in points)
        assert residual < 3.0, f"seed {seed}: pixels {residual:.1f} px off the line"
