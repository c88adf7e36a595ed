"""systemd's notification protocol (`sd_notify`), from the standard library: `Type=notify`
and `WatchdogSec=` in a unit (`examples/memwarden.service`).

* `READY=1` once every worker first has a ready generation (`health.Health.ready`), so
  that units ordered after memwarden's start when its workers can serve;
* `STATUS=` whenever a level, a generation or readiness changes ("2 workers: crawler high
  (gen 3), indexer low (gen 1); container medium"), shown by `systemctl status`;
* `WATCHDOG=1` every half `WATCHDOG_USEC`, only while the sampler's tick count moves
  (`health.Health.live`): a stuck sampler is what would let the kernel act first, and
  systemd then restarts memwarden;
* `STOPPING=1` when a stop begins, with `EXTEND_TIMEOUT_USEC` covering the ordered stop
  (each worker's grace for `shutdown`, then for TERM), in case `TimeoutStopSec` is short.

`NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` are removed from memwarden's
environment once read, as `sd_notify(unset_environment=1)` does: a worker that inherited
them would speak to systemd in memwarden's place. The socket never blocks: a message
systemd cannot take at once is dropped (and said once in the log).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING

import anyio

from snapshots.schema import Event, EventType
from supervisor.faces import view

if TYPE_CHECKING:
    from supervisor.loop.arbiter import Arbiter, Service

log = logging.getLogger("memwarden.sdnotify")

#: Events after which the STATUS line is worked out again (sent only when it changed).
_STATUS_EVENTS = frozenset({EventType.READY, EventType.LEVEL, EventType.START,
                            EventType.SPAWN, EventType.EXIT, EventType.SHUTDOWN})
#: Seconds a stop may take beyond twice the longest grace (the KILL and its reaping).
_STOP_SLACK_S = 5.0


class Notifier:
    """Sends notifications to the socket systemd named; `sent` counts the messages."""

    def __init__(self, address: str, watchdog_s: float | None = None) -> None:
        # An address starting with "@" is in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s = watchdog_s
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self.sent = 0
        self.ready = False
        self.stopping = False
        self._status = ""
        self._failed = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for, None when not run under `Type=notify` (or under
        an address family this does not speak). Removes the variables from `environ`."""
        environ = os.environ if environ is None else environ
        address = environ.pop("NOTIFY_SOCKET", "")
        usec = environ.pop("WATCHDOG_USEC", "")
        pid = environ.pop("WATCHDOG_PID", "")
        if not address:
            return None
        if not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET %r is not a Unix socket path; not notifying systemd",
                        address[:100])
            return None
        watchdog_s = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1e6
        return cls(address, watchdog_s)

    def send(self, *fields: str) -> bool:
        """Send `fields` as one message (`READY=1`, `STATUS=...`); False when it was not taken."""
        try:
            self.sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at %s (%s); later failures are not logged",
                            self.address.replace("\0", "@"), e.strerror or e)
            return False
        self.sent += 1
        return True

    def on_event(self, arbiter: Arbiter, event: Event) -> None:
        """An `EventLog` listener: READY=1, STATUS= and STOPPING=1 as events happen. Never
        raises: it runs inside whatever emitted the event."""
        try:
            self._on_event(arbiter, event)
        except Exception:
            log.exception("internal error while notifying systemd; supervision goes on")

    def _on_event(self, arbiter: Arbiter, event: Event) -> None:
        if event.type == EventType.SHUTDOWN:
            self.stop(arbiter)
        if event.type not in _STATUS_EVENTS:
            return
        if not self.ready and not self.stopping and arbiter.health.ready().ok:
            self.ready = True
            self.send("READY=1", f"STATUS={self._status_line(arbiter)}")
            self._status = self._status_line(arbiter)
            return
        self.status(arbiter)

    def status(self, arbiter: Arbiter) -> None:
        """Send STATUS= when the line changed."""
        line = self._status_line(arbiter)
        if line != self._status and self.send(f"STATUS={line}"):
            self._status = line

    def stop(self, arbiter: Arbiter) -> None:
        """STOPPING=1 (once), with time enough for the ordered stop."""
        if self.stopping:
            return
        self.stopping = True
        grace = max((s.grace for s in arbiter.specs.values()), default=0.0)
        usec = int((2 * grace + _STOP_SLACK_S) * 1e6)
        self.send("STOPPING=1", f"EXTEND_TIMEOUT_USEC={usec}", "STATUS=stopping")

    @staticmethod
    def _status_line(arbiter: Arbiter) -> str:
        """One line from the status view `memwarden status` shows (`view.status`)."""
        if arbiter.stopping:
            return "stopping"
        reply = view.status(arbiter)
        current = {w.name: w for w in reply.workers if w.role == "current"}
        shown = []
        for name in reply.started:
            w = current.get(name)
            shown.append(f"{name} not running" if w is None else
                         f"{name} {w.level or '-'} (gen {w.generation}, {w.state})")
        line = f"{len(shown)} worker(s): " + ", ".join(shown)
        if reply.container_level is not None:
            line += f"; container {reply.container_level}"
        return line

    async def watchdog(self, arbiter: Arbiter) -> None:
        """WATCHDOG=1 every half watchdog period while the sampler ticks, until cancelled."""
        if self.watchdog_s is None:
            return
        while True:
            if arbiter.health.live().ok:
                self.send("WATCHDOG=1")
            await anyio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        self.sock.close()


async def supervise(arbiter: Arbiter, notifier: Notifier | None,
                    services: Sequence[Service] = ()) -> int:
    """Run `arbiter` (with `services`) with `notifier` hearing its events and feeding the
    watchdog; return the exit status. Without a notifier this is `arbiter.run(services)`."""
    if notifier is None:
        return await arbiter.run(services)
    arbiter.events.listeners.append(lambda event: notifier.on_event(arbiter, event))
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.watchdog, arbiter)
        status = await arbiter.run(services)
        notifier.stop(arbiter)
        tg.cancel_scope.cancel()
    notifier.close()
    return status


__all__ = ["Notifier", "supervise"]
