"""Cgroup memory files: v2 from a tree laid out like the kernel's, v1 from a real cgroup."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from supervisor.core.pressure import ContainerClassifier
from supervisor.linux.cgroup import CgroupMemory, host_psi_some_avg10
from supervisor.settings.config import convert
from supervisor.settings.specs import thresholds as resolve_thresholds
from tests.conftest import in_cgroup, own_v1_memory_cgroup, python, wait_until
from workers.protocol import Level

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024

V2_MOUNTINFO = (
    "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)
V1_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_cgroup(directory: Path, *, current: int, max_: str = "max", high: str = "max",
              inactive_file: int = 0) -> Path:
    """Lay out one v2 cgroup directory as the kernel does (the files memwarden reads)."""
    write(directory / "cgroup.controllers", "cpu io memory pids\n")
    write(directory / "cgroup.procs", "")
    write(directory / "memory.current", f"{current}\n")
    write(directory / "memory.max", f"{max_}\n")
    write(directory / "memory.high", f"{high}\n")
    write(directory / "memory.stat",
          f"anon {current - inactive_file}\nfile {inactive_file}\nkernel 0\nshmem 0\n"
          f"active_anon {current - inactive_file}\ninactive_anon 0\nactive_file 0\n"
          f"inactive_file {inactive_file}\nunevictable 0\n")
    write(directory / "memory.events",
          "low 0\nhigh 4\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n")
    write(directory / "memory.pressure", "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\n"
                                         "full avg10=1.00 avg60=0.50 avg300=0.10 total=45\n")
    return directory


@pytest.fixture
def fake_v2(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A root prefix with /sys/fs/cgroup/kube/pod/ctr, /proc/self/cgroup and mountinfo."""
    top = tmp_path / "root" / "sys" / "fs" / "cgroup"
    write(top / "cgroup.controllers", "cpu io memory pids\n")  # the root has no memory.*
    v2_cgroup(top / "kube", current=900 * MiB)
    v2_cgroup(top / "kube" / "pod", current=800 * MiB, max_=str(512 * MiB))
    v2_cgroup(top / "kube" / "pod" / "ctr", current=300 * MiB, high=str(600 * MiB),
              inactive_file=100 * MiB)
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/kube/pod/ctr\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(V2_MOUNTINFO)
    return tmp_path / "root", proc_cgroup, mountinfo


def test_v2_discover_and_read(fake_v2):
    root, proc_cgroup, mountinfo = fake_v2
    cg = CgroupMemory.discover(str(proc_cgroup), str(mountinfo), root=str(root))
    assert cg is not None and cg.version == 2
    assert cg.path == str(root / "sys/fs/cgroup/kube/pod/ctr")
    assert cg.usage() == 300 * MiB
    assert cg.inactive_file() == 100 * MiB
    assert cg.working_set() == 200 * MiB
    # memory.high of the container (600 MiB) and memory.max of the pod (512 MiB): the smaller.
    assert cg.limit() == 512 * MiB
    assert cg.events() == {"low": 0, "high": 4, "max": 7, "oom": 1, "oom_kill": 1,
                           "oom_group_kill": 0}
    assert cg.psi_some_avg10() == 12.5
    cg.close()
    assert cg.usage() == -1


def test_v2_usage_is_fresh_on_every_read(fake_v2):
    root, proc_cgroup, mountinfo = fake_v2
    cg = CgroupMemory.discover(str(proc_cgroup), str(mountinfo), root=str(root))
    current = root / "sys/fs/cgroup/kube/pod/ctr/memory.current"
    current.write_text("12345678\n")
    assert cg.usage() == 12345678
    current.write_text("99\n")  # shorter than before: no stale digits
    assert cg.usage() == 99
    cg.close()


def test_v2_unlimited_everywhere_is_no_limit(tmp_path):
    cg_dir = v2_cgroup(tmp_path / "ctr", current=10 * MiB)
    cg = CgroupMemory.at(str(cg_dir), 2)
    assert cg.limit() is None
    assert cg.version == 2
    cg.close()


def test_v2_malformed_files_are_ignored(tmp_path, caplog):
    cg_dir = v2_cgroup(tmp_path / "ctr", current=10 * MiB, max_="lots", high=str(64 * MiB))
    (cg_dir / "memory.stat").write_text("garbage\ninactive_file 5\nanon x\n\n")
    (cg_dir / "memory.pressure").write_text("some avg10=oops\n")
    cg = CgroupMemory.at(str(cg_dir), 2)
    assert cg.limit() == 64 * MiB
    assert "not a byte count" in caplog.text and "memory.max" in caplog.text
    assert cg.inactive_file() == 5
    assert cg.psi_some_avg10() is None
    # The key first, a look-alike key, a bad value, no key: each read as the kernel means.
    for text, expected in (("inactive_file 7\nanon 1\n", 7),
                           ("anon 1\nxinactive_file 9\ninactive_file 3", 3),
                           ("inactive_file -4\n", 0), ("inactive_file x\n", 0),
                           ("anon 1\n", 0), ("", 0)):
        (cg_dir / "memory.stat").write_text(text)
        assert cg.inactive_file() == expected, text
    cg.close()


def test_discover_falls_back_to_v1_on_a_hybrid_machine(tmp_path):
    root = tmp_path / "root"
    write(root / "sys/fs/cgroup/unified/cgroup.controllers", "")  # v2 root: no memory files
    v1 = root / "sys/fs/cgroup/memory/app"
    write(v1 / "memory.usage_in_bytes", f"{50 * MiB}\n")
    write(v1 / "memory.stat", f"cache 0\nhierarchical_memory_limit {256 * MiB}\n"
                              f"total_inactive_file {20 * MiB}\n")
    write(v1 / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    write(v1 / "memory.failcnt", "17\n")
    (tmp_path / "cgroup").write_text("4:memory:/app\n2:cpuacct:/\n0::/\n")
    (tmp_path / "mountinfo").write_text(V1_MOUNTINFO)
    cg = CgroupMemory.discover(str(tmp_path / "cgroup"), str(tmp_path / "mountinfo"),
                               root=str(root))
    assert cg is not None and (cg.version, cg.path) == (1, str(v1))
    assert cg.limit() == 256 * MiB
    assert cg.working_set() == 30 * MiB
    assert cg.events() == {"oom_kill": 3, "max": 17}
    assert cg.psi_some_avg10() is None
    cg.close()


def test_v1_unlimited_value_is_no_limit(tmp_path):
    write(tmp_path / "memory.usage_in_bytes", "1\n")
    write(tmp_path / "memory.stat", "hierarchical_memory_limit 9223372036854771712\n")
    cg = CgroupMemory.at(str(tmp_path), 1)
    assert cg.limit() is None
    cg.close()


def test_discover_without_a_memory_cgroup_is_none(tmp_path):
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "mountinfo").write_text(V2_MOUNTINFO)
    assert CgroupMemory.discover(str(tmp_path / "cgroup"), str(tmp_path / "mountinfo"),
                                 root=str(tmp_path)) is None
    assert CgroupMemory.discover(str(tmp_path / "missing"), str(tmp_path / "mountinfo")) is None


def test_at_a_directory_without_memory_files_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        CgroupMemory.at(str(tmp_path), 2)
    with pytest.raises(ValueError, match="1 or 2"):
        CgroupMemory.at(str(tmp_path), 3)


def test_host_psi(tmp_path):
    psi = tmp_path / "memory"
    psi.write_text("some avg10=3.25 avg60=1.00 avg300=0.00 total=9\n"
                   "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert host_psi_some_avg10(str(psi)) == 3.25
    assert host_psi_some_avg10(str(tmp_path / "absent")) is None
    if os.path.exists("/proc/pressure/memory"):
        assert isinstance(host_psi_some_avg10(), float)


# -- a real v1 memory cgroup (`memory_cgroup`, from tests/conftest.py) ----------------------

def test_v1_discover_finds_our_own_cgroup():
    own = own_v1_memory_cgroup()
    if own is None or not own.exists():
        pytest.skip("no cgroup v1 memory controller on this machine")
    cg = CgroupMemory.discover()
    assert cg is not None
    if cg.version == 1:  # a v2 machine would rightly answer with its unified cgroup
        assert cg.path == str(own)
        assert cg.usage() > 0
    cg.close()


def test_v1_limit_read_back_from_a_real_cgroup(memory_cgroup):
    (memory_cgroup / "memory.limit_in_bytes").write_text(str(64 * MiB))
    cg = CgroupMemory.at(str(memory_cgroup), 1)
    assert cg.limit() == 64 * MiB
    assert cg.usage() >= 0
    events = cg.events()
    assert events["oom_kill"] == 0 and events["max"] == 0
    assert cg.psi_some_avg10() is None
    cg.close()


def test_page_cache_of_a_file_writer_is_not_working_set(memory_cgroup, tmp_path):
    (memory_cgroup / "memory.limit_in_bytes").write_text(str(64 * MiB))
    cg = CgroupMemory.at(str(memory_cgroup), 1)
    target = tmp_path / "big.bin"
    writer = (
        "import sys\n"
        "block = b'x' * (1 << 20)\n"
        "with open(sys.argv[1], 'wb') as f:\n"
        "    for _ in range(160):\n"
        "        f.write(block)\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )
    p = subprocess.Popen([*in_cgroup(memory_cgroup), *python(writer), str(target)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == b"done\n", "the writer failed"
        assert (memory_cgroup / "cgroup.procs").read_text().split() == [str(p.pid)]
        usage, working_set = cg.usage(), cg.working_set()
        # 160 MiB written under a 64 MiB limit: usage sits near the limit, made of page cache.
        assert usage > 32 * MiB
        assert working_set < usage / 2
        assert cg.events()["oom_kill"] == 0
        # The classifier sees the working set, so the writer is not under pressure.
        th = resolve_thresholds(convert({}), cg.limit())
        container = ContainerClassifier(th, cg.limit())
        for i in range(5):
            assert container.observe(i * 1_000_000, cg.working_set(), 0.0) is None
        assert container.level == Level.LOW
    finally:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(timeout=10)
        cg.close()
    wait_until(lambda: not (memory_cgroup / "cgroup.procs").read_text().strip(), 10,
               "the cgroup to empty")
