"""Events and memwarden's log: each event is one typed record, one log line, one snapshot line.

Every logger of memwarden is `memwarden.<module>` (`memwarden.arbiter`,
`memwarden.snapshots.writer`), so that one handler sees all of them. The log goes to
standard error in one of two forms (`--log-format`): `text`, a line a person reads
(`memwarden: [crawler gen 2 pid 812] ready ...`, `memwarden: warning: ...`), or `json`,
one object per line for a log pipeline (Loki, Fluent Bit, Vector) with `time`, `level`,
`logger`, `message` and, for an event, `event`, `worker`, `generation` and `pid`.
"""

from __future__ import annotations

import datetime
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import msgspec

from snapshots.schema import Event, Record

log = logging.getLogger("memwarden.events")

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


#: Log lines that one worker's messages (`trimmed`, `report`) may cause per interval; past
#: them the events are still recorded in the snapshots, only not logged, and the next line
#: logged says how many were left out. Measured before: 5,407 `trimmed` messages made 5,417
#: log lines in 9 s.
WORKER_LINES = 10
WORKER_INTERVAL_S = 10.0


class _Quota:
    """One worker's log lines in the current interval, and those left out."""

    __slots__ = ("left_out", "lines", "since")

    def __init__(self) -> None:
        self.since = -WORKER_INTERVAL_S
        self.lines = 0
        self.left_out = 0


class EventLog:
    """Builds Event records, logs them as one readable line, hands them to the snapshot writer."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink
        self.listeners: list[Callable[[Event], None]] = []
        self._quotas: dict[str, _Quota] = {}

    def emit(self, type: str, message: str, *, quota: str | None = None,
             **fields: Any) -> Event:
        """Record that `type` happened; `message` is the whole human sentence.

        With `quota` (the worker whose message caused the event), the log line counts
        against that worker's `WORKER_LINES` per `WORKER_INTERVAL_S`; the event is
        recorded either way.
        """
        event = Event(t=time.time(), type=type, message=message, **fields)
        note = self._allowed(quota) if quota is not None else ""
        if note is not None:
            log.log(_LOG_LEVEL.get(type, logging.INFO), "%s%s", message, note, extra={
                "event": event.type, "worker": event.worker or None,
                "generation": event.generation or None, "pid": event.pid or None})
        if self.sink is not None:
            self.sink.submit(event)
        for listener in self.listeners:
            listener(event)
        return event

    def _allowed(self, key: str) -> str | None:
        """None when `key`'s quota is spent (the line is left out), else what the line adds:
        "" or how many lines were left out before it."""
        quota = self._quotas.get(key)
        if quota is None:
            if len(self._quotas) >= 4096:  # workers come and go: forget the quiet ones
                self._quotas.clear()
            quota = self._quotas[key] = _Quota()
        now = time.monotonic()
        if now - quota.since >= WORKER_INTERVAL_S:
            quota.since, quota.lines = now, 0
        if quota.lines >= WORKER_LINES:
            quota.left_out += 1
            return None
        quota.lines += 1
        note = (f" ({quota.left_out} earlier message(s) of {key} not logged: more than "
                f"{WORKER_LINES} in {WORKER_INTERVAL_S:g}s; all are in the snapshots)"
                if quota.left_out else "")
        quota.left_out = 0
        return note


LogFormat = Literal["text", "json"]


class TextFormatter(logging.Formatter):
    """`memwarden: [worker gen N pid P] message`; warnings and errors say so after the
    prefix, so that they stand apart from the worker's own output on the same terminal."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else (
            "warning: " if record.levelno < logging.ERROR else "error: ")
        text = f"memwarden: {level}{_who(record)}{_one_line(record.getMessage())}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class LogLine(msgspec.Struct, omit_defaults=True):
    """One line of the JSON log (`--log-format json`)."""

    time: str
    level: str
    logger: str
    message: str
    event: str | None = None
    worker: str | None = None
    generation: int | None = None
    pid: int | None = None
    exception: str | None = None


class JsonFormatter(logging.Formatter):
    """One msgspec-encoded `LogLine` per record; a message spanning lines stays one line."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line = LogLine(
            time=stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            level=record.levelname.lower(), logger=record.name, message=record.getMessage(),
            event=getattr(record, "event", None), worker=getattr(record, "worker", None),
            generation=getattr(record, "generation", None), pid=getattr(record, "pid", None),
            exception=self.formatException(record.exc_info) if record.exc_info else None)
        return self._encoder.encode(line).decode()


#: What a line of the text log must not carry, whoever wrote the message: line breaks (a
#: forged `memwarden: [...]` line), NUL, and the escape sequences a terminal obeys.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    """`text` with control characters escaped (`\\x1b`): the text log's last safeguard;
    untrusted text is escaped where it enters a message too (`workers.protocol.escape`)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


def _who(record: logging.LogRecord) -> str:
    worker = getattr(record, "worker", None)
    if not worker:
        return ""
    parts = [worker]
    if generation := getattr(record, "generation", None):
        parts.append(f"gen {generation}")
    if pid := getattr(record, "pid", None):
        parts.append(f"pid {pid}")
    return f"[{' '.join(parts)}] "


def setup_logging(level: str, form: LogFormat = "text") -> None:
    """Send every `memwarden.*` logger to standard error, at `level`, in `form`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    root = logging.getLogger("memwarden")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
