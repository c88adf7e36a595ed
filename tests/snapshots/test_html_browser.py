"""The HTML report in a real headless browser: no console errors, a screenshot that is not blank."""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import subprocess
import zlib

import pytest

from snapshots.analysis import analyze
from snapshots.html import render
from tests.snapshots.series_files import write_generations, write_shape

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
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
    assert dom.stdout.count("<svg") == 2 and "crawler" in dom.stdout
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line]

    width, channels, rows = _pixels(shot.read_bytes())
    coloured = sum(1 for row in rows for x in range(0, width * channels, channels * 4)
                   if row[x:x + 3] != b"\xff\xff\xff")
    total = len(rows) * width // 4
    assert coloured > 0.02 * total, f"screenshot nearly blank: {coloured}/{total} pixels"
    # the level strip's green must be somewhere on the page
    assert any(b"\x3a\x9d\x5d" in row for row in rows)
