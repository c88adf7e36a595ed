"""Exit statuses interpreted for people and mapped to the shell convention (128+N)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended, from a raw `waitpid` status."""

    code: int | None  # exit code when it exited
    signal: int | None  # signal number when a signal ended it
    core: bool = False

    @classmethod
    def from_wait(cls, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status), os.WCOREDUMP(status))
        return cls(os.waitstatus_to_exitcode(status), None)

    @property
    def shell(self) -> int:
        """The status a shell, tini or dumb-init would report: the code, or 128+N for signal N."""
        return 128 + self.signal if self.signal is not None else (self.code or 0)

    @property
    def signal_name(self) -> str | None:
        return signal_name(self.signal) if self.signal is not None else None

    @property
    def ok(self) -> bool:
        return self.code == 0

    def describe(self, *, oom_kill: bool = False, expected: bool = False) -> str:
        """One human phrase: "exited with status 1", "killed by SIGKILL: out of memory (...)"."""
        if self.signal is None:
            return f"exited with status {self.code}"
        text = f"killed by {self.signal_name}"
        if self.core:
            text += " (core dumped)"
        if self.signal == signal.SIGKILL and not expected:
            if oom_kill:
                text += "; the cgroup's oom_kill count rose: out of memory (kernel OOM killer)"
            else:
                text += "; not sent by memwarden: perhaps out of memory or killed by hand"
        return text


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def parse_signal(name: str) -> signal.Signals:
    """Accept `USR2`, `SIGUSR2` or `12`; raise ValueError naming the accepted form."""
    text = name.strip().upper()
    try:
        return signal.Signals(int(text)) if text.isdigit() else signal.Signals[
            text if text.startswith("SIG") else "SIG" + text]
    except (KeyError, ValueError):
        raise ValueError(f"expected a signal name such as USR2 or SIGUSR2, got {name!r}") from None
