"""The supervisor's main loop: it carries out the policy's decisions and reports the world back.

Signal handlers only enqueue (anyio's signal receiver); this loop decides, through the
policy, which owns every worker's lifecycle. Children are reaped in one place
(`reaper.reap`, on SIGCHLD); the sampler thread hands over level changes through a
self-pipe. The loop itself keeps only OS handles (`handles.Handle`: process, channel,
events) and runs the stops (`stopping.stop_generation`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

import anyio
import anyio.abc
import msgspec

from snapshots.schema import Event, EventType
from supervisor.core.actions import Action, Exit, Finish, Notify, Record, Retire, Spawn
from supervisor.core.exitstatus import ExitStatus, signal_name
from supervisor.core.identity import GenerationId
from supervisor.core.policy import Policy, PolicySettings
from supervisor.core.pressure import Change, Thresholds, explain
from supervisor.core.states import GenerationState
from supervisor.core.units import format_duration, format_size
from supervisor.linux import handoff, prctl, process, reaper, sigwait
from supervisor.linux.cgroup import CgroupMemory
from supervisor.linux.trees import CgroupTree, ProcTree
from supervisor.linux.workercgroup import GenerationCgroup
from supervisor.loop import channel
from supervisor.loop.events import EventLog
from supervisor.loop.handles import Handle
from supervisor.loop.health import Health
from supervisor.loop.readiness import Prober, wall_of
from supervisor.loop.recorder import Recorder
from supervisor.loop.stopping import KILL_WAIT_S, stop_generation
from supervisor.sensing.measure import Measure
from supervisor.sensing.sampler import Sampler
from supervisor.settings.config import Config
from supervisor.settings.specs import WorkerSpec, worker_env, worker_settings
from workers import protocol
from workers.protocol import Level

#: What the composition root starts in the arbiter's task group once it runs (the control
#: socket, the metrics endpoint): the arbiter knows them only as tasks.
Service = Callable[[anyio.abc.TaskGroup], Awaitable[None]]

log = logging.getLogger("memwarden.arbiter")

STOPPING = (signal.SIGTERM, signal.SIGINT)
STARTING = GenerationState.STARTING
#: Signals not forwarded: the stopping ones (they stop the workers, which get TERM or INT
#: in turn), CHLD, job control (`process.SWALLOWED`), and those no process can catch.
NOT_FORWARDED = frozenset({
    signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, *STOPPING, *process.SWALLOWED,
})
#: Every other classic signal goes to each worker's process group, as tini and dumb-init do:
#: left at its default, one (SIGALRM, say) would end memwarden and, as PID 1, the container.
#: Most through a handler; those that can also report memwarden's own writes or faults
#: only when another process sent them, taken by `sigwait.Waiter`.
FORWARDED = tuple(sorted(s for s in signal.valid_signals()
                         if 1 <= s <= 31 and s not in NOT_FORWARDED))
HANDLED = tuple(s for s in FORWARDED if s not in sigwait.WAITED)
#: The timers' cadence while one can fire (a replacement starting, a cooldown holding back
#: a level, a restart due, MEDIUM reminders), and while nothing can (every worker ready at
#: LOW): each wake of the event loop costs the whole process CPU (measured: 20 a second
#: were 0.6 % of a core, a third of an idle memwarden's), and a change of state wakes it at
#: once anyway.
HOUSEKEEPING_S = 0.05
QUIET_S = 0.5
#: Fields of the snapshot `event` record; a Record's data keys among them become fields.
_EVENT_FIELDS = frozenset(f.name for f in msgspec.structs.fields(Event))


class Arbiter:
    """Runs the configured workers until they are done or memwarden is told to stop."""

    def __init__(self, cfg: Config, events: EventLog, *, specs: Sequence[WorkerSpec],
                 policy: PolicySettings, thresholds: Thresholds, limit: int | None,
                 cgroup: CgroupMemory | None, measure: Measure,
                 recorder: Recorder | None = None,
                 listeners: dict[str, tuple[handoff.Listener, ...]] | None = None,
                 notify: bool = True) -> None:
        """Everything comes resolved from the composition root (`supervisor.app`): the
        workers' specs, the policy's settings, the container's thresholds, the limit and
        memwarden's own cgroup (discovered once), how memory is measured, the sockets
        bound once and handed to every generation, by worker. `notify` False leaves the
        kernel's notifications unarmed (`Sampler`)."""
        self.cfg = cfg
        self.events = events
        self.recorder = recorder
        self.specs = {s.name: s for s in specs}
        self.policy = Policy(policy, [worker_settings(s) for s in self.specs.values()])
        self.handles: dict[str, Handle] = {}  # by key, until reaped, stopped, cgroup removed
        self.by_pid: dict[int, Handle] = {}  # roots not yet reaped
        self.stopping = False
        self.exit_status: int | None = None
        self._done = anyio.Event()
        self._kick = anyio.Event()  # set to run the timers now
        self._changes: deque[Change] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._tg: anyio.abc.TaskGroup | None = None
        self.cgroup = cgroup
        self.limit = limit
        self.thresholds = thresholds
        self.measure = measure
        self._leftover: list[GenerationCgroup] = []  # cgroups not empty yet when retired
        self.listeners = listeners or {}
        self._probers: dict[str, Prober] = {}  # by key, while a probe runs
        self.sampler = Sampler(
            interval_s=cfg.interval,
            discover_interval_s=cfg.discover_interval,
            ring_seconds=cfg.ring,
            thresholds=thresholds,
            on_change=self._on_change,
            cgroup=cgroup,
            limit=limit,
            realtime=cfg.realtime,
            measure=measure.how,
            notify=notify,
        )
        if measure.cgroups is not None:  # where the generations reclaim: their common limit
            self.sampler.arm_shared(measure.cgroups.instance)
        self.health = Health(self.sampler, self.policy, cfg.interval)
        self._terminal = len(self.specs) == 1
        self._stop_signal = signal.SIGTERM  # what stops workers; SIGINT after a Ctrl-C
        self._untold: dict[str, int] = {}  # worker -> the generation said "not told" of

    # -- running ---------------------------------------------------------------------------

    async def run(self, services: Sequence[Service] = ()) -> int:
        """Start every worker, supervise until done; return memwarden's exit status.

        `services` are started in the arbiter's task group before the first worker, and
        cancelled with it."""
        if self.cfg.subreaper and os.getpid() != 1:
            try:
                prctl.set_child_subreaper()
            except OSError as e:
                log.warning("cannot become a subreaper (%s): orphans of workers go to init", e)
        # A mask inherited from whoever started us would hide TERM from us and, through
        # the threads and children we start, from the workers too; only sigwait's are kept.
        mask = signal.pthread_sigmask(signal.SIG_SETMASK, sigwait.WAITED)
        self._protect_self()
        log.info("memory measured by %s: %s", self.measure.how, self.measure.why)
        for sig in process.SWALLOWED:
            signal.signal(sig, _swallow)
        waiter = sigwait.Waiter()
        waiter.start()
        self.sampler.start()
        try:
            with anyio.open_signal_receiver(*STOPPING, *HANDLED, signal.SIGCHLD) as signals:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._signal_loop, signals)
                    tg.start_soon(self._signal_loop, waiter.received())
                    tg.start_soon(self._change_loop)
                    tg.start_soon(self._housekeeping)
                    for service in services:
                        await service(tg)
                    self.execute(self.policy.start(time.monotonic()))
                    await self._done.wait()
                    # Leftovers of trees still being stopped get their grace, then KILL.
                    for h in list(self.handles.values()):
                        with anyio.move_on_after(2 * self.specs[h.worker].grace + KILL_WAIT_S):
                            await h.stopped.wait()
                    tg.cancel_scope.cancel()
        finally:
            self.sampler.stop()
            waiter.stop()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            await self._last_rites()
            process.take_back_terminal()
            self.close()
        return self.exit_status if self.exit_status is not None else 0

    def close(self) -> None:
        """Close the sampler's wake-up pipe (`run` does at its end; an arbiter built and
        never run must be closed by its builder)."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _signal_loop(self, signals: anyio.abc.AsyncIterator[int]) -> None:
        async for signum in signals:
            with self._contained("signal %s", signal_name(signum)):
                if signum == signal.SIGCHLD:
                    self._reap()
                elif signum in STOPPING:
                    self.stop(f"received {signal_name(signum)}", signum, received=True)
                else:
                    self._forward(signum)

    def _protect_self(self) -> None:
        """Make memwarden the last process the kernel's OOM killer picks.

        Raising the workers' score is not enough: while the cgroup is still at its limit
        because a worker the kernel killed has not given its memory back yet, memwarden's
        own next allocation (reading /proc, starting the next generation) makes it the only
        candidate left, and a supervisor killed there ends the container.

        Lowering a score needs CAP_SYS_RESOURCE, which most containers lack, root or not:
        there every run failed here, and an INFO line at every start ("keeps its
        oom_score_adj (setting -1000: Permission denied)") told the user of nothing to act
        on, since the workers' raised score (`--oom-score-adj`, +500) still makes them the
        kernel's choice over memwarden. So that case is said at DEBUG, with the reason; a
        WARNING only when the workers' score would not be above memwarden's own, where the
        kernel may pick memwarden first and the user can act (grant CAP_SYS_RESOURCE, or
        raise `--oom-score-adj`).
        """
        wanted = self.cfg.own_oom_score_adj
        try:
            prctl.set_oom_score_adj(wanted)
        except OSError as e:
            try:
                kept = prctl.oom_score_adj()
            except OSError:
                kept = None
            if kept is not None and self.cfg.oom_score_adj > kept:
                log.debug("memwarden keeps its oom_score_adj %d (setting %d: %s; it needs "
                          "CAP_SYS_RESOURCE); the workers' %d still makes them the OOM "
                          "killer's choice first", kept, wanted, e.strerror or e,
                          self.cfg.oom_score_adj)
            else:
                log.warning("memwarden keeps its oom_score_adj %s (setting %d: %s; it needs "
                            "CAP_SYS_RESOURCE), not below the workers' %d: the kernel's OOM "
                            "killer may pick memwarden before a worker; grant "
                            "CAP_SYS_RESOURCE or raise --oom-score-adj",
                            "unknown" if kept is None else kept, wanted, e.strerror or e,
                            self.cfg.oom_score_adj)

    def stop(self, reason: str, sig: int = signal.SIGTERM, *, received: bool = False) -> None:
        """Stop every worker by escalation, with `sig` in place of TERM.

        A repeated request changes nothing in the stop under way: a TERM or INT `received`
        again is forwarded to every live worker's process group like any other signal (as
        tini does; a worker that catches TERM to finish its work may ignore a repeat), and
        only the grace leads to KILL. Killing every worker at the second signal, as before,
        cut such a worker short mid-work, where an orchestrator's repeated TERM meant no
        more than the first.
        """
        if self.stopping:
            if received:
                self._forward(sig, note=" (received while stopping: SIGKILL still only "
                              "once the grace has run out)")
            else:  # not a second `shutdown` record: the analysis dates the stop by the last
                self.events.emit(EventType.SIGNAL, f"{reason}: already stopping; SIGKILL "
                                 "only once the grace has run out")
            return
        self.stopping = True
        self._stop_signal = sig
        live = [h for h in self.handles.values() if h.alive]
        self.events.emit(EventType.SHUTDOWN, f"shutting down ({reason}): stopping "
                         f"{len(live)} generation(s)")
        self.execute(self.policy.stop(time.monotonic(), reason))

    def _forward(self, signum: int, note: str = "") -> None:
        for h in self.handles.values():
            if h.alive and process.signal_group(h.child, signum):
                self.events.emit(EventType.SIGNAL,
                                 f"forwarded {signal_name(signum)} to process group {h.pid}"
                                 f"{note}",
                                 **_ids(h), signal=signal_name(signum))

    async def _change_loop(self) -> None:
        while True:
            await anyio.wait_readable(self._wake_r)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
            self._take_changes()

    def _take_changes(self) -> None:
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
            with anyio.move_on_after(QUIET_S if self.policy.quiet() else HOUSEKEEPING_S):
                await self._kick.wait()
            self._kick = anyio.Event()
            with self._contained("the periodic policy check"):
                self.execute(self.policy.tick(time.monotonic(), headroom=self._headroom(),
                                               container=self._container_level()))
            if self.recorder is not None:
                with self._contained("writing samples"):
                    self.recorder.tick(list(self.handles.values()), self.sampler)
            if self._leftover:
                with self._contained("removing cgroups of ended generations"):
                    self._remove_leftovers()

    # -- carrying out the policy's actions -------------------------------------------------

    def execute(self, actions: Iterable[Action]) -> None:
        kicked = False
        for action in actions:
            if not kicked:  # the state changed: its timers run from now, not after a nap
                kicked = True
                self._kick.set()
            if isinstance(action, Record):
                self._record(action)
            elif isinstance(action, Notify):
                self._notify(action)
            elif isinstance(action, Spawn):
                self._spawn(action)
            elif isinstance(action, Retire):
                self._retire(action)
            elif isinstance(action, Finish):
                self._finish(action)

    def _record(self, action: Record) -> None:
        h = self.handles.get(str(GenerationId(action.worker, action.generation)))
        ids = _ids(h) if h is not None else {"worker": action.worker,
                                              "generation": action.generation}
        fields = {k: v for k, v in action.data.items() if k in _EVENT_FIELDS and k not in ids}
        data = {k: v for k, v in action.data.items() if k not in fields}
        self.events.emit(action.type, action.message, **ids, **fields, data=data)

    def _spawn(self, action: Spawn) -> None:
        spec = self.specs[action.worker]
        number = action.generation
        now = time.monotonic()
        cg = None
        if self.measure.cgroups is not None:
            try:
                cg = self.measure.cgroups.create(spec.name, number)
            except OSError as e:
                self.execute(self.policy.spawn_failed(
                    now, spec.name, number, status=126,
                    message=f"cannot create the cgroup of generation {number} of "
                    f"{spec.name!r}: {e.strerror or e}"))
                return
        env = worker_env(dict(os.environ), spec, number, action.profile,
                         investigate_on_retire=self.cfg.investigate_on_retire)
        listeners = self.listeners.get(spec.name, ())
        handoff.environment(env, listeners)
        try:
            child = process.spawn(
                spec.argv,
                env=env,
                cwd=spec.cwd,
                with_channel=True,
                oom_score_adj=self.cfg.oom_score_adj,
                take_terminal=self._terminal and number == 1,
                launcher=cg.launcher() if cg is not None else None,
                listen=[x.fd for x in listeners],
            )
        except process.SpawnError as e:
            if cg is not None:
                cg.remove()
            self.execute(self.policy.spawn_failed(now, spec.name, number,
                                                   status=e.exit_status, message=str(e)))
            return
        tree = CgroupTree(child.pid, cg.procs) if cg is not None else ProcTree(child.pid,
                                                                                child.start)
        h = Handle(spec.name, number, child, tree, cg, oom_kills_at_start=self._oom_kills(),
                   profile=action.profile, started=now)
        self.handles[h.key] = h
        self.by_pid[h.pid] = h
        self.sampler.watch(h.key, h.pid, tree, cg.memory if cg is not None else None,
                           thresholds=spec.thresholds)
        self.events.emit(action.kind, f"started {_argv(spec.argv)} ({action.reason}, profile "
                         f"{action.profile})", **_ids(h), profile=action.profile,
                         reason=action.reason, data={"cause": action.cause.value})
        assert self._tg is not None
        self._tg.start_soon(self._channel_loop, h)
        self._tg.start_soon(self._ready_timer, h)
        if self.recorder is not None:
            self.recorder.burst_later(h, "start", self.sampler)

    def _retire(self, action: Retire) -> None:
        h = self.handles.get(str(GenerationId(action.worker, action.generation)))
        if h is None or h.stopping:
            return
        if not h.alive:  # its root is gone already: what is left of its tree is stopped
            return
        sig = signal_name(self._stop_signal)
        if h.spoke:
            how = (f"shutdown message, up to {format_duration(action.grace_s)} to exit, then "
                   f"{sig}, SIGKILL {format_duration(action.grace_s)} later")
        else:
            how = f"{sig}, SIGKILL {format_duration(action.grace_s)} later"
        self.events.emit(EventType.RETIRE, f"retiring ({action.reason}): {how}", **_ids(h),
                         reason=action.reason, data={"grace_s": action.grace_s})
        self._start_stop(h, action.grace_s, action.reason)

    def _start_stop(self, h: Handle, grace: float, reason: str) -> None:
        h.stopping = True
        shutdown = protocol.Shutdown(grace_s=float(grace), reason=reason)
        assert self._tg is not None
        self._tg.start_soon(self._stop_task, h, grace, shutdown, self._stop_signal)

    async def _stop_task(self, h: Handle, grace: float, shutdown: protocol.Shutdown,
                         sig: int) -> None:
        try:
            with self._contained("the stop of %s", h.key):
                await stop_generation(h, grace, shutdown=lambda: self.send(h, shutdown),
                                      emit=self.events.emit, sig=sig)
        finally:
            if not h.alive:
                self._forget(h)

    def _finish(self, action: Finish) -> None:
        if self.exit_status is None:
            self.exit_status = action.exit_status
        log.log(logging.INFO if action.exit_status == 0 else logging.WARNING, "%s",
                action.message)
        self.stopping = True
        self._done.set()

    def _notify(self, action: Notify) -> None:
        """Tell the generation of `action.level`: on its channel when it speaks it, with
        `--medium-signal` from MEDIUM up; the event says which of the two happened.

        A worker that never spoke its channel is not written to (as `shutdown` is not):
        nothing there reads it, and "told via channel" would be a lie. One that can be told
        neither way gets "not told" once per generation rather than once per reminder: it
        cannot change, and seventeen such lines in 85 s said nothing new.
        """
        h = self.handles.get(str(GenerationId(action.worker, action.generation)))
        if h is None or not h.alive:
            return
        view = self.sampler.view(h.key)
        rss = view.memory if view is not None else 0
        change = action.change
        level = action.level.label
        told = h.spoke and self.send(h, protocol.Pressure(
            level=level, rss=rss, limit=self.limit,
            metric=change.metric if change else "", threshold=change.threshold if change else None))
        sig = self.specs[h.worker].medium_signal
        signalled = sig is not None and action.level >= Level.MEDIUM and \
            process.signal_group(h.child, sig)
        if told or signalled:
            how = [f"told of {level} pressure via channel"] if told else []
            if signalled and sig is not None:
                how.append(f"signalled {signal_name(sig)} for {level} pressure")
            message = "; ".join(how)
        elif self._untold.get(h.worker) == h.number:
            return  # said once for this generation already
        else:
            self._untold[h.worker] = h.number
            no_channel = "its channel is closed" if h.spoke else "no channel (it never spoke one)"
            if sig is None:
                no_signal = "no --medium-signal"
            elif action.level < Level.MEDIUM:
                no_signal = f"{signal_name(sig)} is for MEDIUM and up"
            else:
                no_signal = f"{signal_name(sig)} could not be sent"
            message = f"not told of {level} pressure: {no_channel} and {no_signal}; said " \
                      "once for this generation"
        self.events.emit(EventType.NOTIFY, message, **_ids(h), level=level, rss=rss,
                         data={"channel": told, "signalled": signalled})

    # -- readiness and the channel ---------------------------------------------------------

    async def _ready_timer(self, h: Handle) -> None:
        spec = self.specs[h.worker]
        if spec.probe is not None:
            await self._probe(h, Prober(spec.probe, wall_of(h.started), cwd=spec.cwd,
                                        members=lambda: [pid for pid, _ in h.tree.members()]))
            return
        ready_after = spec.ready_after
        await anyio.sleep(ready_after)
        # A worker that speaks the channel says when it is ready; one that does not is
        # guessed ready once it has stayed alive this long.
        if h.alive and not h.spoke:
            with self._contained("the readiness of %s", h.key):
                self._ready(h, f"guessed: alive for {format_duration(ready_after)}")

    async def _probe(self, h: Handle, prober: Prober) -> None:
        """Probe until the generation serves (ready), or stops waiting: ready by the channel,
        or failed by the policy's ready timeout (the probe's last answer is logged), or gone."""
        def starting() -> bool:
            return h.alive and self.policy.state_of(h.worker, h.number) is STARTING

        self._probers[h.key] = prober
        try:
            answer = await prober.until_ready(starting)
        finally:
            self._probers.pop(h.key, None)
        with self._contained("the readiness of %s", h.key):
            if answer is not None:
                self._ready(h, f"{prober.probe.describe()}: {answer.detail}")
            elif prober.last is not None and not h.spoke and (
                    self.policy.state_of(h.worker, h.number) is not GenerationState.READY):
                self.events.emit(
                    EventType.NOT_READY, f"{prober.probe.describe()} never succeeded "
                    f"({prober.attempts} attempts; the last: {prober.last.detail})",
                    **_ids(h), data={"probe": prober.probe.describe(),
                                     "attempts": prober.attempts, "last": prober.last.detail})

    def _ready(self, h: Handle, how: str) -> None:
        view = self.sampler.view(h.key)
        memory = view.memory if view is not None else None
        actions = self.policy.ready(time.monotonic(), h.worker, h.number, memory, how=how)
        if actions:  # it was starting: from now on its growth counts
            self.sampler.growth_from(h.key, said_ready=h.spoke)
        self.execute(actions)

    async def _channel_loop(self, h: Handle) -> None:
        sock = h.child.channel
        if sock is None:
            return
        # The socket is closed here, after the wait on it has ended: closing it under a
        # pending wait would leave the event loop watching a descriptor number that may
        # be reused. A grandchild can hold the worker's end open, so the exit cancels us.
        try:
            with anyio.CancelScope() as scope:
                h.channel_scope = scope
                if not h.alive:
                    return
                async for message in channel.messages(sock, h.key):
                    h.spoke = True
                    with self._contained("a message from %s", h.key):
                        self._message(h, message)
                log.debug("%s closed its channel; still supervised", h.key)
        finally:
            sock.close()

    def _message(self, h: Handle, message: protocol.FromWorker) -> None:
        # Its figures were bounded where they entered (`channel`); its text is escaped here,
        # and its log lines count against the worker's quota (`EventLog.emit`).
        if isinstance(message, protocol.Ready):
            self._ready(h, "said ready")
        elif isinstance(message, protocol.Stats):
            h.stats = message
        elif isinstance(message, protocol.Trimmed):
            freed = message.rss_before - message.rss_after
            reason = protocol.escape(message.reason, 200) if message.reason else None
            self.events.emit(
                EventType.TRIMMED,
                f"trimmed {message.dropped} objects in {message.ms:.1f}ms, "
                f"RSS {format_size(message.rss_before)} -> {format_size(message.rss_after)} "
                f"({format_size(freed)} freed)", quota=h.key,
                **_ids(h), rss=message.rss_before, rss_after=message.rss_after,
                dropped=message.dropped, ms=message.ms, reason=reason)
        elif isinstance(message, protocol.Report):
            h.deliver(message)
            rid = protocol.escape(message.id, 80)
            if message.error:
                what = (f"refused a leak report ({rid}): "
                        f"{protocol.escape(message.error, 500)}")
            else:
                what = f"leak report {rid} ({message.ms:.0f}ms)" + (
                    f": {protocol.escape(message.finding, 2000)}" if message.finding else "")
            self.events.emit(EventType.REPORT, what, quota=h.key, **_ids(h), ms=message.ms,
                             data=msgspec.to_builtins(message))

    def send(self, h: Handle, message: protocol.ToWorker) -> bool:
        if h.child.channel is None or not h.alive:
            return False
        return channel.send(h.child.channel, message, h.key)

    # -- pressure ----------------------------------------------------------------------------

    def _level(self, change: Change) -> None:
        now = time.monotonic()
        headroom = self._headroom()
        if change.key == "":
            self.events.emit(
                EventType.LEVEL, f"container {change.previous.label} -> {change.level.label}: "
                f"{explain(change)}", level=change.level.label, previous=change.previous.label,
                metric=change.metric, value=change.value, threshold=change.threshold)
            candidates = []
            for h in self.live():
                view = self.sampler.view(h.key)
                if view is not None:
                    candidates.append((h.worker, h.number, view.slope or 0.0, view.memory))
            self.execute(self.policy.container_level(now, change, candidates, headroom=headroom))
            return
        h = self.handles.get(change.key)
        if h is None or not h.alive:
            return
        if change.source == "oom" and change.level > change.previous:
            h.oom_noticed = True
        woken = "" if change.source == "tick" else f" (the kernel's {change.source} notification)"
        self.events.emit(
            EventType.LEVEL, f"{change.previous.label} -> {change.level.label}: "
            f"{explain(change)}{woken}", **_ids(h), level=change.level.label,
            previous=change.previous.label, metric=change.metric, value=change.value,
            threshold=change.threshold,
            data={"detect_ms": (change.t_ns - change.first_ns) / 1e6,
                  "crossed_ns": change.first_ns, "confirmed_ns": change.t_ns,
                  "source": change.source})
        if self.recorder is not None:
            self.recorder.burst_later(h, "level", self.sampler)
        self.execute(self.policy.level(now, h.worker, h.number, change, headroom=headroom,
                                        container=self._container_level()))

    # -- exits -------------------------------------------------------------------------------

    def _reap(self) -> None:
        # Level changes first: an OOM notification that came before the kill is then known
        # when its victim's exit is told.
        self._take_changes()
        for pid, raw in reaper.reap():
            h = self.by_pid.pop(pid, None)
            prober = None if h is not None else next(
                (p for p in self._probers.values() if p.owns(pid)), None)
            if prober is not None:  # a readiness probe's command
                prober.exited(pid, raw)
                continue
            if h is None:
                log.debug("reaped orphan %d (%s)", pid, ExitStatus.from_wait(raw).describe())
                continue
            h.child.reaped(raw)
            with self._contained("the exit of %s", h.key):
                self._exited(h, ExitStatus.from_wait(raw))

    def _exited(self, h: Handle, status: ExitStatus) -> None:
        h.status = status
        h.exited.set()
        if self.recorder is not None:
            self.recorder.burst_later(h, "exit", self.sampler)
        # Still sampled until what it left of its tree is gone (`_forget`): a retiring
        # generation's leftovers stay in `status`, the metrics and the snapshots.
        if h.channel_scope is not None:
            h.channel_scope.cancel()
        by_us = h.by_us(status)
        # The notification came before the kill (memwarden's own KILL comes only after a
        # grace, so a SIGKILL after it is the kernel's); else the counters say it.
        noticed = status.signal == signal.SIGKILL and h.oom_noticed
        if noticed:
            by_us = False
        oom = noticed or (status.signal == signal.SIGKILL and not by_us and (
            h.cgroup.oom_kills() > 0 if h.cgroup is not None
            else self._oom_kills() > h.oom_kills_at_start))
        role = self.policy.role(h.worker, h.number)
        retired = role == "retiring"
        self.events.emit(
            EventType.EXIT, f"{status.describe(oom_kill=oom, expected=by_us)} after "
            f"{h.uptime:.1f}s" + (" (retired)" if retired and by_us else ""),
            **_ids(h), returncode=status.code, signal=status.signal_name,
            exit_status=status.shell, oom_kill=oom, expected=by_us, uptime_s=h.uptime,
            data={"oom_from": "notification" if noticed else "counter"} if oom else {})
        if not h.stopping:
            # Its main process is gone; what it left of its tree gets the same escalation.
            self._start_stop(h, self.specs[h.worker].grace, "its main process exited")
        elif h.stopped.is_set():
            self._forget(h)
        self.execute(self.policy.exited(
            time.monotonic(), h.worker, h.number,
            Exit(status.shell, status.ok, status.describe(oom_kill=oom, expected=by_us),
                 by_us=by_us)))

    def _forget(self, h: Handle) -> None:
        """The generation is reaped and its tree gone: stop sampling it. Without a cgroup
        its handle goes now; with one, once the housekeeping has removed the cgroup (the
        ticker lets go of its files first, at its next tick), so that `status` shows the
        generation until nothing of it is left."""
        self.sampler.unwatch(h.key)
        if h.cgroup is None:
            self.handles.pop(h.key, None)
        elif h.cgroup not in self._leftover:
            self._leftover.append(h.cgroup)

    def _remove_leftovers(self) -> None:
        kept = []
        for cg in self._leftover:
            if not cg.remove():
                kept.append(cg)
                continue
            for key in [k for k, h in self.handles.items() if h.cgroup is cg and not h.alive]:
                del self.handles[key]
        self._leftover = kept

    async def _last_rites(self) -> None:
        """Nothing we started may outlive us: TERM stragglers, then KILL, reaping all; then
        the generations' cgroups, with whatever they daemonised out of memwarden's sight."""
        self._reap()
        if reaper.has_children() or process.kill_all_descendants(0):
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
        for h in list(self.handles.values()):
            if h.cgroup is not None:
                h.cgroup.kill()
                self._leftover.append(h.cgroup)
        self._remove_leftovers()
        if self.measure.cgroups is not None:
            self.measure.cgroups.close()

    # -- small things ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _contained(self, what: str, *args: object) -> Iterator[None]:
        """A fault in deciding or recording must never end supervision: log it, go on."""
        try:
            yield
        except Exception:
            log.exception("internal error while handling " + what + "; supervision goes on",
                          *args)

    def live(self) -> list[Handle]:
        """Every generation whose main process has not been reaped yet."""
        return [h for h in self.handles.values() if h.alive]

    def _headroom(self) -> int | None:
        """Bytes left under the limit for the container's working set, when both are known."""
        container = self.sampler.container()
        if self.limit is None or container is None or container.working_set < 0:
            return None  # no limit, or no cgroup read yet
        return self.limit - container.working_set

    def _container_level(self) -> Level:
        container = self.sampler.container()
        return container.level if container is not None else Level.LOW

    def _oom_kills(self) -> int:
        if self.cgroup is None:
            return 0
        try:
            return self.cgroup.events().get("oom_kill", 0)
        except OSError:
            return 0


def _ids(h: Handle) -> dict[str, object]:
    return {"worker": h.worker, "generation": h.number, "pid": h.pid}


def _swallow(signum: int, frame: object) -> None:
    """TSTP, TTIN, TTOU must neither stop memwarden nor be inherited as ignored."""


def _argv(argv: list[str]) -> str:
    text = " ".join(argv)
    return text if len(text) <= 80 else text[:77] + "..."
