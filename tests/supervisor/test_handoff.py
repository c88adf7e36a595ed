"""Listening sockets handed from generation to generation: a real gunicorn, leaking per
request, replaced again and again under a loop of requests, refuses none of them.

Requests go to 127.0.0.1 only, bounded in count and in time; every memwarden started is
killed with its tree at the end (`memwarden` fixture).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from supervisor.linux import handoff
from tests.conftest import ROOT, python, wait_until

pytestmark = pytest.mark.timeout(300)

# Every request keeps 256 KB in the worker that answered it: the tree grows by ~64 MB per
# 250 requests, so --high 90MB replaces it every few hundred.
LEAKY_APP = """
kept = []

def app(environ, start_response):
    kept.append(bytearray(b"x" * 262144))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d\\n" % len(kept)]
"""


def _gunicorn() -> str:
    path = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip("gunicorn is not installed (it comes with the dev extras)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int) -> str | None:
    """One request on a connection of its own; None when it succeeded, else what failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return None if response.status == 200 else f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()


@pytest.mark.slow  # a real server under a loop of requests, ~10 s
def test_gunicorn_replaced_under_load_refuses_no_request(memwarden, tmp_path) -> None:
    gunicorn = _gunicorn()
    (tmp_path / "app.py").write_text(LEAKY_APP)
    port = free_port()
    m = memwarden("run", "--listen", f"127.0.0.1:{port}",
                  "--ready-http", f"http://127.0.0.1:{port}/", "--high", "90MB",
                  "--critical", "2GB",
                  "--medium", "off", "--cooldown", "1s", "--grace", "20s",
                  "--control", str(tmp_path / "ctl.sock"), "--",
                  gunicorn, "--preload", "-w", "4", "--chdir", str(tmp_path), "app:app")
    wait_until(lambda: "ready (--ready-http" in m.stderr(), timeout=60,
               what="generation 1 ready by its probe")
    failures: dict[str, int] = {}
    sent = 0
    deadline = time.monotonic() + 180
    # At least 1,500 requests, and on until three replacements are done; at most 30,000.
    while sent < 30_000 and time.monotonic() < deadline:
        if sent >= 1500 and m.stderr().count("(make before break)") >= 3:
            break
        failed = _get(port)
        sent += 1
        if failed is not None:
            failures[failed] = failures.get(failed, 0) + 1
    log = m.stderr()
    replacements = log.count("(make before break)")
    assert sent >= 1500 and replacements >= 3, (sent, replacements, log[-3000:])
    assert not failures, f"{sum(failures.values())} of {sent} requests failed: {failures}"
    print(f"{sent} requests, {replacements} replacements, none failed")
    assert "Connection in use" not in log and "ready (guessed" not in log, log[-3000:]


ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok\\n"})
"""


@pytest.mark.slow  # a real server under a loop of requests
def test_uvicorn_takes_the_socket_by_fd_and_refuses_nothing_when_replaced(
        memwarden, tmp_path) -> None:
    uvicorn = shutil.which("uvicorn", path=os.path.dirname(sys.executable))
    if uvicorn is None:
        pytest.skip("uvicorn is not installed (it comes with the dev extras)")
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    port = free_port()
    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--listen", f"127.0.0.1:{port}",
                  "--ready-http", f"http://127.0.0.1:{port}/", "--cooldown", "0s",
                  "--control", str(sock), "--", uvicorn, "--fd", "3", "--app-dir",
                  str(tmp_path), "asgi:app")
    wait_until(lambda: "ready (--ready-http" in m.stderr(), timeout=60,
               what="generation 1 ready by its probe")
    def retired(number: int) -> bool:
        return any(f"[worker gen {number} " in x and "(retired)" in x
                   for x in m.stderr().splitlines())

    failures: dict[str, int] = {}
    sent = 0
    deadline = time.monotonic() + 120
    # Two replacements asked for by hand while requests go on, at least 500 requests.
    for asked in (1, 2):
        r = subprocess.run([sys.executable, "-m", "supervisor", "replace", "worker",
                            "--control", str(sock)], capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        while time.monotonic() < deadline and (sent < 250 * asked or not retired(asked)):
            failed = _get(port)
            sent += 1
            if failed is not None:
                failures[failed] = failures.get(failed, 0) + 1
    log = m.stderr()
    assert retired(1) and retired(2) and sent >= 500, (sent, log[-3000:])
    # The socket is handed over: nothing is refused and every answer is 200. What uvicorn
    # itself may do: at SIGTERM it closes the connections it has accepted but not yet read
    # a request from, so a request that came in at that moment is reset, rarely (1 of 829
    # on a busy host); gunicorn, which reads what it accepts at once, has no such window.
    dropped = {k: v for k, v in failures.items()
               if k not in ("ConnectionResetError", "RemoteDisconnected")}
    closed = sum(failures.values()) - sum(dropped.values())
    assert not dropped, f"{sum(dropped.values())} of {sent} requests failed: {failures}"
    assert closed <= max(2, sent // 100), f"{closed} of {sent} requests reset: {failures}"
    assert "address already in use" not in log.lower(), log[-3000:]
    print(f"uvicorn: {sent} requests, 2 replacements, none refused, {closed} reset at "
          "uvicorn's shutdown")


def test_a_port_probe_without_listen_is_called_ambiguous_at_start(memwarden, tmp_path) -> None:
    port = free_port()
    m = memwarden("run", "--ready-http", f"http://127.0.0.1:{port}/health", "--control", "",
                  "--", *python("import time; time.sleep(60)"))
    line = wait_until(lambda: next((x for x in m.stderr().splitlines()
                                    if "cannot tell the generations apart" in x), None),
                      what="the start-up warning")
    assert f"--listen 127.0.0.1:{port}" in line, line


# A worker that reports what it inherited: LISTEN_PID against its own pid, LISTEN_FDS and
# LISTEN_FDNAMES, and whether fd 3 is a listening TCP socket.
REPORT = """
import json, os, socket, sys
s = socket.socket(fileno=3)
out = {"pid": os.getpid(), "LISTEN_PID": os.environ.get("LISTEN_PID"),
       "LISTEN_FDS": os.environ.get("LISTEN_FDS"), "names": os.environ.get("LISTEN_FDNAMES"),
       "listening": s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
       "port": s.getsockname()[1], "fd4": os.path.exists("/proc/self/fd/4")}
s.detach()
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


@pytest.mark.parametrize("measure", ["cgroup", "rss"])
def test_the_worker_gets_the_socket_at_fd_3_with_its_own_pid(memwarden, tmp_path,
                                                             measure) -> None:
    if measure == "cgroup" and os.geteuid() != 0:
        pytest.skip("cgroup mode needs root here")
    port = free_port()
    out = tmp_path / "report.json"
    m = memwarden("run", "--measure", measure, "--listen", f"127.0.0.1:{port}",
                  "--control", "", "--", *python(REPORT), str(out))
    assert m.wait(60) == 0, m.stderr()
    seen = json.loads(out.read_text())
    assert seen["LISTEN_PID"] == str(seen["pid"]), seen
    assert seen["LISTEN_FDS"] == "1" and seen["names"] == f"127.0.0.1-{port}", seen
    assert seen["listening"] == 1 and seen["port"] == port and not seen["fd4"], seen


def test_an_address_in_use_is_refused_before_any_worker_starts(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "supervisor", "run", "--listen",
                            f"127.0.0.1:{port}", "--control", "", "--snapshots", "", "--",
                            "touch", str(tmp_path / "started")],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert f"--listen 127.0.0.1:{port}: cannot bind" in r.stderr, r.stderr
    assert not (tmp_path / "started").exists()


def test_bound_sockets_sit_above_the_fds_they_move_to() -> None:
    bound = handoff.bind_all([("127.0.0.1", 0), ("127.0.0.1", 0)])
    try:
        assert len(bound) == 1  # one address, one socket
        (listener,) = bound.values()
        assert listener.fd >= handoff.HIGH_FD
        env = {"LISTEN_PID": "1", "LISTEN_FDS": "2"}  # memwarden's own, from systemd
        handoff.environment(env, (listener,))
        assert env == {"LISTEN_FDS": "1", "LISTEN_FDNAMES": listener.name}
        handoff.environment(env, ())
        assert env == {}
    finally:
        handoff.close(bound.values())
