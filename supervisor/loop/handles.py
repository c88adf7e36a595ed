"""The OS side of one running generation: its process, its channel and what the loop awaits.

The policy owns everything about a generation's life (its state, profile, readiness, the
grace it gets); a `Handle` holds only what the main loop needs to act on the process and
to hear from it, and facts only the OS side can know (what was sent to it, what it said).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio

from supervisor.core.exitstatus import ExitStatus
from supervisor.core.identity import GenerationId
from supervisor.linux.process import Child
from supervisor.linux.trees import Tree
from supervisor.linux.workercgroup import GenerationCgroup
from workers import protocol


@dataclass(eq=False)
class ReportWaiter:
    """One asked-for leak report: `came` is set once `report` is there."""

    report: protocol.Report | None = None
    came: anyio.Event = field(default_factory=anyio.Event)

    async def wait(self) -> None:
        await self.came.wait()


@dataclass(eq=False)
class Handle:
    """One started generation of a worker, until it has been reaped and stopped."""

    worker: str
    number: int
    child: Child
    tree: Tree  # who belongs to it (`trees`): its cgroup's processes, or its /proc tree
    cgroup: GenerationCgroup | None = None  # its own cgroup, in cgroup mode
    started: float = field(default_factory=time.monotonic)
    spoke: bool = False  # it sent at least one channel message: it is cooperative
    stats: protocol.Stats | None = None  # its last `stats` message
    told_shutdown: bool = False
    signalled: set[int] = field(default_factory=set)  # signals memwarden sent to its tree
    oom_kills_at_start: int = 0
    profile: str = ""  # what it was started with, shown while its leftovers are stopped
    #: The kernel's OOM notification on its cgroup arrived (`linux.notify`): a SIGKILL
    #: reaped after it is the OOM killer's, known before the cgroup's counter is read.
    oom_noticed: bool = False
    status: ExitStatus | None = None
    stopping: bool = False  # a stop (shutdown, TERM, KILL) is under way
    exited: anyio.Event = field(default_factory=anyio.Event)
    stopped: anyio.Event = field(default_factory=anyio.Event)  # root reaped, members gone
    channel_scope: anyio.CancelScope | None = None
    #: Reports asked for by request id (`memwarden investigate`), until they come or the
    #: asker stops waiting.
    awaited: dict[str, ReportWaiter] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The sampler's key: `worker#generation`."""
        return str(GenerationId(self.worker, self.number))

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def alive(self) -> bool:
        """True until the root process has been reaped."""
        return self.status is None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def await_report(self, rid: str) -> ReportWaiter:
        """Start waiting for the `report` answering request `rid`."""
        waiter = self.awaited[rid] = ReportWaiter()
        return waiter

    def forget_report(self, rid: str) -> None:
        self.awaited.pop(rid, None)

    def deliver(self, report: protocol.Report) -> None:
        """Hand a `report` to whoever asked for it (nobody, for an unasked one)."""
        waiter = self.awaited.pop(report.id, None)
        if waiter is not None:
            waiter.report = report
            waiter.came.set()

    def by_us(self, status: ExitStatus) -> bool:
        """Whether an exit followed memwarden's own request: its `shutdown` or a signal, and
        not a SIGKILL memwarden never sent (the OOM killer, a person's `kill -9`)."""
        if status.signal is not None and status.signal not in self.signalled:
            return False
        return self.told_shutdown or bool(self.signalled)
