"""systemd notifications, heard on a real NOTIFY_SOCKET datagram socket."""

from __future__ import annotations

import os
import signal
import socket
import time
from types import SimpleNamespace

import anyio
import pytest

from supervisor.core.policy import Policy
from supervisor.faces.sdnotify import Notifier
from supervisor.loop.health import Health
from supervisor.sensing.sampler import Sampler
from supervisor.settings.config import Config
from supervisor.settings.specs import policy_settings, specs, worker_settings
from supervisor.settings.specs import thresholds as resolve_thresholds
from tests.conftest import python, wait_until


class Systemd:
    """The service manager's end: a datagram socket that keeps every message it gets."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def heard(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return [m for _, m in self.messages]
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self) -> list[str]:
        return [f for m in self.heard() for f in m.split("\n")]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    s = Systemd(str(tmp_path / "notify.sock"))
    yield s
    s.close()


def test_ready_status_watchdog_and_stopping_reach_systemd(memwarden, systemd,
                                                          tmp_path) -> None:
    env_seen = tmp_path / "env"
    worker = (f"import os, time; open({str(env_seen)!r}, 'w').write(' '.join(k for k in "
              "os.environ if k in ('NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID')) or "
              "'none'); time.sleep(600)")
    m = memwarden("run", "--ready-after", "0.3s", "--snapshots", "", "--control", "",
                  "--", *python(worker), env={
                      "NOTIFY_SOCKET": systemd.sock.getsockname(), "WATCHDOG_USEC": "200000"})
    wait_until(lambda: "READY=1" in systemd.fields(), what="READY=1")
    ready = next(m for m in systemd.heard() if "READY=1" in m)
    assert "STATUS=1 worker(s): worker low (gen 1, ready)" in ready
    wait_until(lambda: systemd.fields().count("WATCHDOG=1") >= 3, what="watchdog pings")
    assert systemd.fields().count("READY=1") == 1
    assert env_seen.read_text() == "none"  # the worker cannot speak to systemd for memwarden
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    fields = systemd.fields()
    assert "STOPPING=1" in fields and "STATUS=stopping" in fields
    extend = next(f for f in fields if f.startswith("EXTEND_TIMEOUT_USEC="))
    assert int(extend.split("=")[1]) == int((2 * 10.0 + 5.0) * 1e6)  # twice the grace + 5s


def test_the_watchdog_stops_when_the_sampler_stops_ticking(systemd) -> None:
    cfg = Config(command=["true"])
    policy = Policy(policy_settings(cfg), [worker_settings(s) for s in specs(cfg)])
    sampler = Sampler(interval_s=0.001, discover_interval_s=0.1, ring_seconds=1.0,
                      thresholds=resolve_thresholds(cfg, None), on_change=lambda c: None)
    health = Health(sampler, policy, 0.001, stale_s=0.3)
    notifier = Notifier(systemd.sock.getsockname(), watchdog_s=0.1)
    arbiter = SimpleNamespace(health=health)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            sampler.start()
            try:
                tg.start_soon(notifier.watchdog, arbiter)
                with anyio.fail_after(20):
                    while systemd.fields().count("WATCHDOG=1") < 5:
                        await anyio.sleep(0.02)
            finally:
                sampler.stop()
            stopped = time.monotonic()
            # Pings go on for the stale time at most, then never again: wait for a second
            # without one (they come every 50 ms while the sampler ticks).
            with anyio.fail_after(20):
                while True:
                    systemd.heard()
                    last = systemd.messages[-1][0]
                    if time.monotonic() - last > 1.0:
                        break
                    await anyio.sleep(0.05)
            assert last - stopped < 0.3 + 0.5
            tg.cancel_scope.cancel()

    anyio.run(main)
    notifier.close()


def test_the_environment_is_read_once_and_removed() -> None:
    env = {"NOTIFY_SOCKET": "@memwarden-test", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": str(os.getpid()), "OTHER": "x"}
    n = Notifier.from_environ(env)
    assert n is not None and n.address == "\0memwarden-test" and n.watchdog_s == 30.0
    assert env == {"OTHER": "x"}
    n.close()
    # A watchdog meant for another process (the pid systemd started, before an exec) is not ours.
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000",
                               "WATCHDOG_PID": "1"})
    assert n is not None and n.watchdog_s is None
    n.close()
    assert Notifier.from_environ({"WATCHDOG_USEC": "1000"}) is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:123"}) is None


def test_a_socket_nobody_listens_on_costs_one_log_line(tmp_path, caplog) -> None:
    n = Notifier(str(tmp_path / "gone.sock"))
    assert not n.send("READY=1") and not n.send("STATUS=x")
    assert sum("cannot notify systemd" in r.getMessage() for r in caplog.records) == 1
    n.close()
