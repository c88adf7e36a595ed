"""The one owner of `waitpid`: every child, known worker or re-parented orphan, is reaped here."""

from __future__ import annotations

import os


def reap() -> list[tuple[int, int]]:
    """Collect every exited child without blocking; return (pid, raw wait status) pairs.

    Stopped children are not reported (no WUNTRACED): a stopped worker has not exited.
    """
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def has_children() -> bool:
    """True while any child (running or zombie) remains."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True
