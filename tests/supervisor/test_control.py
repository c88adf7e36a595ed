"""The control socket: status, set, investigate, replace and stop against a running memwarden."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.conftest import wait_until

# Copies every channel line it receives into a file; says ready.
LISTENER = r"""
import os, socket, sys
s = socket.socket(fileno=int(os.environ["MEMWARDEN_FD"]))
s.sendall(b'{"type":"ready"}\n')
with open(sys.argv[1] + "." + os.environ["MEMWARDEN_GENERATION"], "ab", buffering=0) as out:
    while True:
        data = s.recv(65536)
        if not data:
            break
        out.write(data)
"""


def ctl(path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args, "--control", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_control_commands(memwarden, tmp_path) -> None:
    sock, heard = tmp_path / "ctl.sock", tmp_path / "heard"
    m = memwarden("run", "--control", str(sock), "--snapshots", "",
                  "--", sys.executable, "-c", LISTENER, str(heard))
    wait_until(sock.exists, what="the control socket")

    def status() -> dict:
        r = ctl(sock, "status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    worker = wait_until(lambda: [w for w in status()["workers"] if w.get("rss")],
                        what="a sampled worker")[0]
    assert worker["name"] == "worker" and worker["generation"] == 1 and worker["procs"] >= 1
    assert "worker" in ctl(sock, "status").stdout

    assert ctl(sock, "set", "worker", "max_objects=5").returncode == 0
    assert ctl(sock, "investigate", "worker").returncode == 0
    got = wait_until(lambda: (p := tmp_path / "heard.1").exists() and p.read_text().count("\n") >= 2
                     and p.read_text(), what="messages on the channel")
    lines = [json.loads(line) for line in got.splitlines()]
    assert lines[0]["type"] == "limits" and lines[0]["limits"]["max_objects"] == 5
    assert lines[1]["type"] == "investigate"

    bad = ctl(sock, "replace", "nobody")
    assert bad.returncode == 1 and "no worker 'nobody' (workers: worker)" in bad.stdout
    assert ctl(sock, "replace", "worker").returncode == 0
    wait_until(lambda: any(w["generation"] == 2 and w["state"] == "ready"
                           for w in status()["workers"]), what="generation 2 ready")
    wait_until(lambda: [w["generation"] for w in status()["workers"]] == [2],
               what="generation 1 retired")

    assert ctl(sock, "stop").returncode == 0
    assert m.wait() == 128 + signal.SIGTERM
    assert not sock.exists()


def test_no_memwarden_there(tmp_path) -> None:
    r = ctl(tmp_path / "none.sock", "status")
    assert r.returncode == 1 and "no memwarden answers" in r.stderr


def test_metrics_endpoint(memwarden) -> None:
    import re
    import urllib.request

    m = memwarden("run", "--metrics", "127.0.0.1:0", "--snapshots", "", "--control", "",
                  "--", sys.executable, "-c", "import time; time.sleep(600)")
    port = wait_until(lambda: (found := re.search(r"metrics on http://127.0.0.1:(\d+)",
                                                  m.stderr())) and found.group(1),
                      what="the metrics address in the log")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.read().decode()

    text = wait_until(lambda: "memwarden_worker_rss_bytes{" in (t := scrape()) and t,
                      what="a worker's RSS in the metrics")
    assert 'memwarden_worker_generations{worker="worker"} 1' in text
    assert "# TYPE memwarden_sampler_ticks gauge" in text
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM
