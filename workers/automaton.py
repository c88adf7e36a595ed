"""The Automaton: a worker whose state is a set of objects, an execution history and a
step loop, kept bounded by the limits its supervisor gives.

    class Crawler(Automaton):
        def step(self) -> None:
            page = fetch_next()
            self.put({"id": page.url, "links": page.links})
            self.record({"fetched": page.url})

    Crawler("automaton.jsonl").run()

or `Automaton("automaton.jsonl", step=lambda a: ...).run(duration_s=60)`.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

from workers import memory, statefile
from workers._log import get_logger
from workers.bounded import History, RecentStore
from workers.client import Client
from workers.client import client as default_client
from workers.gcwatch import freeze
from workers.protocol import Limits, Trimmed

log = get_logger(__name__)

#: Share of the objects dropped when the worker passes its own threshold.
THRESHOLD_TRIM = 0.10
#: The file is compacted once it holds this many lines per live object (plus slack).
COMPACT_RATIO = 3
COMPACT_SLACK = 1000
#: At most this many duplicate ids are remembered for reports.
MAX_DUPLICATES = 1000

Step = Callable[["Automaton"], Any]


class Automaton:
    """Objects (by id, most recent kept), a history, a step loop, a JSONL state file.

    `limits=None` follows the client's limits (the supervisor's profile, changed live by
    `limits` messages); a `Limits` value fixes them. Subclass and override `step`, or
    pass `step=fn`; a step that returns False ends `run`. `sync=True` fsyncs every
    change (survives power loss, not only a crash). `freeze=True` moves the loaded state
    into the collector's permanent generation (`gc.freeze()`), which makes later
    collections nearly free.
    """

    def __init__(
        self,
        path: str = "automaton.jsonl",
        *,
        step: Step | None = None,
        limits: Limits | None = None,
        client: Client | None = None,
        name: str = "automaton",
        sync: bool = False,
        freeze: bool = False,
    ) -> None:
        self.client = client or default_client()
        self.path = path
        self.name = name
        self._fixed = limits
        self._step_fn = step
        follow_objects = None if limits else "max_objects"
        follow_history = None if limits else "max_history"
        lim = self.limits
        self.objects: RecentStore[Any, dict[str, Any]] = RecentStore(
            lim.max_objects, name=f"{name}.objects", follow=follow_objects, client=self.client)
        self.history: History[Any] = History(
            lim.max_history, name=f"{name}.history", follow=follow_history, client=self.client)
        self.duplicates: list[Any] = []
        self.steps = 0
        self._revs: dict[Any, int] = {}
        self._file = statefile.StateFile(path, sync=sync)
        self._freeze = freeze
        self._file_lock = threading.RLock()
        self._loaded = False
        self._trims_seen = 0
        # Runs after the stores' own trims (higher priority number = later): the file
        # must then be compacted, or a restart would load the dropped objects again.
        self.client.add_trim(self._after_trim, name=f"{name}.save", priority=1000)
        if path not in self.client.state_files:
            self.client.state_files.append(path)

    @property
    def limits(self) -> Limits:
        """The limits in force now."""
        return self._fixed or self.client.limits

    # -- state ------------------------------------------------------------------------

    def load(self) -> int:
        """Load the most recent `max_objects` from the file; return how many.

        A torn last line is ignored (and cut off); duplicate ids are reported.
        """
        with self._file_lock:
            loaded = statefile.load(self.path, self.limits.max_objects)
            for oid, (obj, rev) in loaded.objects.items():
                self.objects.put(oid, obj)
                self._revs[oid] = rev
            for oid in loaded.duplicates:
                self._duplicate(oid, "in the state file")
            log.info("%s: loaded %s objects from %s (%s lines, %s malformed%s)", self.name,
                     len(self.objects), self.path, loaded.lines, loaded.malformed,
                     ", torn last line dropped" if loaded.torn else "")
            self._file.open(loaded.lines - (1 if loaded.torn else 0))
            self._loaded = True
        del loaded
        if self._freeze:
            freeze()
        return len(self.objects)

    def _duplicate(self, oid: Any, where: str) -> None:
        if len(self.duplicates) < MAX_DUPLICATES:
            self.duplicates.append(oid)
        log.warning("%s: duplicate object id %r %s; the later object wins", self.name, oid,
                    where)

    def add(self, obj: dict[str, Any]) -> None:
        """Add a new object (it must have an "id"); an id already held is reported as a
        duplicate and the new object replaces the old."""
        oid = _id_of(obj)
        if oid in self.objects:
            self._duplicate(oid, "added twice")
        self._write(oid, obj)

    def put(self, obj: dict[str, Any]) -> None:
        """Insert or update an object by its "id"; it becomes the most recent."""
        self._write(_id_of(obj), obj)

    def get(self, oid: Any) -> dict[str, Any] | None:
        """Return the object with id `oid`, or None."""
        return self.objects.get(oid)

    def remove(self, oid: Any) -> bool:
        """Remove an object; return whether it was held."""
        with self._file_lock:
            held = self.objects.pop(oid) is not None
            self._revs.pop(oid, None)
            if held:
                self._ensure_open()
                self._file.append(statefile.encode({"id": oid, statefile.DELETED: True}, 0))
        return held

    def record(self, entry: Any) -> None:
        """Append `entry` to the execution history (kept in memory, bounded)."""
        self.history.append(entry)

    def _write(self, oid: Any, obj: dict[str, Any]) -> None:
        with self._file_lock:
            self._ensure_open()
            rev = self._revs.get(oid, -1) + 1
            self._file.append(statefile.encode(obj, rev))
            self.objects.put(oid, obj)
            self._revs[oid] = rev
            if len(self._revs) > 2 * self.objects.maxlen:
                # Evicted objects leave the store in batches; forget their revisions too.
                self._revs = {k: self._revs.get(k, 0) for k in self.objects}
            if self._file.lines > COMPACT_RATIO * max(len(self.objects), 1) + COMPACT_SLACK:
                self.save()

    def _ensure_open(self) -> None:
        if not self._loaded:
            self.load()

    def save(self) -> int:
        """Compact the file to the objects held now (atomic rename); return how many."""
        with self._file_lock:
            self._ensure_open()
            items = self.objects.items()
            n = self._file.compact(statefile.encode(o, self._revs.get(k, 0)) for k, o in items)
        log.debug("%s: saved %s objects to %s", self.name, n, self.path)
        return n

    # -- trimming ---------------------------------------------------------------------

    def trim(self, fraction: float = THRESHOLD_TRIM, reason: str = "threshold") -> Trimmed:
        """Drop the oldest `fraction` of objects and history, save, give memory back,
        and report `trimmed` to the supervisor."""
        return self.client.trim(fraction, reason)

    def _after_trim(self, fraction: float) -> int:
        if self._loaded and fraction > 0:
            self.save()
        return 0

    # -- the loop ---------------------------------------------------------------------

    def step(self) -> Any:
        """One unit of work; override, or pass `step=` to the constructor."""
        if self._step_fn is None:
            raise NotImplementedError("override Automaton.step or pass step= to the constructor")
        return self._step_fn(self)

    def run(self, steps: int | None = None, duration_s: float | None = None,
            interval_s: float = 0.0) -> int:
        """Load, send `ready`, then step until `steps` or `duration_s` is reached, a step
        returns False, or the supervisor asks to shut down. Between steps: pending trims
        and limits (the safe point), gc every `gc_interval_s`, and every
        `trim_interval_s` a 10 % trim when RSS is above `trim_threshold_bytes`.
        Returns the number of steps run. The state is saved on the way out.
        """
        self._ensure_open()
        self.client.ready()
        start = time.monotonic()
        next_gc = start + self.limits.gc_interval_s
        next_check = start + self.limits.trim_interval_s
        done = 0
        try:
            while steps is None or done < steps:
                self.client.checkpoint()
                if self.client.shutdown_requested.is_set():
                    log.info("%s: shutting down at the supervisor's request", self.name)
                    break
                if self.step() is False:
                    break
                done += 1
                self.steps += 1
                now = time.monotonic()
                if duration_s is not None and now - start >= duration_s:
                    break
                if now >= next_gc:
                    gc.collect()
                    next_gc = now + self.limits.gc_interval_s
                if now >= next_check:
                    if memory.rss() > self.limits.trim_threshold_bytes:
                        self.trim(THRESHOLD_TRIM, "threshold")
                    next_check = now + self.limits.trim_interval_s
                if interval_s > 0:
                    time.sleep(interval_s)
        finally:
            self.save()
        return done

    def close(self) -> None:
        """Save, close the file and unregister from the client."""
        if self._loaded:
            self.save()
        self._file.close()
        self.client.trimmer.remove(self._after_trim)
        self.client.trimmer.remove(self.objects)
        self.client.trimmer.remove(self.history)
        if self.path in self.client.state_files:
            self.client.state_files.remove(self.path)

    def __enter__(self) -> Automaton:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _id_of(obj: dict[str, Any]) -> Any:
    try:
        oid = obj["id"]
    except (KeyError, TypeError):
        raise ValueError(f"an Automaton object must be a dict with an 'id'; got {obj!r:.80}") \
            from None
    if not isinstance(oid, str | int) or isinstance(oid, bool):
        raise ValueError(f"object id must be a string or an integer, got {oid!r:.80}")
    return oid


__all__ = ["Automaton"]
