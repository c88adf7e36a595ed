"""The supervisor's main loop.

Signal handlers only enqueue (anyio's signal receiver); this loop decides. Children are
reaped in one place (`reaper.reap`, on SIGCHLD); the sampler thread hands over level
changes through a self-pipe; the policy turns them into actions executed here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator

import anyio
import msgspec

from supervisor import channel, control, introspect, linux, listeners, metrics, process, reaper
from supervisor.cgroup import CgroupMemory
from supervisor.config import Config
from supervisor.events import EventLog
from supervisor.exitstatus import ExitStatus, signal_name
from supervisor.policy import Action, GiveUp, Notify, Policy, PolicySettings, Record, Retire, Spawn
from supervisor.pressure import Change, Thresholds, explain
from supervisor.recorder import Recorder
from supervisor.sampler import Sampler
from supervisor.slots import Generation, Slot, make_slot, specs, worker_env
from supervisor.units import format_size
from workers import protocol

log = logging.getLogger("memwarden")

STOPPING = (signal.SIGTERM, signal.SIGINT)
#: Signals not forwarded, besides the stopping ones, CHLD and job control (`process.SWALLOWED`):
#: those no process can catch; those that report a fault of memwarden itself, left at their
#: default as tini leaves them (a handler would return to a faulting instruction and loop
#: for ever; as PID 1 the kernel does not deliver them from outside); PIPE and XFSZ, which
#: report memwarden's own writes (ignored, as Python starts).
NOT_FORWARDED = frozenset({
    signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, *STOPPING, *process.SWALLOWED,
    signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP, signal.SIGSYS,
    signal.SIGPIPE, signal.SIGXFSZ,
})
#: Every other classic signal goes to each worker's process group, as tini and dumb-init do:
#: left at its default, one (SIGALRM, say) would end memwarden and, as PID 1, the container.
FORWARDED = tuple(sorted(s for s in signal.valid_signals()
                         if 1 <= s <= 31 and s not in NOT_FORWARDED))
HOUSEKEEPING_S = 0.05
KILL_WAIT_S = 5.0
REPORT_WAIT_S = 5.0


class Arbiter:
    """Runs the configured workers until they are done or memwarden is told to stop."""

    #: (control, metrics) listening sockets bound at the edge (`listeners.open_sockets`);
    #: None: `run` binds what the configuration asks for itself.
    sockets: tuple[socket.socket | None, socket.socket | None] | None = None

    def __init__(self, cfg: Config, events: EventLog, recorder: Recorder | None = None) -> None:
        self.cfg = cfg
        self.events = events
        self.recorder = recorder
        self.slots: dict[str, Slot] = {s.name: make_slot(s, cfg) for s in specs(cfg)}
        self.by_pid: dict[int, Generation] = {}
        self.by_key: dict[str, Generation] = {}
        self.stopping = False
        self.exit_status: int | None = None
        self._done = anyio.Event()
        self._changes: deque[Change] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._tg: anyio.abc.TaskGroup | None = None
        self.cgroup = CgroupMemory.discover()
        configured = cfg.limit.resolve(None) if cfg.limit is not None else None
        self.limit = configured or (self.cgroup.limit() if self.cgroup else None)
        self.thresholds = Thresholds.from_config(cfg, self.limit)
        self.policy = Policy(PolicySettings.from_config(cfg))
        self.sampler = Sampler(
            interval_s=cfg.interval,
            discover_interval_s=cfg.discover_interval,
            ring_seconds=cfg.ring,
            thresholds=self.thresholds,
            on_change=self._on_change,
            cgroup=self.cgroup,
            limit=self.limit,
            realtime=cfg.realtime,
        )
        self._terminal = len(self.slots) == 1

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> int:
        """Start every worker, supervise until done; return memwarden's exit status."""
        if self.cfg.subreaper and os.getpid() != 1:
            try:
                linux.set_child_subreaper()
            except OSError as e:
                log.warning("cannot become a subreaper (%s): orphans of workers go to init", e)
        # A mask inherited from whoever started us would hide TERM from us and, through
        # the threads and children we start, from the workers too.
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for sig in process.SWALLOWED:
            signal.signal(sig, _swallow)
        self.sampler.start()
        try:
            with anyio.open_signal_receiver(*STOPPING, *FORWARDED, signal.SIGCHLD) as signals:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._signal_loop, signals)
                    tg.start_soon(self._change_loop)
                    tg.start_soon(self._housekeeping)
                    control_sock, metrics_sock = (self.sockets if self.sockets is not None
                                                  else listeners.open_sockets(self.cfg))
                    if metrics_sock is not None:
                        await tg.start(metrics.serve, metrics_sock,
                                       lambda: introspect.gauges(self))
                    if control_sock is not None:
                        tg.start_soon(control.serve, control_sock, self.answer)
                    for slot in self.slots.values():
                        if not self._start(slot, profile="normal", reason="start"):
                            break
                    await self._done.wait()
                    tg.cancel_scope.cancel()
        finally:
            self.sampler.stop()
            await self._last_rites()
            process.take_back_terminal()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self.exit_status if self.exit_status is not None else 0

    async def _signal_loop(self, signals: anyio.abc.AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum in STOPPING:
                if self.stopping:
                    self.events.emit("signal", f"second {signal_name(signum)}: killing now")
                    self._kill_everything(signal.SIGKILL)
                else:
                    assert self._tg is not None
                    self._tg.start_soon(self._shutdown, f"received {signal_name(signum)}", signum)
            else:
                self._forward(signum)

    def _forward(self, signum: int) -> None:
        for gen in self.live():
            if process.signal_group(gen.child, signum, root_reaped=False):
                self.events.emit("signal",
                                 f"forwarded {signal_name(signum)} to process group {gen.pid}",
                                 **self._ids(gen), signal=signal_name(signum))

    async def _change_loop(self) -> None:
        while True:
            await anyio.wait_readable(self._wake_r)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
            while self._changes:
                change = self._changes.popleft()
                with self._contained("a level change of %s", change.key or "the container"):
                    self._level(change)

    def _on_change(self, change: Change) -> None:
        """Called on the sampler thread: hand over and wake the loop, nothing more."""
        self._changes.append(change)
        with contextlib.suppress(BlockingIOError):  # a full pipe: the loop is due to wake anyway
            os.write(self._wake_w, b"!")

    async def _housekeeping(self) -> None:
        while True:
            await anyio.sleep(HOUSEKEEPING_S)
            with self._contained("the periodic policy check"):
                self._execute(self.policy.tick(time.monotonic(), headroom=self._headroom()))
            if self.recorder is not None:
                with self._contained("writing samples"):
                    self.recorder.tick(self.live(), self.sampler)

    # -- starting ----------------------------------------------------------------------------

    def _start(self, slot: Slot, *, profile: str, reason: str) -> Generation | None:
        """Start the slot's next generation; on failure of the first one, end memwarden."""
        number = slot.generations + 1
        spec = slot.spec
        try:
            child = process.spawn(
                spec.argv,
                env=worker_env(dict(os.environ), spec, number, profile,
                               investigate_on_retire=self.cfg.investigate_on_retire),
                cwd=spec.cwd,
                with_channel=True,
                oom_score_adj=self.cfg.oom_score_adj,
                take_terminal=self._terminal and number == 1,
            )
        except process.SpawnError as e:
            slot.generations = number  # the number is used up, as the policy counted it
            self.events.emit("spawn_failed", str(e), worker=slot.name, generation=number,
                             exit_status=e.exit_status)
            if slot.current is None:
                slot.done = True
                self._finish(e.exit_status)
            else:  # a replacement that never ran: for the policy, a failed start
                self._execute(self.policy.exited(time.monotonic(), slot.name, number,
                                                 expected=False))
            return None
        slot.generations = number
        gen = Generation(slot, number, profile, child)
        gen.oom_kills_at_start = self._oom_kills()
        self.by_pid[gen.pid] = gen
        self.by_key[gen.key] = gen
        if slot.current is None:
            slot.current = gen
            self.policy.add_slot(slot.name, number, time.monotonic(), profile=profile)
        else:
            slot.pending = gen
        self.sampler.watch(gen.key, gen.pid)
        # "spawn" marks a replacement for pressure; "start" a first start or a crash restart.
        self.events.emit("start" if slot.pending is None else "spawn",
                         f"started {_argv(spec.argv)} ({reason}, profile {profile})",
                         **self._ids(gen), profile=profile, reason=reason)
        assert self._tg is not None
        self._tg.start_soon(self._channel_loop, gen)
        self._tg.start_soon(self._ready_timer, gen)
        if self.recorder is not None:
            self.recorder.burst_later(gen, "start", self.sampler)
        return gen

    async def _ready_timer(self, gen: Generation) -> None:
        await anyio.sleep(gen.slot.spec.ready_after)
        # A worker that speaks the channel says when it is ready; one that does not is
        # ready once it has stayed alive this long.
        if gen.alive and gen.ready_at is None and not gen.spoke:
            self._ready(gen, f"alive for {gen.slot.spec.ready_after:g}s")

    def _ready(self, gen: Generation, how: str) -> None:
        if gen.ready_at is not None or not gen.alive:
            return
        gen.ready_at = time.monotonic()
        view = self.sampler.view(gen.key)
        gen.rss_at_ready = view.rss if view is not None else None
        self.events.emit("ready", f"ready ({how}) after {gen.ready_at - gen.started:.3f}s",
                         **self._ids(gen), rss=gen.rss_at_ready)
        slot = gen.slot
        if slot.pending is gen:
            slot.current, slot.pending = gen, None
        self._execute(self.policy.ready(gen.ready_at, slot.name, gen.number, gen.rss_at_ready or 0))

    # -- the channel -----------------------------------------------------------------------

    async def _channel_loop(self, gen: Generation) -> None:
        sock = gen.child.channel
        if sock is None:
            return
        # The socket is closed here, after the wait on it has ended: closing it under a
        # pending wait would leave the event loop watching a descriptor number that may
        # be reused. A grandchild can hold the worker's end open, so the exit cancels us.
        try:
            with anyio.CancelScope() as scope:
                gen.channel_scope = scope
                if not gen.alive:
                    return
                async for message in channel.messages(sock, gen.key):
                    gen.spoke = True
                    with self._contained("a message from %s", gen.key):
                        self._message(gen, message)
                log.debug("%s closed its channel; still supervised", gen.key)
        finally:
            sock.close()

    def _message(self, gen: Generation, message: protocol.FromWorker) -> None:
        if isinstance(message, protocol.Ready):
            self._ready(gen, "said ready")
        elif isinstance(message, protocol.Stats):
            gen.stats = message
        elif isinstance(message, protocol.Trimmed):
            freed = message.rss_before - message.rss_after
            self.events.emit(
                "trimmed",
                f"trimmed {message.dropped} objects in {message.ms:.1f}ms, "
                f"RSS {format_size(message.rss_before)} -> {format_size(message.rss_after)} "
                f"({format_size(freed)} freed)",
                **self._ids(gen), rss=message.rss_before, rss_after=message.rss_after,
                dropped=message.dropped, ms=message.ms, reason=message.reason or None)
        elif isinstance(message, protocol.Report):
            gen.reported.set()
            self.events.emit("report", f"leak report {message.id} ({message.ms:.0f}ms)",
                             **self._ids(gen), ms=message.ms,
                             data=msgspec.to_builtins(message))

    def _send(self, gen: Generation, message: protocol.ToWorker) -> bool:
        if gen.child.channel is None or not gen.alive:
            return False
        return channel.send(gen.child.channel, message, gen.key)

    # -- pressure ----------------------------------------------------------------------------

    def _level(self, change: Change) -> None:
        now = time.monotonic()
        headroom = self._headroom()
        if change.key == "":
            self.events.emit(
                "level", f"container {change.previous.label} -> {change.level.label}: "
                f"{explain(change)}", level=change.level.label, previous=change.previous.label,
                metric=change.metric, value=change.value, threshold=change.threshold)
            candidates = []
            for gen in self.live():
                view = self.sampler.view(gen.key)
                if view is not None and gen.slot.current is gen:
                    candidates.append((gen.slot.name, gen.number, view.slope or 0.0, view.rss))
            self._execute(self.policy.container_level(now, change, candidates, headroom=headroom))
            return
        gen = self.by_key.get(change.key)
        if gen is None or not gen.alive:
            return
        self.events.emit(
            "level", f"{change.previous.label} -> {change.level.label}: {explain(change)}",
            **self._ids(gen), level=change.level.label, previous=change.previous.label,
            metric=change.metric, value=change.value, threshold=change.threshold,
            data={"detect_ms": (change.t_ns - change.first_ns) / 1e6,
                  "crossed_ns": change.first_ns, "confirmed_ns": change.t_ns})
        if self.recorder is not None:
            self.recorder.burst_later(gen, "level", self.sampler)
        if gen.retiring:
            return
        self._execute(self.policy.level(now, gen.slot.name, gen.number, change,
                                        headroom=headroom, footprint=None))

    def _execute(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Record):
                gen = self._gen(action.slot, action.generation)
                ids = self._ids(gen) if gen else {"worker": action.slot,
                                                  "generation": action.generation}
                self.events.emit(action.type, action.message, **ids, data=dict(action.data))
            elif isinstance(action, Notify):
                self._notify(action)
            elif isinstance(action, Spawn):
                slot = self.slots.get(action.slot)
                if slot is not None and not self.stopping:
                    self._start(slot, profile=action.profile, reason=action.reason)
            elif isinstance(action, Retire):
                gen = self._gen(action.slot, action.generation)
                if gen is not None and gen.alive and not gen.retiring:
                    # A worker's own grace applies, except the short one of CRITICAL.
                    grace = action.grace_s if action.critical else gen.slot.spec.grace
                    gen.retiring = True  # now: an exit before the task runs is expected
                    assert self._tg is not None
                    self._tg.start_soon(self._retire, gen, grace, action.reason)
            elif isinstance(action, GiveUp):
                self.events.emit("limits_too_small", action.message, worker=action.slot,
                                 exit_status=action.exit_status)
                self._finish(action.exit_status)

    def _notify(self, action: Notify) -> None:
        gen = self._gen(action.slot, action.generation)
        if gen is None or not gen.alive:
            return
        view = self.sampler.view(gen.key)
        rss = view.rss if view is not None else 0
        change = action.change
        sent = self._send(gen, protocol.Pressure(
            level=action.level.label, rss=rss, limit=self.limit,
            metric=change.metric if change else "", threshold=change.threshold if change else None))
        how = ["channel"] if sent else []
        sig = gen.slot.spec.medium_signal
        if sig is not None and action.level >= protocol.Level.MEDIUM and \
                process.signal_group(gen.child, sig, root_reaped=False):
            how.append(sig.name)
        self.events.emit("notify", f"told of {action.level.label} pressure via "
                         f"{' and '.join(how) or 'nothing (no channel, no --medium-signal)'}",
                         **self._ids(gen), level=action.level.label, rss=rss)

    # -- stopping ----------------------------------------------------------------------------

    async def _retire(self, gen: Generation, grace: float, reason: str,
                      sig: int = signal.SIGTERM) -> None:
        """Stop one generation by escalation: shutdown message, `sig`, grace, KILL."""
        gen.retiring = True
        if not gen.alive:
            return  # it exited between the decision and now
        self.events.emit("retire", f"retiring ({reason}): {signal_name(sig)}, "
                         f"KILL after {grace:g}s", **self._ids(gen), reason=reason)
        told = self._send(gen, protocol.Shutdown(grace_s=float(grace), reason=reason))
        if told and self.cfg.investigate_on_retire and gen.spoke and not self.stopping:
            # The worker answers `shutdown` with a leak report; give it a moment to send it.
            with anyio.move_on_after(min(grace, REPORT_WAIT_S)):
                await gen.reported.wait()
        process.signal_tree(gen.child, sig, root_reaped=not gen.alive)
        with anyio.move_on_after(grace):
            await gen.exited.wait()
        if gen.alive:
            self.events.emit("kill", f"still running {grace:g}s after {signal_name(sig)}: "
                             "sending SIGKILL to its process tree", **self._ids(gen))
            process.signal_tree(gen.child, signal.SIGKILL, root_reaped=False)
            with anyio.move_on_after(KILL_WAIT_S):
                await gen.exited.wait()
            if gen.alive:
                log.error("%s: still not reaped %gs after SIGKILL (uninterruptible sleep?)",
                          gen.key, KILL_WAIT_S)
        else:
            # The root is gone; descendants that left its group still get the escalation.
            if process.signal_pids(gen.child.known.items(), signal.SIGKILL):
                log.info("%s: killed descendants left behind", gen.key)

    async def _shutdown(self, reason: str, sig: int = signal.SIGTERM) -> None:
        """Stop every worker gracefully, then end memwarden."""
        if self.stopping:
            return
        self.stopping = True
        live = self.live()
        self.events.emit("shutdown", f"shutting down ({reason}): {signal_name(sig)} to "
                         f"{len(live)} worker(s), grace {self.cfg.grace:g}s")
        async with anyio.create_task_group() as tg:
            for gen in live:
                gen.retiring = True
                tg.start_soon(self._retire, gen, gen.slot.spec.grace, reason, sig)
        if self.exit_status is None:
            self.exit_status = self._worst_status()
        self._done.set()

    def _finish(self, status: int) -> None:
        """End memwarden with `status` once every worker is stopped."""
        if self.exit_status is None:
            self.exit_status = status
        if self.live():
            assert self._tg is not None
            self._tg.start_soon(self._shutdown, "finishing", signal.SIGTERM)
        elif not self.stopping:
            self.stopping = True
            self._done.set()

    def _kill_everything(self, sig: int) -> None:
        for gen in self.live():
            process.signal_tree(gen.child, sig, root_reaped=False)
        process.kill_all_descendants(sig)

    async def _last_rites(self) -> None:
        """Nothing we started may outlive us: TERM stragglers, then KILL, reaping all."""
        self._reap()
        if not reaper.has_children() and not process.kill_all_descendants(0):
            return
        for sig, wait in ((signal.SIGTERM, min(self.cfg.grace, 2.0)), (signal.SIGKILL, 5.0)):
            if process.kill_all_descendants(sig) == 0 and not reaper.has_children():
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self._reap()
                if not reaper.has_children():
                    break
                await anyio.sleep(0.01)
        self._reap()

    # -- exits -------------------------------------------------------------------------------

    def _reap(self) -> None:
        for pid, raw in reaper.reap():
            gen = self.by_pid.pop(pid, None)
            if gen is None:
                log.debug("reaped orphan %d (%s)", pid, ExitStatus.from_wait(raw).describe())
                continue
            gen.child.reaped(raw)
            with self._contained("the exit of %s", gen.key):
                self._exited(gen, ExitStatus.from_wait(raw))

    def _exited(self, gen: Generation, status: ExitStatus) -> None:
        now = time.monotonic()
        gen.status = status
        gen.exited.set()
        if self.recorder is not None:
            self.recorder.burst_later(gen, "exit", self.sampler)
        self.by_key.pop(gen.key, None)
        self.sampler.unwatch(gen.key)
        if gen.channel_scope is not None:
            gen.channel_scope.cancel()
        slot = gen.slot
        expected = gen.retiring or self.stopping
        oom = status.signal == signal.SIGKILL and self._oom_kills() > gen.oom_kills_at_start
        self.events.emit(
            "exit", f"{status.describe(oom_kill=oom, expected=expected)} after {gen.uptime:.1f}s"
            + (" (retired)" if gen.retiring else ""),
            **self._ids(gen), returncode=status.code, signal=status.signal_name,
            exit_status=status.shell, oom_kill=oom, expected=expected, uptime_s=gen.uptime)
        if slot.current is gen:
            slot.last_status = status
        if self.stopping:
            return
        if expected:
            self._execute(self.policy.exited(now, slot.name, gen.number, expected=True))
            self._check_done()
            return
        if slot.pending is gen:  # a replacement died before it was ready: a failed start
            slot.pending = None
            self._execute(self.policy.exited(now, slot.name, gen.number, expected=False))
            return
        if slot.current is not gen:
            return
        self._execute(self.policy.exited(now, slot.name, gen.number, expected=False))
        if self.policy.will_start(slot.name):
            return  # a replacement is starting or planned: it takes over, not a crash restart
        self._crashed(slot, status, now)

    def _crashed(self, slot: Slot, status: ExitStatus, now: float) -> None:
        """The current generation exited by itself: restart it, or let the slot end."""
        decision = slot.restarts.on_exit(now, ok=status.ok)
        if decision.restart:
            self.events.emit("restart", f"restarting in {decision.delay_s:g}s "
                             f"(restart {decision.attempt} of {slot.restarts.budget} "
                             f"within {slot.restarts.window_s:g}s)", worker=slot.name,
                             generation=slot.generations + 1, delay_s=decision.delay_s,
                             attempt=decision.attempt)
            assert self._tg is not None
            self._tg.start_soon(self._restart_later, slot, decision.delay_s)
            return
        slot.done = True
        if decision.attempt:  # the budget, not the policy, said no
            self.events.emit("give_up", f"giving up: {decision.why}; exiting with the worker's "
                             f"last status {status.shell}", worker=slot.name,
                             exit_status=status.shell, attempt=decision.attempt)
        self._check_done()

    async def _restart_later(self, slot: Slot, delay: float) -> None:
        await anyio.sleep(delay)
        if self.stopping or slot.live():
            return
        with self._contained("the restart of %s", slot.name):
            profile = self.policy.next_profile(slot.name)
            slot.current = None
            self._start(slot, profile=profile, reason="restart after exit")

    def _check_done(self) -> None:
        if all(s.done and not s.live() for s in self.slots.values()):
            self._finish(self._worst_status())

    def _worst_status(self) -> int:
        statuses = [s.last_status.shell for s in self.slots.values() if s.last_status is not None]
        return next((st for st in statuses if st != 0), 0)

    def answer(self, request: control.Request) -> control.Reply:
        """Answer one control request (`memwarden status`, `replace`, ...)."""
        if isinstance(request, control.Status):
            return introspect.status(self)
        if isinstance(request, control.Stop):
            assert self._tg is not None
            self._tg.start_soon(self._shutdown, "asked by memwarden stop", signal.SIGTERM)
            return control.Reply(ok=True, message="stopping every worker")
        slot = self.slots.get(request.worker)
        gen = slot.current if slot is not None else None
        if slot is None or gen is None or not gen.alive:
            known = ", ".join(self.slots)
            return control.Reply(ok=False, message=f"no running worker {request.worker!r} "
                                 f"(workers: {known})")
        if isinstance(request, control.Replace):
            self._execute(self.policy.replace(time.monotonic(), slot.name,
                                              "requested with memwarden replace"))
            return control.Reply(ok=True, message=f"replacing generation {gen.number} of "
                                 f"{slot.name!r} (make before break)")
        if isinstance(request, control.Investigate):
            sent = self._send(gen, protocol.Investigate(id=f"ctl-{time.time_ns()}",
                                                        top=request.top))
            return control.Reply(ok=sent, message="asked; the report goes to the log and the "
                                 "snapshots" if sent else "the worker has no channel open")
        current: protocol.Limits = getattr(slot.spec.profiles, gen.profile)
        try:
            limits = msgspec.convert({**msgspec.to_builtins(current), **request.limits},
                                     protocol.Limits)
        except msgspec.ValidationError as e:
            return control.Reply(ok=False, message=f"bad limits: {e}")
        sent = self._send(gen, protocol.SetLimits(profile=gen.profile, limits=limits))  # type: ignore[arg-type]
        self.events.emit("limits", f"limits set by hand: {request.limits}", **self._ids(gen),
                         data=dict(request.limits))
        return control.Reply(ok=sent, message="limits sent" if sent else "no channel open")

    # -- small things ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _contained(self, what: str, *args: object) -> Iterator[None]:
        """A fault in deciding or recording must never end supervision: log it, go on."""
        try:
            yield
        except Exception:
            log.exception("internal error while handling " + what + "; supervision goes on",
                          *args)


    def live(self) -> list[Generation]:
        """Every generation still running, current, pending or retiring."""
        return [g for s in self.slots.values() for g in s.live()] + [
            g for g in self.by_pid.values()
            if g.alive and g not in (g.slot.current, g.slot.pending)]

    def _gen(self, slot: str, number: int) -> Generation | None:
        return self.by_key.get(f"{slot}#{number}")

    @staticmethod
    def _ids(gen: Generation) -> dict[str, object]:
        return {"worker": gen.slot.name, "generation": gen.number, "pid": gen.pid}

    def _headroom(self) -> int | None:
        """Bytes left under the limit for the container's working set, when both are known."""
        container = self.sampler.container()
        if self.limit is None or container is None or container.working_set < 0:
            return None  # no limit, or no cgroup read yet
        return self.limit - container.working_set

    def _oom_kills(self) -> int:
        if self.cgroup is None:
            return 0
        try:
            return self.cgroup.events().get("oom_kill", 0)
        except OSError:
            return 0


def _swallow(signum: int, frame: object) -> None:
    """TSTP, TTIN, TTOU must neither stop memwarden nor be inherited as ignored."""


def _argv(argv: list[str]) -> str:
    text = " ".join(argv)
    return text if len(text) <= 80 else text[:77] + "..."
