"""What `memwarden status`, `status --check` and `top` print, from one `control.Reply`.

`status --check` is meant as a probe (a Kubernetes exec probe, a Docker HEALTHCHECK, a
monitoring plugin): it imports the client's side of the control socket only, so that it
costs little inside the very cgroup it watches. Its exit statuses:

| status | meaning |
|---|---|
| 0 | live, and (for `--check ready`, the default) every worker has a ready generation |
| 1 | no memwarden answers at the control socket (or one of another user) |
| 3 | live, but some worker has no ready generation (starting, restarting, ended, stopping) |
| 4 | not live: the sampler stopped ticking |
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from supervisor.core.units import format_size
from supervisor.faces import control

EXIT_OK, EXIT_NO_ANSWER, EXIT_NOT_READY, EXIT_NOT_LIVE = 0, 1, 3, 4
#: Processes listed under each generation, biggest first (`status --json` has them all).
MEMBERS_SHOWN = 5


def check(reply: control.Reply, what: str = "ready") -> tuple[int, str]:
    """(exit status, one line) for `status --check [ready|live]`."""
    if reply.live is None or reply.ready is None:
        return EXIT_NO_ANSWER, "this memwarden does not report its health; upgrade it"
    workers = len(reply.started)
    if not reply.live:
        return EXIT_NOT_LIVE, f"not live: {reply.health}"
    if what == "live":
        return EXIT_OK, f"live: the sampler ticks ({reply.ticks} ticks)"
    if not reply.ready:
        return EXIT_NOT_READY, f"not ready: {reply.health}"
    return EXIT_OK, f"ready: {workers} worker(s) with a ready generation, the sampler ticks"


#: The columns of a generation's row, in their order on screen: (header, width, alignment,
#: rank). A terminal too narrow for them all loses the highest ranks first, so that what
#: says whether a worker is in trouble (its level, memory, growth) stays on an 80-column
#: screen: cut at the width instead, every row lost its level, growth and uptime there.
COLUMNS: tuple[tuple[str, int, str, int], ...] = (
    ("worker", 16, "<", 0), ("gen", 4, ">", 1), ("pid", 7, ">", 7), ("state", 9, "<", 6),
    ("profile", 8, "<", 8), ("memory", 11, ">", 2), ("rss", 11, ">", 9),
    ("procs", 5, ">", 10), ("level", 8, "<", 3), ("growth", 11, ">", 4),
    ("uptime", 8, ">", 5),
)


def _fit(widths: dict[str, int], width: int | None) -> list[str]:
    """The columns shown: all of them without a `width`, else the lowest ranks that fit
    (the worker's name always)."""
    kept = [name for name, *_ in COLUMNS]
    if width is None:
        return kept
    for name, *_ in sorted(COLUMNS, key=lambda c: -c[3]):
        if sum(widths[c] for c in kept) + len(kept) - 1 <= width or name == "worker":
            break
        kept.remove(name)
    return kept


def render(reply: control.Reply, members: int = MEMBERS_SHOWN,
           width: int | None = None) -> list[str]:
    """The status table: a summary line, one row per live generation and its biggest
    processes, and a line saying why memwarden is not live or not ready.

    With a `width` (a terminal's), the rows leave out columns by rank (`COLUMNS`) until
    they fit, and the name column is only as wide as the longest name (a longer one than
    16 characters is cut); the other lines are the caller's to cut."""
    limit = format_size(reply.limit) if reply.limit else "none"
    used = format_size(reply.container) if reply.container is not None else "-"
    widths = {name: w for name, w, *_ in COLUMNS}
    if width is not None:
        longest = max((len(w.name) for w in reply.workers), default=0)
        widths["worker"] = min(widths["worker"], max(len("worker"), longest))
    shown = _fit(widths, width)
    align = {name: a for name, _, a, _ in COLUMNS}

    def row(cells: dict[str, str]) -> str:
        if width is not None:
            cells["worker"] = cells["worker"][:widths["worker"]]
        return " ".join(f"{cells[c]:{align[c]}{widths[c]}}" for c in shown)

    lines = [f"limit {limit}  container {used}  memory by {reply.measure}  ticks "
             f"{reply.ticks}  late {reply.late}  missed {reply.missed}",
             row({name: name for name, *_ in COLUMNS})]
    for w in reply.workers:
        lines.append(row({
            "worker": w.name, "gen": str(w.generation), "pid": str(w.pid), "state": w.state,
            "profile": w.profile,
            "memory": format_size(w.memory) if w.memory is not None else "-",
            "rss": format_size(w.rss) if w.rss is not None else "-",
            "procs": str(w.procs or 0), "level": w.level or "-",
            "growth": f"{w.growth / 1e6:+.2f}MB/s" if w.growth is not None else "-",
            "uptime": f"{w.uptime_s:.0f}s"}))
        ranked = sorted(w.members, key=lambda m: -m.rss)
        for m in ranked[:members]:
            share = f"{m.share:>4.0%}" if m.share is not None else "   -"
            pss = f"pss {format_size(m.pss)}" if m.pss is not None else ""
            what = m.cmdline or m.name or "?"
            lines.append(f"{'':21} {m.pid:>7} {format_size(m.rss):>11} {share} {pss:>15}  "
                         f"{what}")
        if len(ranked) > members:
            lines.append(f"{'':29} ... and {len(ranked) - members} more processes "
                         "(memwarden status --json lists them all)")
    if reply.health:
        lines.append(reply.health)
    return lines


def top(ask: Callable[[], control.Reply], interval: float, count: int | None,
        out: TextIO = sys.stdout) -> int:
    """Show the status every `interval` seconds, `count` times (None: until interrupted).

    On a terminal it redraws in place on the alternate screen (no flicker, the scrollback
    left as it was, restored on the way out); otherwise it prints one block per refresh,
    each headed by the time, for a file or a pipe. Raises OSError when memwarden stops
    answering (after leaving the alternate screen).
    """
    screen = out.isatty()
    if screen:
        out.write("\x1b[?1049h\x1b[?25l")  # the alternate screen, the cursor hidden
    try:
        shown = 0
        while True:
            width = _columns(out) if screen else None
            lines = [f"memwarden top  {time.strftime('%H:%M:%S')}  every {interval:g}s",
                     *render(ask(), width=width)]
            if screen:
                # Home, then each line cut to the width and cleared to its end, then the rest
                # of the screen cleared: the old frame is overwritten, never blanked first.
                out.write("\x1b[H" + "".join(f"{line[:width]}\x1b[K\r\n" for line in lines)
                          + "\x1b[J")
            else:
                out.write("\n".join(lines) + "\n\n")
            out.flush()
            shown += 1
            if count is not None and shown >= count:
                return EXIT_OK
            time.sleep(interval)
    finally:
        if screen:
            out.write("\x1b[?25h\x1b[?1049l")
            out.flush()


def _columns(out: TextIO) -> int:
    """The terminal's width (os, not shutil: shutil would cost a probe the bz2 and lzma
    modules)."""
    try:
        return os.get_terminal_size(out.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


__all__ = ["COLUMNS", "EXIT_NOT_LIVE", "EXIT_NOT_READY", "EXIT_NO_ANSWER", "EXIT_OK",
           "MEMBERS_SHOWN", "check", "render", "top"]
