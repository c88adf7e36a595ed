"""Restart decisions: exponential backoff and a budget of starts per window (pure).

Two kinds of start draw on one budget: a restart after the current generation exited by
itself (`on_exit`, subject to `--restart`), and a replacement that died, or never said
ready, before it could take over (`on_failed_start`, whatever `--restart` says). Both are
starts that did not keep the worker up; a worker that keeps doing either within the window
has no future in this configuration.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

Restart = Literal["never", "on-failure", "always"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Start again after `delay_s`, or not (`why`); `attempt` counts starts in the window."""

    restart: bool
    delay_s: float = 0.0
    attempt: int = 0
    why: str = ""
    #: True when the budget, not the restart setting, said no.
    spent: bool = False


class RestartTracker:
    """Pure: feed it exits and failed starts with monotonic times, get decisions back."""

    def __init__(
        self, policy: Restart, *, budget: int, window_s: float, initial_s: float, max_s: float
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.window_s = window_s
        self.initial_s = initial_s
        self.max_s = max_s
        self._starts: deque[float] = deque()

    def on_exit(self, now: float, *, ok: bool) -> Decision:
        """Decide for the current generation's exit at `now`; `ok` is True for status 0."""
        if self.policy == "never":
            return Decision(False, why="--restart is never")
        if self.policy == "on-failure" and ok:
            return Decision(False, why="it exited with status 0 and --restart is on-failure")
        return self._draw(now, "restarts")

    def on_failed_start(self, now: float) -> Decision:
        """Count a start that did not become ready; `restart` is False once the budget is spent."""
        return self._draw(now, "failed starts and restarts")

    def _draw(self, now: float, what: str) -> Decision:
        while self._starts and now - self._starts[0] > self.window_s:
            self._starts.popleft()
        if len(self._starts) >= self.budget:
            return Decision(
                False, attempt=len(self._starts), spent=True,
                why=f"restart budget spent: {len(self._starts)} {what} within "
                f"{self.window_s:g}s (--restart-budget {self.budget})",
            )
        self._starts.append(now)
        attempt = len(self._starts)
        delay = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        return Decision(True, delay_s=delay, attempt=attempt)
