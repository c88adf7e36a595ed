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

import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterator
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
#: A paced loop further behind its schedule than this starts afresh instead of bursting.
CATCH_UP_S = 1.0

Step = Callable[["Automaton"], Any]


class Automaton:
    """Objects (by id, most recent kept), a history, a step loop, a JSONL state file.

    `limits=None` follows the client's limits (the supervisor's profile, changed live by
    `limits` messages); a `Limits` value fixes them. Subclass and override `step`, or
    pass `step=fn`; a step that returns False ends `run`. `sync=True` fsyncs every
    change (survives power loss, not only a crash). `freeze=True` moves the loaded state
    into the collector's permanent generation (`gc.freeze()`), which makes later
    collections nearly free.

    The state file may be shared with the generation that replaces this one (or that
    this one replaces): every write takes in the other's writes first, and only the
    generation that loaded last compacts (`workers.statefile`, `docs/workers.md`).
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
        self._superseded_said = False
        #: Why the last `run` ended: "steps", "duration", "step", "shutdown" or "SIGTERM".
        self.stop_reason = ""
        self._terminated = False
        # Runs after the stores' own trims (higher priority number = later): the file
        # must then be compacted, or a restart would load the dropped objects again.
        self.client.add_trim(self._after_trim, name=f"{name}.save", priority=1000)
        if path not in self.client.state_files:
            self.client.state_files.append(path)
        self.client.watch(self, name)

    #: The attributes the investigator leaves out (the Automaton's own bookkeeping); what
    #: a subclass adds is walked, so a list it grows outside the stores is named.
    investigate_skip = frozenset({"client", "path", "name", "duplicates", "_fixed", "_step_fn",
                                  "_revs", "_file", "_file_lock"})

    @property
    def limits(self) -> Limits:
        """The limits in force now."""
        return self._fixed or self.client.limits

    # -- state ------------------------------------------------------------------------

    def load(self) -> int:
        """Load the most recent `max_objects` from the file and become its newest loader
        (an older generation still running is then superseded); return how many.

        A torn last line is cut off; duplicate ids are reported.
        """
        with self._file_lock:
            loaded = self._file.load(self.limits.max_objects)
            self._replace_state(loaded, report=True)
            log.info("%s: loaded %s objects from %s (%s lines, %s malformed%s)", self.name,
                     len(self.objects), self.path, loaded.lines, loaded.malformed,
                     ", torn last line dropped" if loaded.torn else "")
            self._loaded = True
        del loaded
        if self._freeze:
            freeze()
        return len(self.objects)

    def _replace_state(self, loaded: statefile.Loaded, report: bool) -> None:
        self.objects.clear()
        self._revs = {}
        for oid, (obj, rev) in loaded.objects.items():
            self.objects.put(oid, obj)
            self._revs[oid] = rev
        if report:
            for oid in loaded.duplicates:
                self._duplicate(oid, "in the state file")

    def _apply(self, changes: statefile.Changes) -> None:
        """Take in what other processes wrote (the newest write of an id wins)."""
        if changes.reloaded is not None:
            log.debug("%s: another process compacted %s; reloaded %s objects", self.name,
                      self.path, len(changes.reloaded.objects))
            self._replace_state(changes.reloaded, report=False)
        for record in changes.records:
            oid = record["id"]
            if record.get(statefile.DELETED):
                self.objects.pop(oid)
                self._revs.pop(oid, None)
                continue
            rev = record.pop(statefile.REV, 0)
            rev = rev if isinstance(rev, int) else 0
            if oid in self._revs and rev <= self._revs[oid]:
                self._duplicate(oid, "written by another process")
            self.objects.put(oid, record)
            self._revs[oid] = rev

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold this object's lock and the file's writers' mutex, caught up with the file."""
        with self._file_lock:
            self._ensure_open()
            with self._file.locked(self.limits.max_objects) as changes:
                if changes:
                    self._apply(changes)
                yield

    def _duplicate(self, oid: Any, where: str) -> None:
        if len(self.duplicates) < MAX_DUPLICATES:
            self.duplicates.append(oid)
        log.warning("%s: duplicate object id %r %s; the later object wins", self.name, oid,
                    where)

    def add(self, obj: dict[str, Any]) -> None:
        """Add a new object (it must have an "id"); an id already held is reported as a
        duplicate and the new object replaces the old. Returns once the line is written
        (and fsynced with `sync=True`); raises OSError when it could not be."""
        self._write(_id_of(obj), obj, new=True)

    def put(self, obj: dict[str, Any]) -> None:
        """Insert or update an object by its "id"; it becomes the most recent. Returns
        once the line is written; raises OSError when it could not be."""
        self._write(_id_of(obj), obj, new=False)

    def get(self, oid: Any) -> dict[str, Any] | None:
        """Return the object with id `oid`, or None."""
        return self.objects.get(oid)

    def remove(self, oid: Any) -> bool:
        """Remove an object; return whether it was held."""
        with self._locked():
            held = self.objects.pop(oid) is not None
            self._revs.pop(oid, None)
            if held:
                self._file.append(statefile.encode({"id": oid, statefile.DELETED: True}, 0))
        return held

    def record(self, entry: Any) -> None:
        """Append `entry` to the execution history (kept in memory, bounded)."""
        self.history.append(entry)

    def refresh(self) -> None:
        """Take in what other processes sharing the file wrote since the last write."""
        with self._locked():
            pass

    def _write(self, oid: Any, obj: dict[str, Any], new: bool) -> None:
        with self._locked():
            if new and oid in self.objects:
                self._duplicate(oid, "added twice")
            rev = self._revs.get(oid, -1) + 1
            self._file.append(statefile.encode(obj, rev))
            self.objects.put(oid, obj)
            self._revs[oid] = rev
            if len(self._revs) > 2 * self.objects.maxlen:
                # Evicted objects leave the store in batches; forget their revisions too.
                self._revs = {k: self._revs.get(k, 0) for k in self.objects}
            if self._file.lines > COMPACT_RATIO * max(len(self.objects), 1) + COMPACT_SLACK:
                self._compact()

    def _ensure_open(self) -> None:
        if not self._loaded:
            self.load()

    def _compact(self) -> bool:
        """Rewrite the file from the objects held (inside `_locked`), unless a newer
        generation has loaded it: then that one compacts. Returns whether it did."""
        if self._file.superseded():
            if not self._superseded_said:
                self._superseded_said = True
                log.info("%s: a newer process (pid %s) has loaded %s; this one only appends "
                         "to it from now on", self.name, self._file.newest_loader_pid(),
                         self.path)
            return False
        items = self.objects.items()
        self._file.compact(statefile.encode(o, self._revs.get(k, 0)) for k, o in items)
        return True

    def save(self) -> int:
        """Catch up with the file, then compact it to the objects held (atomic rename),
        or, when a newer generation has loaded it, leave that to the newer one: every
        change is in the file already. Returns how many objects are held."""
        with self._locked():
            if not self._compact() and self._file.sync:
                self._file.sync_now()
            n = len(self.objects)
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
            interval_s: float = 0.0, handle_sigterm: bool = True) -> int:
        """Load, send `ready`, then step until `steps` or `duration_s` is reached, a step
        returns False, the supervisor asks to shut down, or SIGTERM arrives. Between steps:
        pending trims and limits (the safe point), gc every `gc_interval_s`, and every
        `trim_interval_s` a 10 % trim when RSS is above `trim_threshold_bytes`.
        Returns the number of steps run; `stop_reason` says why it stopped. The state is
        saved on the way out.

        With `interval_s`, a step starts every `interval_s` (a rate, not a pause after each
        step): on a busy host a pause after a slower step would lower the rate the program
        asked for. A loop more than a second behind its schedule starts afresh from now
        rather than catching up in a burst.

        With `handle_sigterm` (and when called from the main thread of a program that
        left SIGTERM at its default), SIGTERM ends the loop after the current step instead
        of killing the process, so that a retiring generation saves and exits 0 whether
        the supervisor's `shutdown` message or its SIGTERM arrives first, or both at once.
        When `run` ends for another reason the previous handler is back. After a shutdown
        or SIGTERM, further SIGTERMs are ignored: the process is on its way out, and a
        SIGTERM arriving while it closes would otherwise kill it in the middle (Python
        puts the default action back while the interpreter exits). The supervisor's
        SIGKILL after its grace still ends a program that does not exit; programs that
        start processes after that should restore SIGTERM for them.
        """
        restore = self._catch_sigterm() if handle_sigterm else None
        try:
            return self._loop(steps, duration_s, interval_s)
        finally:
            try:
                self.save()
            finally:
                if restore is not None:
                    stopping = self.stop_reason in ("shutdown", "SIGTERM")
                    signal.signal(signal.SIGTERM, signal.SIG_IGN if stopping else restore)

    def _catch_sigterm(self) -> Any:
        """Install the SIGTERM flag handler if that is safe; return the handler to restore."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None  # the program handles SIGTERM itself
        self._terminated = False

        def on_term(signum: int, frame: Any) -> None:
            # Only record it: the loop decides, at the next safe point.
            self._terminated = True

        return signal.signal(signal.SIGTERM, on_term)

    def _loop(self, steps: int | None, duration_s: float | None, interval_s: float) -> int:
        self._ensure_open()
        self.client.ready()
        start = time.monotonic()
        next_step = start
        next_gc = start + self.limits.gc_interval_s
        next_check = start + self.limits.trim_interval_s
        done = 0
        self.stop_reason = "steps"
        while steps is None or done < steps:
            self.client.checkpoint()
            if self._terminated:
                self.stop_reason = "SIGTERM"
                log.info("%s: SIGTERM: saving and stopping", self.name)
                break
            if self.client.shutdown_requested.is_set():
                self.stop_reason = "shutdown"
                log.info("%s: shutting down at the supervisor's request", self.name)
                break
            if self.step() is False:
                self.stop_reason = "step"
                break
            done += 1
            self.steps += 1
            now = time.monotonic()
            if duration_s is not None and now - start >= duration_s:
                self.stop_reason = "duration"
                break
            if now >= next_gc:
                gc.collect()
                next_gc = now + self.limits.gc_interval_s
            if now >= next_check:
                if memory.rss() > self.limits.trim_threshold_bytes:
                    self.trim(THRESHOLD_TRIM, "threshold")
                next_check = now + self.limits.trim_interval_s
            if interval_s > 0:
                next_step += interval_s
                ahead = next_step - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -CATCH_UP_S:
                    next_step = time.monotonic()
        return done

    def close(self) -> None:
        """Save, release the file (this process stops counting as its loader) and
        unregister from the client."""
        if self._loaded:
            self.save()
        self._file.close()
        self._loaded = False
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
