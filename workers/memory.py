"""The process's own memory: RSS from /proc/self/statm and glibc's allocator knobs.

`rss()` costs one `pread` of a kept-open descriptor (about a microsecond), so it can be
called on every step. The glibc functions are found through ctypes on first use;
`ctypes` is imported only then, which keeps `import workers` light.
"""

from __future__ import annotations

import os
import threading
from typing import Any

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# glibc's mallopt parameter number for M_MMAP_THRESHOLD (malloc.h).
_M_MMAP_THRESHOLD = -3

_statm_fd = -1
_statm_pid = -1
_statm_lock = threading.Lock()
_libc: Any = None
_libc_probed = False


def rss() -> int:
    """Return this process's resident set size in bytes (0 where /proc is unavailable)."""
    global _statm_fd, _statm_pid
    pid = os.getpid()
    with _statm_lock:
        # After a fork the kept descriptor still reads the parent's statm: reopen it.
        if _statm_pid != pid:
            if _statm_fd >= 0:
                os.close(_statm_fd)
                _statm_fd = -1
            try:
                _statm_fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return 0
            _statm_pid = pid
        data = os.pread(_statm_fd, 128, 0)
    return int(data.split()[1]) * PAGE_SIZE


def glibc() -> Any:
    """Return the C library handle when it is glibc, else None (probed once)."""
    global _libc, _libc_probed
    if not _libc_probed:
        _libc_probed = True
        # os.confstr answers without reading the interpreter binary, unlike platform.libc_ver.
        try:
            is_glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
        except (ValueError, OSError):
            is_glibc = False
        if is_glibc:
            import ctypes

            try:
                _libc = ctypes.CDLL(None)
                _libc.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc.malloc_trim.restype = ctypes.c_int
                _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                _libc.mallopt.restype = ctypes.c_int
            except (OSError, AttributeError):
                _libc = None
    return _libc


def malloc_trim() -> bool:
    """Give free heap memory back to the kernel (`malloc_trim(0)`).

    Returns True when glibc released something, False when it did not or when the C
    library is not glibc (then nothing is done).
    """
    libc = glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


def set_mmap_threshold(nbytes: int) -> bool:
    """Serve allocations of `nbytes` and more with mmap, so freeing them unmaps at once.

    Meant for workers with MB-sized buffers. Returns False where glibc is absent or
    refuses the value.
    """
    if nbytes <= 0:
        raise ValueError(f"mmap threshold must be positive, got {nbytes}")
    libc = glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
