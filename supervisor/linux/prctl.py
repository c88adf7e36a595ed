"""The few Linux calls the standard library lacks: prctl options, via ctypes, resolved once."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def prctl(option: int, arg: int) -> None:
    """Call prctl(2); raise OSError with errno on failure."""
    if _prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_child_subreaper() -> None:
    """Orphans of our descendants are re-parented to us, so the one reaper sees them."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_oom_score_adj(value: int, pid: int | str = "self") -> None:
    """Write `value` to /proc/PID/oom_score_adj; raise OSError (EACCES: lowering it needs
    CAP_SYS_RESOURCE)."""
    with open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write(str(value))


def oom_score_adj(pid: int | str = "self") -> int:
    """The oom_score_adj of PID now; raise OSError when it cannot be read."""
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


def set_parent_death_signal(signum: int) -> None:
    """Deliver `signum` to this process when the thread that forked it exits."""
    prctl(PR_SET_PDEATHSIG, signum)
