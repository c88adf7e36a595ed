"""The vector store: bounded, float16, least recently used first, trimmed, reported; its
memory seen from /proc."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.workers.conftest import ROOT
from workers.client import Client
from workers.vectors import VectorStore

pytestmark = pytest.mark.timeout(120)

try:
    import numpy  # noqa: F401

    BACKENDS = ["numpy", "stdlib"]
except ImportError:
    BACKENDS = ["stdlib"]


def unit(dim: int, i: int) -> list[float]:
    v = [0.0] * dim
    v[i % dim] = 1.0
    return v


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def store(backend: str, maxlen: int, dim: int = 8, **kw: object) -> VectorStore[object]:
    return VectorStore(dim, maxlen, backend=backend, client=Client(), **kw)  # type: ignore[arg-type]


def test_at_most_maxlen_least_recently_used_goes_first(backend: str) -> None:
    vs = store(backend, 4)
    for i in range(4):
        vs.add(i, unit(8, i))
    assert vs.get(0) is not None  # used: 1 is now the least recently used
    vs.add(4, unit(8, 4))
    assert len(vs) == 4 and 1 not in vs and set(vs.keys()) == {0, 2, 3, 4}
    assert vs.search(unit(8, 3), k=1) == [(3, pytest.approx(1.0))]
    vs.add(5, unit(8, 5))  # the search hit counted as use: 2 goes
    assert 2 not in vs and 3 in vs


def test_oldest_eviction_ignores_use(backend: str) -> None:
    vs = store(backend, 3, evict="oldest")
    for i in range(3):
        vs.add(i, unit(8, i))
    vs.get(0)
    vs.add(3, unit(8, 3))
    assert vs.keys() == [1, 2, 3]


def test_float16_keeps_the_direction(backend: str) -> None:
    import random

    rng = random.Random(5)
    vs = store(backend, 100, dim=64)
    vectors = {i: [rng.gauss(0, 1) for _ in range(64)] for i in range(100)}
    for i, v in vectors.items():
        vs.add(i, v)
    hits = vs.search(vectors[42], k=3)
    assert hits[0][0] == 42 and hits[0][1] == pytest.approx(1.0, abs=2e-3)
    assert hits[1][1] < hits[0][1]
    back = list(vs.get(42))
    norm = sum(x * x for x in vectors[42]) ** 0.5
    assert back == pytest.approx([x / norm for x in vectors[42]], abs=1e-3)
    assert vs.search(vectors[7], k=2, where=lambda k: k != 7)[0][0] != 7


def test_trim_drops_the_least_used_and_gives_the_slab_back(backend: str) -> None:
    vs = store(backend, 1000, dim=16)
    for i in range(1000):
        vs.add(i, unit(16, i))
    full = vs.nbytes
    assert full == 1000 * 16 * 2
    assert vs.trim(0.5) == 500 and len(vs) == 500
    assert vs.nbytes == 500 * 16 * 2 and 0 not in vs and 999 in vs
    assert vs.search(unit(16, 999 % 16), k=1)[0][1] == pytest.approx(1.0)
    vs.set_maxlen(100)
    assert len(vs) == 100 and vs.nbytes == 100 * 16 * 2
    assert vs.pop(999) is not None and 999 not in vs and len(vs) == 99


def test_bad_vectors_are_refused_with_the_reason(backend: str) -> None:
    vs = store(backend, 10, metric="dot")
    with pytest.raises(ValueError, match="expected 8 floats, got 3"):
        vs.add("a", [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="float16's range"):
        vs.add("a", [1e6] * 8)
    with pytest.raises(ValueError, match="not finite"):
        vs.add("a", [float("nan")] * 8)
    assert len(vs) == 0
    store(backend, 10, metric="dot", dtype="float32").add("a", [1e6] * 8)


def test_registered_for_trims_and_reported_in_stats(backend: str) -> None:
    client = Client()
    vs = VectorStore(4, 50, name="embeddings", backend=backend, client=client)  # type: ignore[arg-type]
    for i in range(50):
        vs.add(i, unit(4, i))
    stats = client.stats()
    assert stats.stores["embeddings"] == 50
    assert stats.store_bytes["embeddings"] == 50 * 4 * 2
    assert client.trim(0.2).dropped == 10 and len(vs) == 40


MEASURE = r"""
import json, sys
from workers.client import Client
from workers.vectors import VectorStore
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
dim, n, dtype, backend = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
vector = [((i * 7919) % 1000) / 1000.0 - 0.5 for i in range(dim)]
keys = list(range(3 * n))   # made before the baseline: only the store's growth counts
vs = VectorStore(dim, n, dtype=dtype, backend=backend, client=Client())
vs.add(-1, vector); vs.pop(-1)   # the backend's own imports happen here
before = rss()
for k in keys[:n]:
    vs.add(k, vector)
full = rss()
for k in keys[n:]:
    vs.add(k, vector)
print(json.dumps({"full": full - before, "after": rss() - before, "len": len(vs),
                  "nbytes": vs.nbytes}))
"""


def measure(dim: int, n: int, dtype: str, backend: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(dim), str(n), dtype, backend],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_float16_halves_the_memory_and_the_bound_holds_in_rss(backend: str) -> None:
    dim, n = 768, 20_000 if backend == "numpy" else 5000  # pure Python packs slowly
    half = measure(dim, n, "float16", backend)
    full = measure(dim, n, "float32", backend)
    assert half["len"] == full["len"] == n
    assert half["nbytes"] * 2 == full["nbytes"] == n * dim * 4
    ratio = half["full"] / full["full"]
    assert 0.45 <= ratio <= 0.56, (half, full)  # the rest is per-key bookkeeping
    # Three times maxlen added: still at most maxlen vectors, RSS about where it was when
    # full (the allocator keeps a few MB of churn).
    assert half["after"] <= half["full"] * 1.15, half
