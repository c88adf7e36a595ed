"""Events: each lifecycle or policy event is one typed record, one log line, one snapshot line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from snapshots.schema import Event, Record

log = logging.getLogger("memwarden")

_LOG_LEVEL = {
    "exit": logging.INFO,
    "give_up": logging.ERROR,
    "limits_too_small": logging.ERROR,
    "spawn_failed": logging.ERROR,
    "channel_error": logging.WARNING,
    "kill": logging.WARNING,
    "break_before_make": logging.WARNING,
    "baseline_high": logging.WARNING,
    "dropped": logging.WARNING,
    "stats": logging.DEBUG,
    "signal": logging.DEBUG,
}


class Sink(Protocol):
    def submit(self, record: Record) -> bool: ...


class EventLog:
    """Builds Event records, logs them as one readable line, hands them to the snapshot writer."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink
        self.listeners: list[Callable[[Event], None]] = []

    def emit(self, type: str, message: str, **fields: Any) -> Event:
        """Record that `type` happened; `message` is the whole human sentence."""
        event = Event(t=time.time(), type=type, message=message, **fields)
        who = _who(event)
        log.log(_LOG_LEVEL.get(type, logging.INFO), "%s%s", who, message)
        if self.sink is not None:
            self.sink.submit(event)
        for listener in self.listeners:
            listener(event)
        return event


def _who(event: Event) -> str:
    if not event.worker:
        return ""
    parts = [event.worker]
    if event.generation:
        parts.append(f"gen {event.generation}")
    if event.pid:
        parts.append(f"pid {event.pid}")
    return f"[{' '.join(parts)}] "


def setup_logging(level: str) -> None:
    """One line per event on stderr, prefixed so it stands apart from the worker's output."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("memwarden: %(message)s"))
    root = logging.getLogger("memwarden")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
