"""Trims: ordering and failure isolation, and memory really leaving the process."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.workers.conftest import Spawner
from workers.client import Client
from workers.protocol import Level
from workers.trim import Trimmer, TrimPolicy, rebuild_after_drop

pytestmark = pytest.mark.timeout(120)


def test_callbacks_run_by_priority_then_registration_and_failures_are_isolated() -> None:
    order: list[str] = []
    trimmer = Trimmer()

    def named(name: str, dropped: int):  # type: ignore[no-untyped-def]
        def cb(fraction: float) -> int:
            order.append(name)
            return dropped
        return cb

    def broken(fraction: float) -> int:
        order.append("broken")
        raise RuntimeError("boom")

    trimmer.add_callback(named("late", 1), "late", priority=10)
    trimmer.add_callback(named("first", 2), "first", priority=0)
    trimmer.add_callback(broken, "broken", priority=5)
    trimmer.add_callback(named("second", 3), "second", priority=0)
    result = trimmer.run(0.1, "test")
    assert order == ["first", "second", "broken", "late"]
    assert result.dropped == 6 and result.reason == "test"
    assert result.rss_before > 0 and result.rss_after > 0


def test_a_bad_fraction_is_refused() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        Trimmer().run(1.5)
    with pytest.raises(ValueError, match="medium"):
        TrimPolicy(medium=2)


def test_policy_fractions_by_level() -> None:
    policy = TrimPolicy()
    assert policy.fraction(Level.LOW) == 0
    assert policy.fraction(Level.MEDIUM) < policy.fraction(Level.HIGH) \
        < policy.fraction(Level.CRITICAL)


def test_dropped_stores_unregister_themselves() -> None:
    from workers.bounded import RecentStore

    client = Client()
    store = RecentStore(10, client=client)
    assert client.trimmer.sizes() == {"objects": 0}
    del store
    assert client.trimmer.sizes() == {}


def test_rebuild_only_after_a_large_drop() -> None:
    d = {i: i for i in range(100)}
    assert rebuild_after_drop(d, 10, 110) is d
    rebuilt = rebuild_after_drop(d, 50, 150)
    assert rebuilt == d and rebuilt is not d


# Runs in a fresh interpreter, so that the RSS figures are this store's alone.
ONE_MILLION = """
import json, sys
from workers.client import Client
from workers.bounded import RecentStore
from workers.memory import rss

client = Client()
store = RecentStore(2_000_000, follow=None, client=client)
before = rss()
for i in range(1_000_000):
    store.put(i, (i, "value-%d" % i))
filled = rss()
result = client.trimmer.run(0.5, "test")
print(json.dumps({"before": before, "filled": filled, "after": rss(),
                  "dropped": result.dropped, "left": len(store)}))
"""


def test_trimming_the_oldest_half_of_1m_objects_returns_the_memory(spawn: Spawner) -> None:
    proc, _ = spawn.python(ONE_MILLION, channel=False, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=100)
    assert proc.returncode == 0
    r = json.loads(out)
    held = r["filled"] - r["before"]
    returned = r["filled"] - r["after"]
    assert r["dropped"] == 500_000 and r["left"] == 500_000
    assert held > 50_000_000, r  # sanity: the store really occupied memory
    # The dropped half held about held/2; at least half of that must leave the RSS.
    assert returned >= 0.5 * held / 2, f"returned {returned} of {held} held: {r}"


def test_malloc_trim_is_available_on_glibc() -> None:
    import os

    from workers import memory

    glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    assert (memory.glibc() is not None) == glibc
    assert isinstance(memory.malloc_trim(), bool)
    if glibc:
        assert memory.set_mmap_threshold(1 << 20) is True
    with pytest.raises(ValueError):
        memory.set_mmap_threshold(0)


def test_rss_is_fresh_after_fork() -> None:
    import os

    from workers import memory

    parent = memory.rss()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            blob = b"x" * 50_000_000
            os.write(w, str(memory.rss() - len(blob)).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        child = int(os.read(r, 100))
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert parent > 0 and child > 0
    # The child's figure includes its 50 MB, so its own statm was read, not ours.
    assert abs(child - parent) < 40_000_000
