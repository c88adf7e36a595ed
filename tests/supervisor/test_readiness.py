"""Readiness that means serving: probes for workers that do not speak the channel.

The probes one attempt at a time against real sockets and files, then memwarden itself:
a replacement that never serves is a failed start while the old generation keeps serving;
a guess is called a guess; an exec probe's process is reaped by the one reaper.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

from supervisor.loop.readiness import Prober
from supervisor.settings.probes import parse
from tests.conftest import ROOT, python, wait_until
from tests.supervisor.test_handoff import free_port
from tests.supervisor.test_replacement import events

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def http_server() -> Iterator[tuple[int, list[bytes]]]:
    """A listening socket answering each connection with the next of `answers` (the last
    one repeated), on a thread that ends with the test."""
    answers = [b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"]
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(answers[0] if len(answers) == 1 else answers.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], answers
    finally:
        done.set()
        thread.join(5)
        server.close()


def test_http_counts_2xx_and_3xx_only(http_server) -> None:
    port, answers = http_server
    prober = Prober(parse("http", f"http://127.0.0.1:{port}/up"), time.time())
    first = anyio.run(prober.attempt)
    assert not first.ok and first.detail == "HTTP 503", first
    answers[:] = [b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"]
    second = anyio.run(prober.attempt)
    assert second.ok and second.detail == "HTTP 302", second


def test_tcp_refused_and_accepted() -> None:
    port = free_port()
    prober = Prober(parse("tcp", f"127.0.0.1:{port}"), time.time())
    refused = anyio.run(prober.attempt)
    assert not refused.ok and "refused" in refused.detail, refused
    with socket.create_server(("127.0.0.1", port)):
        assert anyio.run(prober.attempt).ok


def test_a_connection_accepted_by_another_process_does_not_count(http_server) -> None:
    """The server here is this test's own process, not among the generation's members:
    an old generation answering for its replacement."""
    port, answers = http_server
    answers[:] = [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]
    child = subprocess.Popen(["sleep", "30"])
    try:
        prober = Prober(parse("http", f"http://127.0.0.1:{port}/"), time.time(),
                        members=lambda: [child.pid])
        answer = anyio.run(prober.attempt)
        assert not answer.ok and "another process" in answer.detail, answer
        mine = Prober(parse("http", f"http://127.0.0.1:{port}/"), time.time(),
                      members=lambda: [os.getpid()])
        assert anyio.run(mine.attempt).ok
    finally:
        child.kill()
        child.wait(10)


def test_a_file_counts_only_when_newer_than_the_generation(tmp_path) -> None:
    path = tmp_path / "up"
    path.write_text("")
    os.utime(path, (time.time() - 60, time.time() - 60))
    prober = Prober(parse("file", str(path)), time.time() - 1)
    assert not anyio.run(prober.attempt).ok
    os.utime(path)
    assert anyio.run(prober.attempt).ok


@pytest.mark.parametrize(("args", "says"), [
    (["--ready-http", "http://10.1.2.3/health"], "on this machine"),
    (["--ready-http", "https://127.0.0.1/"], "http:// URL"),
    (["--ready-tcp", "127.0.0.1"], "HOST:PORT"),
    (["--ready-file", "relative"], "absolute file path"),
    (["--ready-tcp", ":9", "--ready-file", "/tmp/x"], "one readiness probe per worker"),
    (["--listen", "127.0.0.1:80", "--listen", "127.0.0.1:80"], "each address once"),
])
def test_unusable_probes_are_refused_at_start(args, says, tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", *args, "--control", "",
                        "--snapshots", "", "--", "touch", str(tmp_path / "started")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "started").exists()


def test_a_guess_says_it_is_one(memwarden) -> None:
    m = memwarden("run", "--ready-after", "0.3s", "--control", "", "--",
                  *python("import time; time.sleep(30)"))
    wait_until(lambda: "ready (guessed: alive for 300ms)" in m.stderr(),
               what="the guessed ready line")


def test_an_exec_probe_is_reaped_and_counts_exit_0(memwarden, tmp_path) -> None:
    flag = tmp_path / "up"
    m = memwarden("run", "--ready-exec", f"test -e {flag}", "--control", "", "--",
                  *python(f"import pathlib, time; time.sleep(0.5); "
                          f"pathlib.Path({str(flag)!r}).touch(); time.sleep(30)"))
    wait_until(lambda: f"ready (--ready-exec test -e {flag}: test exited with status 0)"
               in m.stderr(), what="ready by the exec probe")
    assert "reaped orphan" not in m.stderr()


# Generation 1 serves on the port (and holds 60 MB, above --high); later generations
# never listen: each replacement can only fail its start.
SERVES_ONCE = """
import os, socket, sys, time
port = int(sys.argv[1])
if os.environ["MEMWARDEN_GENERATION"] == "1":
    kept = bytearray(60 * 1000 * 1000)
    for i in range(0, len(kept), 4096):
        kept[i] = 1
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    while True:
        c, _ = s.accept()
        c.sendall(b"generation 1\\n")
        c.settimeout(5)
        try:
            c.recv(1)  # until the client is done, as a server does
        except OSError:
            pass
        c.close()
while True:
    time.sleep(1)
"""


@pytest.mark.slow
def test_a_replacement_never_ready_fails_its_start_and_the_old_one_serves(
        memwarden, tmp_path) -> None:
    port = free_port()
    snaps = tmp_path / "snaps"
    m = memwarden("run", "--ready-tcp", f"127.0.0.1:{port}", "--ready-timeout", "3s",
                  "--medium", "30MB", "--high", "40MB", "--critical", "2GB", "--cooldown",
                  "1min", "--control", "", "--snapshots", str(snaps), "--",
                  *python(SERVES_ONCE), str(port))
    wait_until(lambda: "ready (--ready-tcp" in m.stderr(), what="generation 1 ready")
    failed = wait_until(lambda: next((x for x in m.stderr().splitlines()
                                      if "a failed start" in x), None), timeout=60,
                        what="the replacement's failed start")
    assert "replacement generation 2 of 'worker'" in failed and "1 of 5 starts" in failed, \
        failed
    never = wait_until(lambda: next((x for x in m.stderr().splitlines()
                                     if "never succeeded" in x), None), what="the probe's end")
    assert "[worker gen 2" in never and "another process" in never, never
    log = m.stderr()
    assert "[worker gen 1" in log and "retiring (generation 2" not in log, log[-3000:]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert c.recv(100) == b"generation 1\n"
    wait_until(lambda: events(snaps, "spawn_failed", generation=2)
               and events(snaps, "not_ready", generation=2), what="both in the records")
    assert m.proc.poll() is None


def test_the_ready_file_marks_the_generation(memwarden, tmp_path) -> None:
    flag = tmp_path / "ready"
    flag.write_text("")  # older than any generation: does not count
    os.utime(flag, (time.time() - 60, time.time() - 60))
    m = memwarden("run", "--ready-file", str(flag), "--control", "", "--",
                  *python(f"import pathlib, time; time.sleep(0.3); "
                          f"pathlib.Path({str(flag)!r}).write_text('x'); time.sleep(30)"))
    line = wait_until(lambda: next((x for x in m.stderr().splitlines()
                                    if "ready (--ready-file" in x), None), what="ready")
    assert f"{flag} written" in line, line
    assert pathlib.Path(flag).read_text() == "x"
