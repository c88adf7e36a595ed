"""Fixtures of the snapshot tests: a small tmpfs that fills up, mounted and unmounted by us."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest


@pytest.fixture
def small_tmpfs(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 256 KiB tmpfs (root only); unmounted at teardown whatever the test did."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs that can fill up")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(directory: pathlib.Path, leave: int = 0) -> pathlib.Path:
    """Fill the file system of `directory` until at most `leave` bytes are free."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        block = b"\0" * 4096
        try:
            while True:
                st = os.statvfs(directory)
                if st.f_bavail * st.f_frsize <= leave:
                    break
                f.write(block)
                f.flush()
        except OSError:
            pass
    return filler
