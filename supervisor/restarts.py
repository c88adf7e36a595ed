"""Crash-restart decisions: exponential backoff and a budget of restarts per window."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

Restart = Literal["never", "on-failure", "always"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a worker exited by itself: restart after `delay_s`, or not (`why`)."""

    restart: bool
    delay_s: float = 0.0
    attempt: int = 0
    why: str = ""


class RestartTracker:
    """Pure: feed it exits with monotonic times, get restart decisions back."""

    def __init__(
        self, policy: Restart, *, budget: int, window_s: float, initial_s: float, max_s: float
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.window_s = window_s
        self.initial_s = initial_s
        self.max_s = max_s
        self._restarts: deque[float] = deque()

    def on_exit(self, now: float, *, ok: bool) -> Decision:
        """Decide for an exit at `now`; `ok` is True for status 0."""
        if self.policy == "never":
            return Decision(False, why="--restart is never")
        if self.policy == "on-failure" and ok:
            return Decision(False, why="it exited with status 0 and --restart is on-failure")
        while self._restarts and now - self._restarts[0] > self.window_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.budget:
            return Decision(
                False,
                attempt=len(self._restarts),
                why=f"restart budget spent: {len(self._restarts)} restarts within "
                f"{self.window_s:g}s (--restart-budget {self.budget})",
            )
        self._restarts.append(now)
        attempt = len(self._restarts)
        delay = min(self.max_s, self.initial_s * 2 ** (attempt - 1))
        return Decision(True, delay_s=delay, attempt=attempt)
