"""The one seam for cgroup memory files, v1 and v2.

`CgroupMemory.discover()` finds the supervisor's own memory cgroup (v2 preferred, as the
kernel's unified hierarchy is where containers live today); `usage()` is a pread on a
kept-open descriptor, cheap enough for every tick; the other reads open their file each
time and are meant for the slower discovery cadence.
"""

from __future__ import annotations

import contextlib
import logging
import os

from supervisor.linux.timing import GilRead, KeptOpen, read_whole

log = logging.getLogger("memwarden.cgroup")

#: v1 reports "no limit" as the largest page-aligned signed 64-bit value; anything this
#: large is no limit on any machine that exists.
_V1_UNLIMITED = 2**62


def _parse_flat(text: str) -> dict[str, int]:
    """Parse "key value" lines (memory.stat, memory.events); malformed lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _parse_psi_some_avg10(text: str) -> float | None:
    """Return avg10 of the "some" line of a PSI file; None if absent or malformed."""
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "some":
            for word in words[1:]:
                name, _, value = word.partition("=")
                if name == "avg10":
                    try:
                        return float(value)
                    except ValueError:
                        return None
    return None


def read_text(path: str) -> str | None:
    """A small kernel file as text (`read_whole`, the one whole-file reader); None when it
    cannot be read."""
    data = read_whole(path)
    return None if data is None else data.decode(errors="replace")


def read_procs(path: str) -> list[int] | None:
    """The pids a `cgroup.procs` lists (the one reader of those files); None when the cgroup
    is gone or the file cannot be read or parsed."""
    data = read_whole(path)
    try:
        return [int(p) for p in data.split()] if data is not None else None
    except ValueError:
        return None


def read_events(path: str) -> dict[str, int] | None:
    """The counters of the v2 `memory.events` of the cgroup at `path` (the one reader of
    that file); None when it cannot be read."""
    text = read_text(os.path.join(path, "memory.events"))
    return None if text is None else _parse_flat(text)


def _stat_value(data: bytes, key: bytes) -> int | None:
    """The value of `key` in the "key value" lines of `data`; None when absent."""
    at = data.find(b"\n" + key + b" ")
    if at >= 0:
        at += 1
    elif data.startswith(key + b" "):
        at = 0
    else:
        return None
    end = data.find(b"\n", at)
    try:
        return int(data[at + len(key) + 1:end if end >= 0 else len(data)])
    except ValueError:
        return None


def host_psi_some_avg10(path: str = "/proc/pressure/memory") -> float | None:
    """Return the host's memory PSI "some avg10" (percent); None when PSI is unavailable."""
    text = read_text(path)
    return None if text is None else _parse_psi_some_avg10(text)


class CgroupMemory(KeptOpen):
    """Memory figures of one cgroup directory (`version` 1 or 2).

    `close()` closes the kept-open usage file; `usage()` returns -1 after it.
    """

    def __init__(self, path: str, version: int, *, top: str | None = None) -> None:
        """Open the usage file; raise FileNotFoundError when `path` is not a memory cgroup.

        `top` is the hierarchy's mount point: v2 limits are searched from `path` up to it.
        """
        if version not in (1, 2):
            raise ValueError(f"cgroup version must be 1 or 2, got {version}")
        self.path = path
        self.version = version
        self._top = os.path.normpath(top) if top else None
        usage = "memory.current" if version == 2 else "memory.usage_in_bytes"
        fd = os.open(os.path.join(path, usage), os.O_RDONLY | os.O_CLOEXEC)
        self._reader = GilRead(fd, 32)  # the usage file, read every tick
        self._no_memsw = False  # v1: memory.memsw.* absent (no swap accounting)

    @classmethod
    def at(cls, path: str, version: int) -> CgroupMemory:
        """The cgroup at `path`; raise FileNotFoundError when it has no memory files."""
        return cls(path, version)

    @classmethod
    def discover(
        cls,
        proc_self_cgroup: str = "/proc/self/cgroup",
        mounts: str = "/proc/self/mountinfo",
        root: str | None = None,
    ) -> CgroupMemory | None:
        """Return this process's memory cgroup, v2 preferred; None when there is none readable.

        `root` is prepended to every mount point (as if chrooted), so a test can lay out a
        fake v2 tree exactly like the kernel's under a temporary directory.
        """
        membership = read_text(proc_self_cgroup)
        mountinfo = read_text(mounts)
        if membership is None or mountinfo is None:
            return None
        v2_path: str | None = None
        v1_path: str | None = None
        for line in membership.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            hid, controllers, path = parts
            if hid == "0" and controllers == "":
                v2_path = path
            elif "memory" in controllers.split(","):
                v1_path = path
        v2_mount, v1_mount = _mount_points(mountinfo)
        candidates = []
        if v2_path is not None and v2_mount is not None:
            candidates.append((v2_mount, v2_path, 2))
        if v1_path is not None and v1_mount is not None:
            candidates.append((v1_mount, v1_path, 1))
        for (mount_point, mount_root), path, version in candidates:
            # Inside a cgroup namespace the mount root is the namespace root; outside it,
            # a bind-mounted subtree shows its own root: strip it from our path.
            if mount_root != "/" and (path + "/").startswith(mount_root.rstrip("/") + "/"):
                path = path[len(mount_root.rstrip("/")) :] or "/"
            top = (root or "") + mount_point
            full = os.path.normpath(top + "/" + path.lstrip("/"))
            try:
                return cls(full, version, top=top)
            except OSError:
                continue  # e.g. the v2 root cgroup, which has no memory.current
        return None

    @property
    def usage_fd(self) -> int:
        """The kept-open usage file's descriptor (-1 once closed), for a ticker's own reads."""
        return self._reader.fd

    def swap(self) -> int:
        """Bytes of this cgroup's memory swapped out (0 without swap accounting)."""
        if self.version == 2:
            text = read_text(os.path.join(self.path, "memory.swap.current"))
            return int(text) if text and text.strip().isdigit() else 0
        if self._no_memsw:
            return 0
        data = read_whole(os.path.join(self.path, "memory.memsw.usage_in_bytes"))
        if data is None:
            # Without swap accounting the file never appears: not looked for again.
            self._no_memsw = os.path.isdir(self.path)
            return 0
        if not data.strip().isdigit():
            return 0
        return max(int(data) - max(self.usage(), 0), 0)

    def usage(self) -> int:
        """Return memory.current (v2) / memory.usage_in_bytes (v1) in bytes; -1 if unreadable."""
        data = self._reader.read()
        try:
            return int(data.split(None, 1)[0]) if data else -1
        except ValueError:
            return -1

    def stat(self) -> dict[str, int]:
        """Return memory.stat as {name: value}; empty when unreadable."""
        data = read_whole(os.path.join(self.path, "memory.stat"))
        return {} if data is None else _parse_flat(data.decode(errors="replace"))

    def inactive_file(self) -> int:
        """Return the inactive file cache in bytes (v2 inactive_file; v1 total_inactive_file)."""
        data = read_whole(os.path.join(self.path, "memory.stat"))
        if data is None:
            return 0
        value = _stat_value(data, b"inactive_file" if self.version == 2
                            else b"total_inactive_file")
        return value if value is not None and value >= 0 else 0

    def working_set(self) -> int:
        """Return usage minus inactive file cache, floored at 0 (-1 when unreadable): what the
        OOM killer will hit.

        memory.stat is read before usage. A cgroup at its limit reclaims page cache all the
        time; read the other way round, pages reclaimed between the two reads were counted
        as working set, and a plain file writer looked like pressure. This
        order can only err low, by what is reclaimed during one read.
        """
        inactive = self.inactive_file()
        usage = self.usage()
        return max(usage - inactive, 0) if usage >= 0 else -1

    def limit(self) -> int | None:
        """Return the memory limit in bytes, None when unlimited.

        v2: the smallest memory.max / memory.high set on this cgroup or an ancestor up to
        the mount point; v1: hierarchical_memory_limit from memory.stat (which already
        takes ancestors into account).
        """
        if self.version == 1:
            value = self.stat().get("hierarchical_memory_limit")
            if value is None:
                text = read_text(os.path.join(self.path, "memory.limit_in_bytes"))
                value = int(text) if text and text.strip().isdigit() else None
            return None if value is None or value >= _V1_UNLIMITED else value
        best: int | None = None
        path = os.path.normpath(self.path)
        while True:
            for name in ("memory.max", "memory.high"):
                text = read_text(os.path.join(path, name))
                if text is None or text.strip() == "max":
                    continue
                try:
                    value = int(text)
                except ValueError:
                    log.warning("ignoring %s/%s: not a byte count: %r", path, name, text)
                    continue
                best = value if best is None else min(best, value)
            parent = os.path.dirname(path)
            if self._top is None or path == self._top or parent == path:
                break
            if not (parent + "/").startswith(self._top + "/") and parent != self._top:
                break
            path = parent
        return best

    def events(self) -> dict[str, int]:
        """Return the kernel's memory counters: v2 memory.events; v1 oom_kill and failcnt as max."""
        if self.version == 2:
            return read_events(self.path) or {}
        out: dict[str, int] = {}
        text = read_text(os.path.join(self.path, "memory.oom_control"))
        if text is not None:
            oom = _parse_flat(text).get("oom_kill")
            if oom is not None:
                out["oom_kill"] = oom
        text = read_text(os.path.join(self.path, "memory.failcnt"))
        if text is not None and text.strip().isdigit():
            out["max"] = int(text)
        return out

    def psi_some_avg10(self) -> float | None:
        """Return this cgroup's memory PSI "some avg10" (percent); None on v1 or unavailable."""
        if self.version != 2:
            return None
        text = read_text(os.path.join(self.path, "memory.pressure"))
        return None if text is None else _parse_psi_some_avg10(text)

    def __repr__(self) -> str:
        return f"CgroupMemory({self.path!r}, v{self.version})"


def _mount_points(mountinfo: str) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """Return ((mount point, root) of cgroup2, (mount point, root) of v1 memory) or None each."""
    v2 = v1 = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mount_root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        fstype, options = tail[0], tail[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = (mount_point, mount_root)
        elif fstype == "cgroup" and "memory" in options and v1 is None:
            v1 = (mount_point, mount_root)
    return v2, v1


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.encode().decode("unicode_escape") if "\\" in field else field


__all__ = ["CgroupMemory", "host_psi_some_avg10", "read_events", "read_procs", "read_text"]
