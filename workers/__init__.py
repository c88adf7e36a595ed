"""memwarden's worker library: hear the supervisor, keep state bounded, give memory back.

    import workers

    client = workers.connect()          # no-op without a supervisor (no MEMWARDEN_FD)
    objects = workers.RecentStore()      # bounded by the supervisor's max_objects
    vectors = workers.VectorStore(384, 100_000)   # float16, least recently used evicted
    pages = workers.StreamBuffer(64_000_000)      # producers wait at 64 MB
    while True:
        objects.put(key, value)
        workers.checkpoint()             # pending trims run here, at a safe point

The names below are loaded on first use, so `import workers` itself costs next to
nothing; the client pulls in only the standard library and msgspec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.automaton import Automaton
    from workers.bounded import LRU, History, RecentStore
    from workers.client import Client, checkpoint, client, connect
    from workers.gcwatch import freeze
    from workers.investigate import Investigator
    from workers.memory import malloc_trim, rss, set_mmap_threshold
    from workers.protocol import Level, Limits
    from workers.stream import StreamBuffer
    from workers.trim import TrimPolicy
    from workers.vectors import VectorStore

_WHERE = {
    "Automaton": "workers.automaton",
    "LRU": "workers.bounded",
    "History": "workers.bounded",
    "RecentStore": "workers.bounded",
    "Client": "workers.client",
    "checkpoint": "workers.client",
    "client": "workers.client",
    "connect": "workers.client",
    "freeze": "workers.gcwatch",
    "Investigator": "workers.investigate",
    "malloc_trim": "workers.memory",
    "rss": "workers.memory",
    "set_mmap_threshold": "workers.memory",
    "Level": "workers.protocol",
    "Limits": "workers.protocol",
    "TrimPolicy": "workers.trim",
    "StreamBuffer": "workers.stream",
    "VectorStore": "workers.vectors",
}

__all__ = [
    "LRU",
    "Automaton",
    "Client",
    "History",
    "Investigator",
    "Level",
    "Limits",
    "RecentStore",
    "StreamBuffer",
    "TrimPolicy",
    "VectorStore",
    "checkpoint",
    "client",
    "connect",
    "freeze",
    "malloc_trim",
    "rss",
    "set_mmap_threshold",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
