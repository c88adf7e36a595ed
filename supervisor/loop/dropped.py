"""Bad input from one source, counted and logged at most once per interval.

A worker writing `not json` 200,000 times must not become 200,000 log lines: the first
line dropped is logged at once, those after it within `interval_s` are only counted, and
the next line logged carries that count. Whatever is still uncounted is said by `flush`
(a channel closing). The reasons are escaped by the caller (`workers.protocol.escape`).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("memwarden.dropped")

#: Seconds between two log lines about one source.
INTERVAL_S = 10.0


class DropLog:
    """Counts what one source (`channel of crawler#2`, `control socket`) sent that was dropped.

    `total` counts every drop since the start; `drop` never raises.
    """

    def __init__(self, source: str, interval_s: float = INTERVAL_S) -> None:
        self.source = source
        self.interval_s = interval_s
        self.total = 0
        self._unlogged = 0
        self._last_why = ""
        self._next_log = 0.0

    def drop(self, why: str) -> None:
        """Count one dropped line (or request); log it unless a line was logged lately."""
        self.total += 1
        self._unlogged += 1
        self._last_why = why
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + self.interval_s
            self.flush()

    def flush(self) -> None:
        """Log what was dropped since the last line, if anything."""
        n, self._unlogged = self._unlogged, 0
        if n == 1:
            log.warning("%s: dropped %s", self.source, self._last_why)
        elif n > 1:
            log.warning("%s: dropped %d more bad lines (%d in all); the last: %s",
                        self.source, n, self.total, self._last_why)


__all__ = ["INTERVAL_S", "DropLog"]
