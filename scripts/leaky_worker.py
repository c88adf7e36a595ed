#!/usr/bin/env python3
"""A worker that uses memory on command: the workhorse of memwarden's tests and demos.

It allocates real, touched memory (byte strings in chunks of at most 1 MB, which glibc
serves with mmap, so freeing them returns the memory at once) on a steady 10 ms cadence
towards a target computed from the time since start (no drift):

    target = start + min(rate * t, max - start)   (or the --oscillate square wave)
           + spike while it lasts - what trims gave back

Examples:
    leaky_worker.py --rate 50MB/s --max 300          # grow, then hold at 300 MB
    leaky_worker.py --oscillate 50:150:2             # 50 MB / 150 MB, 2 s period
    leaky_worker.py --children 3 --child-mb 20       # three grandchildren of 20 MB each
    leaky_worker.py --channel --rate 5MB/s           # speaks the memwarden channel

It stays alive until killed unless --exit-after says otherwise, and prints at most one
status line per second on stderr. Only --channel imports the workers library.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time

TICK_S = 0.010
CHUNK = 1_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")
_UNITS = {"": 1_000_000, "b": 1, "kb": 1000, "mb": 1_000_000, "gb": 1_000_000_000,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def size(text: str) -> int:
    """Bytes in `text`: a number of MB (`300`) or a size with a unit (`300MB`, `1GiB`)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 300, 300MB or 1GiB, "
                                         f"got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def rate(text: str) -> float:
    """Bytes per second in `text` such as `50MB/s` (the `/s` is optional)."""
    return float(size(text.removesuffix("/s")))


def oscillation(text: str) -> tuple[int, int, float]:
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected LOW_MB:HIGH_MB:PERIOD_S, got {text!r}")
    low, high, period = size(parts[0]), size(parts[1]), float(parts[2])
    if period <= 0 or high < low:
        raise argparse.ArgumentTypeError(f"need LOW <= HIGH and a positive period: {text!r}")
    return low, high, period


def file_spec(text: str) -> tuple[str, int]:
    path, sep, mb = text.rpartition(":")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected PATH:SIZE_MB, got {text!r}")
    return path, size(mb)


def rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def touched(n: int) -> bytes:
    # Repetition fills every byte, so every page is really resident (a zeroed
    # bytearray of this size would be fresh mmap pages the kernel has not backed yet).
    return b"\xa5" * n


class Memory:
    """Chunks held, oldest first."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.held = 0

    def grow_to(self, target: int) -> None:
        while self.held < target:
            n = min(CHUNK, target - self.held)
            self.chunks.append(touched(n))
            self.held += n
        while self.chunks and self.held - len(self.chunks[-1]) >= target:
            self.held -= len(self.chunks.pop())

    def free_oldest(self, fraction: float) -> tuple[int, int]:
        """Free the oldest `fraction` of the chunks; return (chunks, bytes) freed."""
        n = round(len(self.chunks) * fraction)
        freed = sum(len(c) for c in self.chunks[:n])
        del self.chunks[:n]
        self.held -= freed
        return n, freed


def start_children(n: int, mb: int) -> list[int]:
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                _die_with_parent()
                held = touched(mb)  # noqa: F841 - held until killed
                while True:
                    signal.pause()
            finally:
                os._exit(0)
        pids.append(pid)
    return pids


def _die_with_parent() -> None:
    # A grandchild must not outlive the worker when only the worker's pid is killed.
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(0)


def write_file(path: str, nbytes: int) -> None:
    block = touched(min(nbytes, 4 * CHUNK))
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            left -= f.write(block[:left])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=rate, default=0.0, help="growth, e.g. 50MB/s (default 0)")
    p.add_argument("--start", type=size, default=0, help="baseline MB allocated at once")
    p.add_argument("--max", type=size, default=None, help="stop growing at this many MB")
    p.add_argument("--spike", type=size, default=0, help="one spike of this many MB")
    p.add_argument("--spike-at", type=float, default=1.0, help="seconds before the spike")
    p.add_argument("--spike-hold", type=float, default=0.1, help="seconds the spike lasts")
    p.add_argument("--oscillate", type=oscillation, default=None,
                   metavar="LOW_MB:HIGH_MB:PERIOD_S", help="square wave instead of growth")
    p.add_argument("--children", type=int, default=0, help="grandchildren that allocate")
    p.add_argument("--child-mb", type=size, default=size("10"), help="MB per grandchild")
    p.add_argument("--channel", action="store_true",
                   help="speak the memwarden channel: ready; on pressure free and report")
    p.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM")
    p.add_argument("--write-file", type=file_spec, default=None, metavar="PATH:SIZE_MB",
                   help="write a file of this size first (page cache)")
    p.add_argument("--exit-after", nargs=2, metavar=("S", "CODE"), default=None,
                   help="exit with CODE after S seconds")
    args = p.parse_args(argv)
    exit_at = exit_code = None
    if args.exit_after:
        exit_at, exit_code = float(args.exit_after[0]), int(args.exit_after[1])
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.write_file:
        write_file(*args.write_file)
    children = start_children(args.children, args.child_mb)
    mem = Memory()
    given_back = 0

    client = None
    if args.channel:
        import workers

        client = workers.connect()

        def shed(fraction: float) -> int:
            nonlocal given_back
            n, freed = mem.free_oldest(fraction)
            given_back += freed
            return n

        client.add_trim(shed, name="leaky_worker.chunks")

    start = time.monotonic()
    tick = 0
    next_print = start
    print(f"leaky_worker: pid {os.getpid()} started, children {children}",
          file=sys.stderr, flush=True)
    while True:
        now = time.monotonic()
        t = now - start
        if exit_at is not None and t >= exit_at:
            print(f"leaky_worker: exiting with {exit_code} after {t:.1f} s",
                  file=sys.stderr, flush=True)
            return exit_code
        if args.oscillate:
            low, high, period = args.oscillate
            target = low if (t % period) < period / 2 else high
        else:
            grown = args.rate * t
            if args.max is not None:
                grown = min(grown, max(0, args.max - args.start))
            target = args.start + int(grown)
        if args.spike and args.spike_at <= t < args.spike_at + args.spike_hold:
            target += args.spike
        mem.grow_to(max(0, target - given_back))
        if client is not None:
            client.checkpoint()
            if tick == 0:
                client.ready()
        if now >= next_print:
            print(f"leaky_worker: t={t:.1f}s held={mem.held / 1e6:.1f}MB "
                  f"rss={rss() / 1e6:.1f}MB", file=sys.stderr, flush=True)
            next_print = now + 1.0
        tick += 1
        # Absolute deadlines: a late tick does not push the later ones back.
        time.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))


if __name__ == "__main__":
    sys.exit(main())
