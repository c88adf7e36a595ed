"""Bounded stores: bounds, oldest-first trims, limits, idle expiry."""

from __future__ import annotations

import pytest

from workers.bounded import LRU, History, RecentStore
from workers.client import Client
from workers.protocol import Limits


@pytest.fixture
def client() -> Client:
    return Client(limits=Limits(max_objects=640, max_history=10))


def test_recent_store_follows_the_client_limits_and_keeps_the_newest(client: Client) -> None:
    store: RecentStore[int, int] = RecentStore(client=client)
    assert store.maxlen == 640
    for i in range(10_000):
        store.put(i, i)
        assert len(store) <= 640
    assert len(store) >= 640 - 640 // 64
    assert 9999 in store and 0 not in store
    assert store.keys() == sorted(store.keys())
    client.trimmer.apply_limits(Limits(max_objects=100))
    assert store.maxlen == 100 and len(store) == 100 and store.keys()[-1] == 9999


def test_recent_store_update_makes_an_entry_recent(client: Client) -> None:
    store: RecentStore[str, int] = RecentStore(3, follow=None, client=client)
    store.put("a", 1)
    store.put("b", 2)
    store.put("a", 3)
    assert store.keys() == ["b", "a"] and store["a"] == 3
    client.trimmer.apply_limits(Limits(max_objects=1))
    assert store.maxlen == 3  # follow=None: fixed


def test_recent_store_trims_the_oldest_fraction(client: Client) -> None:
    store: RecentStore[int, int] = RecentStore(1000, follow=None, client=client)
    for i in range(1000):
        store[i] = i
    assert store.trim(0.5) == 500
    assert store.keys() == list(range(500, 1000))
    assert store.trim(0.0) == 0
    assert client.trimmer.totals() == (500, 0)


def test_bad_bounds_are_refused(client: Client) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentStore(0, client=client)
    with pytest.raises(ValueError, match="Limits field"):
        History(follow=None, client=client)
    with pytest.raises(ValueError, match="ttl_s"):
        LRU(10, ttl_s=0, client=client)


def test_history_keeps_the_last_entries(client: Client) -> None:
    history: History[int] = History(client=client)
    for i in range(25):
        history.append(i)
    assert list(history) == list(range(15, 25))
    assert history.trim(0.3) == 3 and history.last(2) == [23, 24]
    client.trimmer.apply_limits(Limits(max_history=4))
    assert list(history) == [21, 22, 23, 24] and history.maxlen == 4
    assert client.trimmer.totals() == (0, 4)


class Clock:
    """A clock the test moves by hand: TTL logic without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lru_evicts_least_recently_used_and_idle_entries(client: Client) -> None:
    clock = Clock()
    closed: list[str] = []
    lru: LRU[str, str] = LRU(3, ttl_s=10, client=client, clock=clock,
                             on_evict=lambda k, v: closed.append(k))
    for key in "abc":
        lru.put(key, key.upper())
    assert lru.get("a") == "A"  # a is now the most recent
    lru.put("d", "D")
    assert closed == ["b"] and "b" not in lru
    clock.now += 5
    lru.get("d")
    clock.now += 6  # a and c idle for 11 s, d for 6 s
    assert lru.expire() == 2 and closed == ["b", "c", "a"]  # c was used before a
    assert len(lru) == 1 and lru.get("d") == "D"
    assert lru.pop("d") == "D" and closed == ["b", "c", "a"]  # pop does not evict
    assert client.trimmer.sizes()["cache"] == 0


def test_lru_trim_drops_least_recently_used(client: Client) -> None:
    lru: LRU[int, int] = LRU(100, client=client)
    for i in range(100):
        lru.put(i, i)
    assert lru.trim(0.25) == 25
    assert 24 not in lru and 25 in lru
    lru.set_maxlen(10)
    assert len(lru) == 10 and 99 in lru
