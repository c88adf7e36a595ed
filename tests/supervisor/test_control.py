"""The control socket: status, set, investigate, replace and stop against a running memwarden."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest

from tests.conftest import needs_root, wait_until

# Copies every channel line it receives into a file; says ready (generation 2 and later
# only after argv[2] seconds); answers the first `investigate` with a report and refuses
# the next as rate-limited, as the Python client does.
LISTENER = r"""
import json, os, socket, sys, time
s = socket.socket(fileno=int(os.environ["MEMWARDEN_FD"]))
if os.environ["MEMWARDEN_GENERATION"] != "1":
    time.sleep(float(sys.argv[2]))
s.sendall(b'{"type":"ready"}\n')
asked = 0
with open(sys.argv[1] + "." + os.environ["MEMWARDEN_GENERATION"], "ab", buffering=0) as out:
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            break
        out.write(data)
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg["type"] != "investigate":
                continue
            asked += 1
            if asked == 1:
                report = {"type": "report", "id": msg["id"], "ms": 12.0, "objects": 1000,
                          "rss": 52_000_000, "finding": "history grew by 5,000 entries",
                          "arrays": [{"where": "obj-7.items", "type": "list", "len": 200000}]}
            else:
                report = {"type": "report", "id": msg["id"], "error": "rate limited",
                          "retry_after_s": 12.0}
            s.sendall(json.dumps(report).encode() + b"\n")
"""


def ctl(path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args, "--control", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_control_commands_say_what_happened(memwarden, tmp_path) -> None:
    sock, heard = tmp_path / "ctl.sock", tmp_path / "heard"
    m = memwarden("run", "--control", str(sock), "--snapshots", "",
                  "--", sys.executable, "-c", LISTENER, str(heard), "3")
    wait_until(sock.exists, what="the control socket")

    def status() -> dict:
        r = ctl(sock, "status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    worker = wait_until(lambda: [w for w in status()["workers"] if w.get("rss")],
                        what="a sampled worker")[0]
    assert worker["name"] == "worker" and worker["generation"] == 1 and worker["procs"] >= 1
    assert "worker" in ctl(sock, "status").stdout

    done = ctl(sock, "set", "worker", "max_objects=5")
    assert done.returncode == 0 and "limits sent to generation 1 of 'worker': max_objects=5" \
        in done.stdout
    report = ctl(sock, "investigate", "worker")
    assert report.returncode == 0, report.stdout
    assert "history grew by 5,000 entries" in report.stdout
    assert "200,000  list at obj-7.items" in report.stdout
    refused = ctl(sock, "investigate", "worker")
    assert refused.returncode == 1
    assert "refused by generation 1 of 'worker': rate limited, next in 12s" in refused.stdout
    got = (tmp_path / "heard.1").read_text()
    lines = [json.loads(line) for line in got.splitlines()]
    assert lines[0]["type"] == "limits" and lines[0]["limits"]["max_objects"] == 5
    assert lines[1]["type"] == "investigate"

    bad = ctl(sock, "replace", "nobody")
    assert bad.returncode == 1 and "no worker 'nobody' (workers: worker)" in bad.stdout
    first = ctl(sock, "replace", "worker")
    assert first.returncode == 0 and "generation 2 is starting" in first.stdout
    again = ctl(sock, "replace", "worker")  # generation 2 takes 3 s to say ready
    assert again.returncode == 1
    assert "already replacing worker 'worker': generation 2 is starting" in again.stdout
    wait_until(lambda: any(w["generation"] == 2 and w["state"] == "ready"
                           for w in status()["workers"]), what="generation 2 ready")
    wait_until(lambda: [w["generation"] for w in status()["workers"]] == [2],
               what="generation 1 retired")

    assert ctl(sock, "stop").returncode == 0
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    assert not sock.exists()


def test_set_and_investigate_refuse_a_worker_that_does_not_speak_the_channel(
        memwarden, tmp_path) -> None:
    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--control", str(sock), "--snapshots", "", "--ready-after", "0.1s",
                  "--", "sleep", "600")
    wait_until(sock.exists, what="the control socket")
    for args in (("set", "worker", "max_objects=5"), ("investigate", "worker")):
        r = ctl(sock, *args)
        assert r.returncode == 1, r.stdout
        assert "not sent: worker 'worker' (generation 1) does not speak the channel" in r.stdout
    m.signal(signal.SIGTERM)
    m.wait()


def test_no_memwarden_there(tmp_path) -> None:
    r = ctl(tmp_path / "none.sock", "status")
    assert r.returncode == 1 and "no memwarden answers" in r.stderr


# -- hostile clients, owners, descriptors ----------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def raw_request(path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        return s.recv(65536)


def test_bad_requests_are_answered_and_memwarden_goes_on(memwarden, tmp_path) -> None:
    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--control", str(sock), "--snapshots", "", "--", *SLEEPER)
    wait_until(sock.exists, what="the control socket")
    for bad in (b'{"op":"\xff"}\n', b'{"op":"status","x":' + b"[" * 5000 + b"]" * 5000 + b"}\n",
                b"not json \x1b[2J\n", b"\n", b"{" * 70000):
        reply = json.loads(raw_request(sock, bad))
        assert reply["ok"] is False and "bad request" in reply["message"]
    assert ctl(sock, "status").returncode == 0
    err = m.stderr()
    assert "Traceback" not in err and "\x1b" not in err and "control socket: dropped" in err


def test_the_default_socket_is_in_a_private_directory(memwarden, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run)}
    memwarden("run", "--snapshots", "", "--", *SLEEPER, env={"XDG_RUNTIME_DIR": str(run)})
    directory = run / f"memwarden-{os.geteuid()}"
    sock = directory / "control.sock"
    wait_until(sock.exists, what="the default control socket")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0
    r = subprocess.run([sys.executable, "-m", "supervisor", "status"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "worker" in r.stdout


@needs_root()
def test_a_directory_taken_by_another_user_is_refused_by_both_ends(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    taken = run / f"memwarden-{os.geteuid()}"
    taken.mkdir(mode=0o700)
    os.chown(taken, 65534, 65534)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run)}
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", "--snapshots", "", "--",
                        "true"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "belongs to uid 65534" in r.stderr
    r = subprocess.run([sys.executable, "-m", "supervisor", "status"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "refusing" in r.stderr and "uid 65534" in r.stderr


# A control server run by another user: answers anything with a reply that lies.
IMPOSTOR = r"""
import os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b'{"ok":true,"message":"stopping every worker"}\n')
    c.close()
"""


@needs_root()
def test_a_server_or_client_of_another_user_is_refused(memwarden, tmp_path) -> None:
    import pathlib
    import shutil
    import tempfile

    shared = pathlib.Path(tempfile.mkdtemp(prefix="memwarden-test-"))  # reachable by uid 65534
    shared.chmod(0o777)
    try:
        _refused_both_ways(memwarden, shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _refused_both_ways(memwarden, tmp_path) -> None:
    fake = tmp_path / "fake.sock"
    impostor = subprocess.Popen([sys.executable, "-c", IMPOSTOR, str(fake)],
                                stdout=subprocess.PIPE)
    try:
        assert impostor.stdout is not None and impostor.stdout.readline() == b"ready\n"
        r = ctl(fake, "stop")
        assert r.returncode == 1 and "served by uid 65534" in r.stderr
    finally:
        impostor.kill()
        impostor.wait(10)
    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--control", str(sock), "--snapshots", "", "--", *SLEEPER)
    wait_until(sock.exists, what="the control socket")
    sock.chmod(0o777)
    client = ("import os, socket, sys; os.setgid(65534); os.setuid(65534); "
              "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
              "s.sendall(b'{\"op\":\"stop\"}\\n')\n"
              "try: print(repr(s.recv(100)))\n"
              "except ConnectionResetError: print(repr(b''))")
    r = subprocess.run([sys.executable, "-c", client, str(sock)], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.strip() == "b''", r.stderr  # closed without an answer
    wait_until(lambda: "connection from uid 65534" in m.stderr(), what="the refusal logged")
    assert m.proc.poll() is None


def test_idle_connections_and_no_descriptors_left_do_not_end_memwarden(memwarden,
                                                                        tmp_path) -> None:
    import re
    import resource

    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--control", str(sock), "--metrics", ":0", "--snapshots", "",
                  "--", *SLEEPER)
    port = int(wait_until(lambda: (found := re.search(r"127.0.0.1:(\d+)/metrics \(this "
                                                      r"machine only\)", m.stderr()))
                          and found.group(1), what="the metrics address"))
    wait_until(lambda: ctl(sock, "status").returncode == 0, what="control answering")
    # Leave memwarden 20 descriptors: fewer than the connections below.
    limits = resource.prlimit(m.pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{m.pid}/fd"))
    resource.prlimit(m.pid, resource.RLIMIT_NOFILE, (in_use + 20, limits[1]))
    idle = []
    try:
        for _ in range(60):  # more than both caps together, and than the descriptors left
            a = socket.socket(socket.AF_UNIX)
            a.connect(str(sock))
            b = socket.create_connection(("127.0.0.1", port), timeout=10)
            idle += [a, b]
        wait_until(lambda: "cannot accept a connection (Too many open files)" in m.stderr(),
                   what="the listeners out of descriptors")
        assert m.proc.poll() is None
    finally:
        for s in idle:
            s.close()
        resource.prlimit(m.pid, resource.RLIMIT_NOFILE, limits)
    wait_until(lambda: ctl(sock, "status").returncode == 0, what="control answering again")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert b"200 OK" in s.recv(65536)
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    assert "Traceback" not in m.stderr()


def test_connections_beyond_the_cap_wait_their_turn(memwarden, tmp_path) -> None:
    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--control", str(sock), "--snapshots", "", "--", *SLEEPER)
    wait_until(lambda: ctl(sock, "status").returncode == 0, what="control answering")
    idle = []
    try:
        for _ in range(600):
            idle.append(socket.socket(socket.AF_UNIX))
            idle[-1].connect(str(sock))
        wait_until(lambda: "control socket: 512 connections open; new ones wait" in m.stderr(),
                   what="the cap reached")
    finally:
        for s in idle:
            s.close()
    assert ctl(sock, "status").returncode == 0


def test_status_into_a_closed_pipe_is_quiet(memwarden, tmp_path) -> None:
    sock = tmp_path / "ctl.sock"
    memwarden("run", "--control", str(sock), "--snapshots", "", "--", *SLEEPER)
    wait_until(sock.exists, what="the control socket")
    read, write = os.pipe()
    os.close(read)  # like `memwarden status | true`: nobody reads
    try:
        r = subprocess.run([sys.executable, "-m", "supervisor", "status", "--control",
                            str(sock)], stdout=write, stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(write)
    assert r.returncode == 0 and r.stderr == b""


def test_set_refuses_an_unknown_limit() -> None:
    r = ctl("/nonexistent.sock", "set", "worker", "typo=1")
    assert r.returncode == 2
    assert "unknown limit 'typo'; known: max_objects, max_history" in r.stderr
    r = ctl("/nonexistent.sock", "set", "worker", "max_objects=nan")
    assert r.returncode == 2 and "max_objects: expected an integer" in r.stderr


# -- set and investigate bounded as the command line is (issue 21) -----------------------------

def test_set_and_investigate_from_any_client_are_bounded_as_the_command_line_is(
        memwarden, tmp_path) -> None:
    sock, heard = tmp_path / "ctl.sock", tmp_path / "heard"
    m = memwarden("run", "--control", str(sock), "--snapshots", "",
                  "--", sys.executable, "-c", LISTENER, str(heard), "3")
    wait_until(lambda: "ready (said ready)" in m.stderr(), what="the worker ready")
    wait_until(lambda: (tmp_path / "heard.1").exists(), what="the listener's file")
    refused = [
        ({"max_objects": int("9" * 4000)}, "max_objects: expected an integer from 1 to 1000000000"),
        ({"gc_threshold0": 2**63}, "gc_threshold0: expected an integer from 0 to 1000000"),
        ({"gc_interval_s": 1e308}, "gc_interval_s: expected a number from 0.001 to 86400"),
        ({"max_objects": 1.5}, "max_objects: expected an integer"),
        ({"bogus": 1}, "unknown limit 'bogus'; known: max_objects"),
        ({}, "no limits given"),
    ]
    for limits, needle in refused:
        request = json.dumps({"op": "set", "worker": "worker", "limits": limits}).encode()
        reply = json.loads(raw_request(sock, request + b"\n"))
        assert reply["ok"] is False and needle in reply["message"], (limits, reply)
        assert reply["message"].startswith("nothing sent: ")
    reply = json.loads(raw_request(sock, b'{"op":"investigate","worker":"worker","top":-1}\n'))
    assert reply["ok"] is False and "top" in reply["message"]
    reply = json.loads(raw_request(sock, b'{"op":"set","worker":"worker","limits":'
                                         b'{"max_objects":500}}\n'))
    assert reply["ok"] is True, reply
    wait_until(lambda: b'"limits"' in (tmp_path / "heard.1").read_bytes(),
               what="the one valid set on the channel")
    sent = [json.loads(line) for line in (tmp_path / "heard.1").read_bytes().splitlines()]
    assert [s["limits"]["max_objects"] for s in sent if s["type"] == "limits"] == [500]
    assert "Traceback" not in m.stderr()
