"""`--metrics`: the Prometheus exposition, `/livez`, `/readyz`, and `status --check` beside them."""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import anyio
import anyio.to_thread
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from snapshots.schema import Event
from supervisor.core.policy import Policy
from supervisor.faces import control, endpoint, listeners, metrics
from supervisor.loop.health import Health
from supervisor.sensing.sampler import Sampler
from supervisor.settings.config import Config
from supervisor.settings.specs import policy_settings, specs, worker_settings
from supervisor.settings.specs import thresholds as resolve_thresholds
from tests.conftest import python, wait_until


def get(port: int, path: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {},
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def metrics_port(m) -> int:
    found = wait_until(lambda: re.search(r"metrics on http://127.0.0.1:(\d+)/metrics",
                                         m.stderr()), what="the metrics address in the log")
    return int(found.group(1))


HOLDER = "import time; block = b'\\x01' * 30_000_000; time.sleep(600)"


def test_a_scrape_is_exact_typed_and_labelled_by_role(memwarden) -> None:
    m = memwarden("run", "--metrics", "127.0.0.1:0", "--snapshots", "", "--control", "",
                  "--limit", "123456789B", "--ready-after", "0.1s", "--", *python(HOLDER))
    port = metrics_port(m)
    def scrape() -> str:
        return get(port, "/metrics")[2].decode()

    def held() -> str | None:
        text = scrape()
        rss = families(text).get("memwarden_worker_rss_bytes")
        return text if rss and rss.samples and rss.samples[0].value > 3e7 else None

    text = wait_until(held, what="the worker's 30 MB in the metrics")
    found = families(text)
    # Exact values above 10^7: the hand-written exposition once served 1.23457e+08.
    limit = found["memwarden_limit_bytes"]
    assert limit.type == "gauge" and limit.samples[0].value == 123456789
    rss = found["memwarden_worker_rss_bytes"].samples[0]
    assert rss.labels == {"worker": "worker", "role": "current"}
    assert rss.value == int(rss.value)
    for name in ("memwarden_sampler_ticks", "memwarden_sampler_late_ticks",
                 "memwarden_sampler_missed_ticks", "memwarden_worker_generations_started",
                 "memwarden_events", "process_cpu_seconds"):
        family = found[name]
        assert family.type == "counter", name
        assert all(s.name == name + "_total" for s in family.samples), family.samples
    assert found["memwarden_worker_generations_started"].samples[0].value == 1
    lines = {s.labels["level"]: s.value for s in found["memwarden_worker_threshold_bytes"].samples}
    assert lines == {"medium": 50e6, "high": 200e6, "critical": 500e6}  # the defaults
    assert "# TYPE memwarden_sampler_ticks_total counter" in text
    assert "generation=" not in text  # a replacement must not start new series
    assert found["process_resident_memory_bytes"].samples[0].value > 1e6
    assert found["memwarden_build_info"].samples[0].labels["version"]

    # OpenMetrics when asked for, gzip when accepted, 404 and 405 otherwise.
    status, headers, body = get(port, "/metrics", {
        "Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
        "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    om = {f.name: f for f in openmetrics_families(gzip.decompress(body).decode())}
    assert om["memwarden_sampler_ticks"].type == "counter"
    assert get(port, "/metrics")[1]["Content-Type"].startswith("text/plain; version=0.0.4")
    assert get(port, "/other")[0] == 404
    assert get(port, "/metrics/x")[0] == 404
    status, headers, _ = get(port, "/metrics", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = get(port, "/livez", method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == "3"
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on


# Speaks the channel at once (a `stats` line), so it is ready only when it says so: when the
# file argv[1] exists; it exits 0 when argv[2] exists.
GATE = r"""
import os, socket, sys, time
s = socket.socket(fileno=int(os.environ["MEMWARDEN_FD"]))
s.sendall(b'{"type":"stats"}\n')
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
s.sendall(b'{"type":"ready"}\n')
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
"""


def test_readyz_and_check_follow_every_worker_having_a_ready_generation(memwarden,
                                                                        tmp_path) -> None:
    go, leave, sock = tmp_path / "go", tmp_path / "leave", tmp_path / "ctl.sock"
    (tmp_path / "m.toml").write_text(f"""
ready_after = "0.1s"
[[worker]]
name = "steady"
command = ["sleep", "600"]
[[worker]]
name = "gate"
command = {json.dumps([sys.executable, "-c", GATE, str(go), str(leave)])}
""")
    m = memwarden("run", "--config", str(tmp_path / "m.toml"), "--metrics", ":0",
                  "--control", str(sock), "--snapshots", "")
    port = metrics_port(m)

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisor", "status", "--check", *args,
                               "--control", str(sock)], capture_output=True, text=True,
                              timeout=30)

    wait_until(lambda: "'steady'" not in get(port, "/readyz")[2].decode()
               and "steady" in control.ask(str(sock), control.Status()).started,
               what="steady ready")
    status, _, body = get(port, "/readyz")
    assert status == 503
    assert body.decode() == ("not ready: worker 'gate' has no ready generation (generation 1 "
                             "starting)\n")
    r = check()
    assert r.returncode == 3 and r.stdout.startswith("not ready: worker 'gate'"), r
    assert check("live").returncode == 0
    assert get(port, "/livez")[0] == 200

    go.touch()
    wait_until(lambda: get(port, "/readyz")[0] == 200, what="/readyz 200 once gate is ready")
    r = check()
    assert r.returncode == 0 and r.stdout.startswith("ready: 2 worker(s)"), r
    ready = families(get(port, "/metrics")[2].decode())["memwarden_worker_ready"]
    assert {s.labels["worker"]: s.value for s in ready.samples} == {"steady": 1, "gate": 1}

    leave.touch()  # gate ends by itself; under --restart never it stays ended
    wait_until(lambda: get(port, "/readyz")[0] == 503, what="/readyz 503 once gate ended")
    assert "worker 'gate' has no ready generation (none running)" in \
        get(port, "/readyz")[2].decode()
    assert check().returncode == 3
    ready = families(get(port, "/metrics")[2].decode())["memwarden_worker_ready"]
    assert {s.labels["worker"]: s.value for s in ready.samples} == {"steady": 1, "gate": 0}
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on


def test_check_without_a_memwarden_exits_1(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "supervisor", "status", "--check", "--control",
                        str(tmp_path / "none.sock")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no memwarden answers" in r.stderr


def test_livez_flips_when_the_sampler_stops() -> None:
    cfg = Config(command=["true"])
    policy = Policy(policy_settings(cfg), [worker_settings(s) for s in specs(cfg)])
    sampler = Sampler(interval_s=0.001, discover_interval_s=0.1, ring_seconds=1.0,
                      thresholds=resolve_thresholds(cfg, None), on_change=lambda c: None)
    health = Health(sampler, policy, 0.001, stale_s=0.3)
    sock = endpoint.open_socket("127.0.0.1:0")
    port = sock.getsockname()[1]

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(endpoint.serve_site, sock, endpoint.Site(health, None))

            async def fetch(path: str) -> tuple[int, bytes]:
                status, _, body = await anyio.to_thread.run_sync(get, port, path)
                return status, body

            sampler.start()
            try:
                with anyio.fail_after(20):
                    while sampler.stats.ticks < 10:
                        await anyio.sleep(0.01)
                    assert (await fetch("/livez")) == (200, b"ok\n")
                    assert (await fetch("/metrics"))[0] == 404  # not served without figures
            finally:
                sampler.stop()
            with anyio.fail_after(20):
                while (answer := await fetch("/livez"))[0] != 503:
                    await anyio.sleep(0.05)
            assert answer[1].startswith(b"not live: the sampler has not ticked for ")
            assert (await fetch("/readyz"))[0] == 503
            tg.cancel_scope.cancel()

    anyio.run(main)


def _reply(**fields: object) -> control.Reply:
    members = [control.Member(pid=100 + i, name=f"p{i}", rss=(i + 1) * 10_000_000,
                              pss=(i + 1) * 9_000_000 if i % 2 else None) for i in range(7)]
    workers = [
        control.WorkerStatus(name="web", generation=3, pid=100, state="ready", profile="high",
                             uptime_s=5.0, rss=46321664, procs=7, level="medium",
                             growth=1.5e6, role="current", members=members),
        control.WorkerStatus(name="web", generation=4, pid=200, state="starting",
                             profile="high", uptime_s=0.5, rss=1000, role="pending"),
        control.WorkerStatus(name="web", generation=1, pid=300, state="retiring",
                             profile="normal", uptime_s=90.0, rss=2_000_000, level="high",
                             role="retiring"),
        control.WorkerStatus(name="web", generation=2, pid=400, state="retiring",
                             profile="normal", uptime_s=60.0, rss=3_000_000, level="critical",
                             role="retiring"),
    ]
    return control.Reply(ok=True, workers=workers, ticks=12_345_678_901, late=3, missed=1,
                         live=True, ready=True, started={"web": 4, "idle": 1},
                         snapshots_written=10_000_001, snapshots_dropped=0, interval_s=0.001,
                         limit=2**33 + 1, **fields)  # type: ignore[arg-type]


def test_the_collector_merges_roles_and_bounds_the_processes() -> None:
    counts = metrics.EventCounts()
    counts(Event(t=0.0, type="exit", worker="web", oom_kill=True))
    counts(Event(t=0.0, type="level"))
    body, content_type = metrics.Exposition(_reply, counts).render("")
    assert content_type.startswith("text/plain; version=0.0.4")
    found = families(body.decode())
    assert found["memwarden_sampler_ticks"].samples[0].value == 12_345_678_901
    assert found["memwarden_limit_bytes"].samples[0].value == 2**33 + 1
    assert found["memwarden_snapshot_records_written"].samples[0].value == 10_000_001
    rss = {s.labels["role"]: s.value for s in found["memwarden_worker_rss_bytes"].samples}
    assert rss == {"current": 46321664, "pending": 1000, "retiring": 5_000_000}
    level = {s.labels["role"]: s.value for s in found["memwarden_worker_level"].samples}
    assert level == {"current": 1, "retiring": 3}  # the pending one has no level yet
    gen = {s.labels["role"]: s.value for s in found["memwarden_worker_generation"].samples}
    assert gen == {"current": 3, "pending": 4, "retiring": 2}
    processes = found["memwarden_process_rss_bytes"].samples
    assert [int(s.labels["pid"]) for s in processes] == [106, 105, 104, 103, 102]
    assert processes[0].labels == {"worker": "web", "role": "current", "pid": "106",
                                   "name": "p6"}
    assert [int(s.labels["pid"]) for s in found["memwarden_process_pss_bytes"].samples] == \
        [105, 103]
    oom = {s.labels["worker"]: s.value for s in found["memwarden_oom_kills"].samples}
    assert oom == {"web": 1, "idle": 0}
    events = {(s.labels["worker"], s.labels["type"]): s.value
              for s in found["memwarden_events"].samples}
    assert events == {("web", "exit"): 1, ("", "level"): 1}
    ready = {s.labels["worker"]: s.value for s in found["memwarden_worker_ready"].samples}
    assert ready == {"web": 1, "idle": 0}


def test_requests_that_are_not_http_get_an_answer() -> None:
    site = endpoint.Site(Health(_Ticking(), _NoWorkers(), 0.001), lambda accept: (b"x", "t"))
    for data, status in ((b"GARBAGE\r\n\r\n", 400), (b"GET /metrics", 400),
                         (b"GET /" + b"a" * endpoint.MAX_HEAD, 431)):
        try:
            endpoint.parse_head(data)
        except endpoint.BadRequest as e:
            assert e.status == status
        else:
            raise AssertionError(data)
    method, path, headers = endpoint.parse_head(
        b"GET /readyz?verbose HTTP/1.1\r\nHost: x\r\nACCEPT: text/plain\r\n\r\n")
    assert (method, path, headers["accept"]) == ("GET", "/readyz", "text/plain")
    assert site.respond("GET", "/readyz", {}).status == 200
    assert site.respond("DELETE", "/livez", {}).status == 405
    assert site.respond("GET", "/", {}).body.startswith(b"not found; memwarden serves")


def test_a_client_that_sends_nothing_useful_is_answered_and_serving_goes_on(memwarden) -> None:
    m = memwarden("run", "--metrics", "127.0.0.1:0", "--snapshots", "", "--control", "",
                  "--", "sleep", "600")
    port = metrics_port(m)
    for data in (b"\x00\xff garbage\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"x" * 9000):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            answer = s.recv(4096)
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer
    assert get(port, "/livez")[0] == 200
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    assert "Traceback" not in m.stderr()


class _Stats:
    def __init__(self) -> None:
        self.ticks = 0


class _Ticking:
    """A sampler whose tick count moves at every look."""

    def __init__(self) -> None:
        self._stats = _Stats()

    @property
    def stats(self) -> _Stats:
        self._stats.ticks += 1
        return self._stats


class _NoWorkers:
    def workers(self) -> list[str]:
        return []

    def generations(self) -> list[object]:
        return []

    def ending(self, worker: str) -> str | None:
        return None


def test_health_judges_a_still_tick_count_only_after_the_stale_time() -> None:
    sampler = _Ticking()
    health = Health(sampler, _NoWorkers(), 0.001, stale_s=5.0)
    assert health.stale_s == 5.0 and Health(sampler, _NoWorkers(), 1.0).stale_s == 10.0
    still = _Stats()
    sampler._stats = still

    class Still:
        stats = still

    health = Health(Still(), _NoWorkers(), 0.001, stale_s=5.0)
    assert health.live(100.0).ok  # first look: nothing to compare with
    assert health.live(105.0).ok
    verdict = health.live(105.1)
    assert not verdict.ok and "has not ticked for 5.1s" in verdict.why
    still.ticks += 1
    assert health.live(105.2).ok


def test_listeners_serve_is_the_only_accept_loop() -> None:
    # The endpoint has no accept loop of its own: the connection cap and the EMFILE back-off
    # of `listeners.serve` apply to it too.
    import inspect

    assert "listeners.serve(" in inspect.getsource(endpoint.serve_site)
    assert "accept(" not in inspect.getsource(endpoint)
    assert listeners.MAX_CONNECTIONS == 32
