"""The pressure client: the worker's view of its supervisor.

A daemon thread reads the channel, keeps the current level and limits, sends `stats`
periodically and answers `investigate`. Work that touches the worker's own state
(trims, applying new limits to stores) waits for a safe point: the worker's
`checkpoint()` call, or the client thread itself for workers that opt in with
`trim_on_thread=True` (their callbacks must then be thread-safe; the stores in
`workers.bounded` are). Without `MEMWARDEN_FD` the client is standalone: no thread,
level LOW forever, every call a cheap no-op.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from workers import memory
from workers._log import get_logger
from workers.channel import Channel
from workers.gcwatch import GcWatch, apply_thresholds
from workers.protocol import (
    ENV_FD,
    ENV_GENERATION,
    ENV_INVESTIGATE_ON_SHUTDOWN,
    ENV_LIMITS,
    ENV_PROFILE,
    ENV_WORKER,
    FromWorker,
    Investigate,
    Level,
    Limits,
    Pressure,
    Ready,
    Report,
    SetLimits,
    Shutdown,
    Stats,
    ToWorker,
    Trimmed,
)
from workers.trim import Trimmable, Trimmer, TrimPolicy

log = get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Id of the report sent unasked when a retiring generation is investigated.
SHUTDOWN_REPORT_ID = "shutdown"


class Client:
    """One worker's connection to its supervisor (or a standalone stand-in).

    Attributes read by workers: `supervised`, `level`, `limits`, `profile`, `worker`,
    `generation`, `shutdown_requested` (an Event set by the `shutdown` message).
    """

    def __init__(
        self,
        channel: Channel | None = None,
        *,
        worker: str = "",
        generation: int = 0,
        profile: str = "normal",
        limits: Limits | None = None,
        policy: TrimPolicy | None = None,
        trim_on_thread: bool = False,
        stats_interval_s: float = 2.0,
        investigate_interval_s: float = 30.0,
        investigate_on_shutdown: bool = False,
    ) -> None:
        if stats_interval_s <= 0:
            raise ValueError(f"stats_interval_s must be positive, got {stats_interval_s}")
        self.channel = channel
        self.worker = worker
        self.generation = generation
        self.profile = profile
        self.limits = limits or Limits()
        self.level = Level.LOW
        self.trimmer = Trimmer(policy)
        self.trim_on_thread = trim_on_thread
        self.stats_interval_s = stats_interval_s
        self.investigate_interval_s = investigate_interval_s
        self.investigate_on_shutdown = investigate_on_shutdown
        self.shutdown_requested = threading.Event()
        #: Paths of JSONL state files the investigator checks for duplicate ids.
        self.state_files: list[str] = []
        self._roots: list[tuple[str, weakref.ref[Any]]] = []
        self.gc = GcWatch()
        self._pressure_hooks: list[Callable[[Pressure], None]] = []
        self._limits_hooks: list[Callable[[Limits], None]] = []
        self._shutdown_hooks: list[Callable[[Shutdown], None]] = []
        self._lock = threading.Lock()
        # Pending safe-point work. `_pending` is read without the lock on the fast path
        # of checkpoint(); it is only a hint, re-checked under the lock.
        self._pending = False
        self._pending_fraction = 0.0
        self._pending_reason = ""
        self._pending_limits: Limits | None = None
        self._ready_sent = False
        self._last_investigation = -float("inf")
        self._investigator: Any = None
        self._thread: threading.Thread | None = None

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Client:
        """Build a client from the `MEMWARDEN_*` variables the supervisor sets.

        Bad values never stop the worker: they are logged and the client falls back
        (standalone for a bad descriptor, default limits for bad limits).
        """
        env = os.environ if environ is None else environ
        limits = _limits_from_env(env.get(ENV_LIMITS))
        if limits is not None:
            options.setdefault("limits", limits)
        options.setdefault("worker", env.get(ENV_WORKER, ""))
        options.setdefault("profile", env.get(ENV_PROFILE, "normal") or "normal")
        if env.get(ENV_INVESTIGATE_ON_SHUTDOWN, "").strip().lower() in ("1", "true", "yes"):
            options.setdefault("investigate_on_shutdown", True)
        try:
            options.setdefault("generation", int(env.get(ENV_GENERATION, "0") or 0))
        except ValueError:
            log.warning("%s=%r is not an integer; using generation 0",
                        ENV_GENERATION, env.get(ENV_GENERATION))
        channel = None
        raw_fd = env.get(ENV_FD)
        if raw_fd:
            try:
                channel = Channel(int(raw_fd))
            except (ValueError, OSError) as e:
                log.error("%s=%r is not an open descriptor (%s); running without a "
                          "supervisor", ENV_FD, raw_fd, e)
        return cls(channel, **options)

    @property
    def supervised(self) -> bool:
        """True while a supervisor is connected."""
        return self.channel is not None and not self.channel.closed

    def start(self) -> Client:
        """Start the reading thread (no-op when standalone or already started)."""
        if self.channel is not None and self._thread is None:
            self.gc.install()
            apply_thresholds(self.limits)
            self._thread = threading.Thread(target=self._run, name="memwarden-client",
                                            daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and release the channel (idempotent)."""
        if self.channel is None:
            return
        self.channel.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self.gc.uninstall()
        self.channel.release()

    # -- hooks and registration -------------------------------------------------------

    def on_pressure(self, fn: F) -> F:
        """Call `fn(Pressure)` on every level change, on the client thread (keep it quick)."""
        self._pressure_hooks.append(fn)
        return fn

    def on_limits(self, fn: F) -> F:
        """Call `fn(Limits)` when new limits apply, at the safe point."""
        self._limits_hooks.append(fn)
        return fn

    def on_shutdown(self, fn: F) -> F:
        """Call `fn(Shutdown)` when the supervisor retires this worker (client thread)."""
        self._shutdown_hooks.append(fn)
        return fn

    def register(self, store: Trimmable, name: str, priority: int = 0) -> None:
        """Register a store (held weakly) for trimming, limits and stats."""
        self.trimmer.register(store, name, priority)

    def watch(self, obj: object, name: str) -> None:
        """Have the investigator walk `obj`'s attributes (held weakly) as part of the state,
        so that a container outside every store, such as `self.seen = []`, is named in
        reports as `name.seen`. Attributes listed in `obj.investigate_skip` are left out."""
        self._roots.append((name, weakref.ref(obj)))

    def roots(self) -> list[tuple[str, Any]]:
        """Return (name, object) for every watched object still alive."""
        alive = [(name, ref()) for name, ref in self._roots]
        self._roots = [(name, weakref.ref(obj)) for name, obj in alive if obj is not None]
        return [(name, obj) for name, obj in alive if obj is not None]

    def add_trim(self, fn: Callable[[float], int], name: str = "", priority: int = 0) -> None:
        """Register `fn(fraction) -> dropped`, run on trims in ascending `priority`."""
        self.trimmer.add_callback(fn, name, priority)

    # -- messages to the supervisor ---------------------------------------------------

    def send(self, msg: FromWorker) -> bool:
        """Send a message; False when standalone or the supervisor is gone."""
        if self.channel is None:
            return False
        try:
            return self.channel.send(msg)
        except Exception:
            # Reporting must never take the worker down with it.
            log.exception("channel: sending %s failed; the worker carries on",
                          type(msg).__name__)
            return False

    def ready(self) -> None:
        """Tell the supervisor this worker is doing useful work (sent once)."""
        if not self._ready_sent:
            self._ready_sent = self.send(Ready(pid=os.getpid()))

    def stats(self) -> Stats:
        """Return the worker's counters as the `stats` message carries them."""
        objects, history = self.trimmer.totals()
        return Stats(objects=objects, history=history, blocks=sys.getallocatedblocks(),
                     gc_collections=self.gc.collections, gc_pause_ms=self.gc.pause_ms,
                     rss=memory.rss(), stores=self.trimmer.sizes(),
                     store_bytes=self.trimmer.nbytes(),
                     dropped=self.channel.drops.count if self.channel is not None else 0)

    # -- trimming ---------------------------------------------------------------------

    def checkpoint(self) -> Trimmed | None:
        """Run pending trims and limit changes now; call it where the worker's state is
        consistent. Costs one attribute read when nothing is pending. Returns the trim's
        result, if one ran."""
        if not self._pending:
            return None
        return self._run_pending()

    def request_trim(self, fraction: float, reason: str) -> None:
        """Ask for a trim of `fraction` at the next safe point (the largest ask wins)."""
        with self._lock:
            if fraction > self._pending_fraction:
                self._pending_fraction = fraction
                self._pending_reason = reason
            self._pending = True
        if self.trim_on_thread and threading.current_thread() is self._thread:
            self._run_pending()

    def trim(self, fraction: float | None = None, reason: str = "requested") -> Trimmed:
        """Trim now (`fraction` defaults to the current level's, at least MEDIUM's) and
        send `trimmed` when supervised. Call it from the safe point."""
        if fraction is None:
            fraction = self.trimmer.policy.fraction(max(self.level, Level.MEDIUM))
        result = self.trimmer.run(fraction, reason)
        self.send(result)
        return result

    def _run_pending(self) -> Trimmed | None:
        with self._lock:
            fraction, reason = self._pending_fraction, self._pending_reason
            limits = self._pending_limits
            self._pending = False
            self._pending_fraction = 0.0
            self._pending_limits = None
        if limits is not None:
            self.trimmer.apply_limits(limits)
            for hook in self._limits_hooks:
                _call_hook(hook, limits)
        if fraction > 0:
            return self.trim(fraction, reason)
        return None

    # -- the client thread ------------------------------------------------------------

    def _run(self) -> None:
        assert self.channel is not None
        next_stats = time.monotonic() + self.stats_interval_s
        while True:
            msgs = self.channel.receive(max(0.0, next_stats - time.monotonic()))
            if msgs is None:
                break
            for msg in msgs:
                try:
                    self._dispatch(msg)
                except Exception:
                    log.exception("channel: handling %s failed; the client carries on",
                                  type(msg).__name__)
            now = time.monotonic()
            if now >= next_stats:
                self.send(self.stats())
                # Skip missed periods rather than sending a burst after a long pause.
                next_stats = now + self.stats_interval_s
        if not self.shutdown_requested.is_set():
            log.info("channel: the supervisor closed the channel; running on without it")

    def _dispatch(self, msg: ToWorker) -> None:
        if isinstance(msg, Pressure):
            self.level = Level.parse(msg.level)
            for hook in self._pressure_hooks:
                _call_hook(hook, msg)
            fraction = self.trimmer.policy.fraction(self.level)
            if fraction > 0:
                self.request_trim(fraction, f"pressure {msg.level}")
        elif isinstance(msg, SetLimits):
            self.limits = msg.limits
            self.profile = msg.profile
            apply_thresholds(msg.limits)  # process-wide and thread-safe: no safe point needed
            with self._lock:
                self._pending_limits = msg.limits
                self._pending = True
            if self.trim_on_thread:
                self._run_pending()
        elif isinstance(msg, Investigate):
            self.send(self.investigate(msg.id, msg.top))
        elif isinstance(msg, Shutdown):
            # Investigate before the worker learns of the shutdown: once it knows, it
            # may exit, and this daemon thread with it.
            if self.investigate_on_shutdown:
                self.send(self.investigate(SHUTDOWN_REPORT_ID, force=True))
            self.shutdown_requested.set()
            for hook in self._shutdown_hooks:
                _call_hook(hook, msg)

    def investigate(self, request_id: str, top: int = 20, force: bool = False) -> Report:
        """Run the leak investigator (rate-limited unless `force`) and return its report."""
        now = time.monotonic()
        wait = self._last_investigation + self.investigate_interval_s - now
        if wait > 0 and not force:
            return Report(id=request_id, retry_after_s=wait,
                          error=f"rate limited: next investigation in {wait:.0f} s")
        self._last_investigation = now
        try:
            if self._investigator is None:
                # deferred: investigations are rare, and the walker and objgraph are not light
                from workers.investigate import Investigator

                self._investigator = Investigator()
            return self._investigator.report(request_id, top=top, client=self,
                                             state_files=self.state_files)
        except Exception as e:
            log.exception("investigation %s failed", request_id)
            return Report(id=request_id, error=f"investigation failed: {e}")


def _call_hook(hook: Callable[[Any], None], arg: Any) -> None:
    try:
        hook(arg)
    except Exception:
        log.exception("hook %s failed; the client carries on",
                      getattr(hook, "__qualname__", hook))


def _limits_from_env(raw: str | None) -> Limits | None:
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=Limits)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as e:
        log.warning("%s is not valid limits JSON (%s); using the defaults", ENV_LIMITS, e)
        return None


_default: Client | None = None
_default_lock = threading.Lock()


def connect(**options: Any) -> Client:
    """Return the process's default client, creating and starting it from the
    environment on the first call. Options (those of `Client`) apply only to that first
    call; passing them later raises RuntimeError."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client.from_env(**options).start()
        elif options:
            raise RuntimeError("the default client already exists; pass options to the "
                               "first workers.connect() call")
        return _default


def client() -> Client:
    """Return the default client (connecting with default options if needed)."""
    return _default if _default is not None else connect()


def checkpoint() -> Trimmed | None:
    """Run the default client's pending work; see `Client.checkpoint`."""
    return client().checkpoint()
