"""infra/cores.py: the affinity mask and cgroup quotas (v1 and v2 files laid out as the kernel does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag_server.infra.cores import cgroup_cpu_quota


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v2_takes_the_tightest_quota_along_the_process_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "cpu.max", "max 100000")
    write(root / "app.slice" / "cpu.max", "300000 100000")
    write(root / "app.slice" / "rag" / "cpu.max", "150000 100000")
    write(tmp_path / "self", "0::/app.slice/rag\n")
    assert cgroup_cpu_quota(root, tmp_path / "self") == 1.5


def test_v2_without_a_limit_is_no_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu")
    write(root / "cpu.max", "max 100000")
    write(tmp_path / "self", "0::/\n")
    assert cgroup_cpu_quota(root, tmp_path / "self") is None


def test_a_container_sees_its_own_cgroup_as_the_root(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path, which does not exist inside the container's mount.
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu")
    write(root / "cpu.max", "200000 100000")
    write(tmp_path / "self", "0::/docker/3f2a\n")
    assert cgroup_cpu_quota(root, tmp_path / "self") == 2.0


def test_v1_reads_the_cpu_controller_and_ignores_an_unlimited_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    write(root / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "250000")
    write(root / "cpu,cpuacct" / "job" / "cpu.cfs_period_us", "100000")
    write(tmp_path / "self", "4:memory:/job\n3:cpu,cpuacct:/job\n0::/\n")
    assert cgroup_cpu_quota(root, tmp_path / "self") == 2.5
    write(root / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "-1")
    assert cgroup_cpu_quota(root, tmp_path / "self") is None


def test_no_cgroup_file_is_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path, tmp_path / "missing") is None


def test_hybrid_hierarchies_read_v2_in_unified_and_v1_in_the_cpu_directory(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "unified" / "svc" / "cpu.max", "300000 100000")
    write(root / "cpu" / "svc" / "cpu.cfs_quota_us", "150000")  # no "cpu,cpuacct" directory here
    write(root / "cpu" / "svc" / "cpu.cfs_period_us", "100000")
    write(tmp_path / "self", "3:cpu,cpuacct:/svc\n0::/svc\n")
    assert cgroup_cpu_quota(root, tmp_path / "self") == 1.5


def test_lines_that_are_not_cgroup_lines_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu")
    write(root / "cpu.max", "100000 100000")
    write(tmp_path / "self", "garbage\n\n0::/\n")
    assert cgroup_cpu_quota(root, tmp_path / "self") == 1.0


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_process_pinned_to_one_core_uses_one() -> None:
    code = "from rag_server.infra.cores import usable_cores; print(usable_cores())"
    core = str(min(os.sched_getaffinity(0)))
    out = subprocess.run(["taskset", "-c", core, sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "1", out.stderr
