"""How many CPUs this process may use: its CPU affinity and its cgroup's CPU quota.

In a container or a batch job, ``os.cpu_count()`` (and torch's default thread count) is the
host's core count, not what the job was given: ``docker run --cpus=2`` or a Kubernetes CPU
limit sets a CFS quota in the cgroup, and ``taskset`` / cpusets restrict the affinity. Torch
threads beyond that budget spin against each other (two runs on a 2-core machine slowed an
epoch from about 1 s to 38-77 s). :func:`cpu_budget` reads both limits; the flow sizes torch's
threads and the workers from it (``compute.threads`` / ``compute.workers`` override).

cgroup v2 (``cpu.max``: ``"<quota> <period>"`` or ``"max <period>"``) and v1
(``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, quota -1 for none) are read along the process's
cgroup path and every parent up to the mount point (a parent's limit binds its children);
the smallest quota wins. The standard library has no reader for these files, hence this module.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs a process may use.

    Attributes:
        affinity: CPUs in the process's affinity mask.
        quota: CPUs' worth of time the cgroup grants per period (None: no quota).
    """

    affinity: int
    quota: float | None

    @property
    def cpus(self) -> int:
        """Whole CPUs to size threads by: the affinity, capped by the quota (at least 1)."""
        if self.quota is None:
            return max(1, self.affinity)
        return max(1, min(self.affinity, math.floor(self.quota + 1e-9)))


def _own_cgroups(proc_cgroup: Path) -> dict[str, str]:
    """Controller -> cgroup path from /proc/self/cgroup (``""`` keys the v2 hierarchy)."""
    out: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def _dirs(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and each parent up to ``mount`` (those that exist)."""
    here = mount / path.lstrip("/")
    out = []
    while True:
        if here.is_dir():
            out.append(here)
        if here == mount or mount not in here.parents:
            break
        here = here.parent
    return out or ([mount] if mount.is_dir() else [])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path | None = None) -> float | None:
    """The smallest CPU quota (in CPUs) on this process's cgroup path, None when unlimited."""
    groups = _own_cgroups(proc_cgroup or Path("/proc/self/cgroup"))
    quotas = []
    v2_mount = root / "unified" if (root / "unified").is_dir() else root
    for d in _dirs(v2_mount, groups.get("", "/")):
        fields = (_read(d / "cpu.max") or "").split()
        if len(fields) == 2 and fields[0] != "max":
            quotas.append(int(fields[0]) / int(fields[1]))
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for d in _dirs(root / name, groups.get("cpu", "/")) if (root / name).is_dir() else []:
            quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0 and int(period) > 0:
                quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def cpu_budget(root: Path = CGROUP_ROOT, proc_cgroup: Path | None = None) -> CpuBudget:
    """This process's affinity and cgroup CPU quota."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count() or 1
    return CpuBudget(affinity, cgroup_quota(root, proc_cgroup))
