"""How many CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota.

`os.cpu_count()` counts the machine's cores. A container started with `--cpus 2` (docker-compose's
`cpus:`) on a 32-core host gets a quota of 2 cores' time, and 32 inference threads would be throttled at
every scheduling period while each run waits for its slowest thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cores() -> int:
    """Cores in the affinity mask, at most the whole cores of the tightest cgroup CPU quota; at least 1.

    Whole cores, rounded down: a thread on a partial core is throttled each period and its peers wait.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(CGROUP_ROOT, PROC_CGROUP)
    if quota is not None:
        cores = min(cores, math.floor(quota))
    return max(cores, 1)


def cgroup_cpu_quota(root: Path, proc_cgroup: Path) -> float | None:
    """The tightest CPU quota, in cores, over this process's cgroup and its ancestors (v2 `cpu.max`, or
    v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None: no quota, or no cgroup to read. Controllers are
    looked for where systemd and container runtimes mount them (under `root`, v2 possibly in `unified`);
    /proc/self/mountinfo is not read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:  # not a cgroup line: never fail a model's start over it
            continue
        _, controllers, path = fields
        if controllers == "":  # v2: the unified hierarchy
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
            quotas += _along(base, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            quotas += _along(root / controllers, path, _v1_quota) or _along(root / "cpu", path, _v1_quota)
    return min(quotas, default=None)


def _along(base: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas read in `base`/`path` and each of its ancestors up to `base` (a container sees its own
    cgroup as the root, so `path` may not exist under `base`: then `base` alone is read)."""
    found = []
    directory = base / path.lstrip("/")
    while True:
        quota = read(directory)
        if quota is not None:
            found.append(quota)
        if directory == base or base not in directory.parents:
            return found
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        limit, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        limit = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit <= 0 or period <= 0 else limit / period
