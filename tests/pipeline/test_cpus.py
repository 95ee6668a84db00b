"""Tests of pipeline.cpus: the CPU budget from affinity and cgroup quotas (v1 and v2 trees)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.cpus import CpuBudget, cgroup_quota, cpu_budget


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_read_along_the_path_and_the_smallest_wins(tmp_path):
    root = tmp_path / "cgroup"
    _write(tmp_path / "self", "0::/job/step\n")
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "job" / "cpu.max", "150000 100000\n")  # the parent: 1.5 CPUs
    _write(root / "job" / "step" / "cpu.max", "400000 100000\n")  # the child asks for 4
    assert cgroup_quota(root, tmp_path / "self") == pytest.approx(1.5)


def test_cgroup_v2_without_a_limit_is_none(tmp_path):
    root = tmp_path / "cgroup"
    _write(tmp_path / "self", "0::/\n")
    _write(root / "cpu.max", "max 100000\n")
    assert cgroup_quota(root, tmp_path / "self") is None


def test_cgroup_v1_quota_in_a_hybrid_tree(tmp_path):
    root = tmp_path / "cgroup"
    (root / "unified").mkdir(parents=True)  # hybrid: a v2 tree without cpu.max
    _write(tmp_path / "self", "1:cpu,cpuacct:/docker/abc\n0::/docker/abc\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "200000\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(root, tmp_path / "self") == pytest.approx(2.0)


def test_a_container_sees_its_own_limit_at_the_mount_root(tmp_path):
    """With a cgroup namespace the path is "/" and the limit sits at the mount point."""
    root = tmp_path / "cgroup"
    _write(tmp_path / "self", "0::/\n")
    _write(root / "cpu.max", "100000 100000\n")
    assert cgroup_quota(root, tmp_path / "self") == pytest.approx(1.0)


def test_unreadable_cgroups_mean_no_quota(tmp_path):
    assert cgroup_quota(tmp_path / "missing", tmp_path / "missing-self") is None


@pytest.mark.parametrize(
    ("affinity", "quota", "cpus"),
    [(8, None, 8), (8, 2.0, 2), (8, 1.5, 1), (8, 0.5, 1), (2, 6.0, 2), (0, None, 1)],
)
def test_budget_is_the_affinity_capped_by_the_quota(affinity, quota, cpus):
    assert CpuBudget(affinity, quota).cpus == cpus


def test_this_process_budget_follows_its_affinity():
    budget = cpu_budget()
    assert budget.affinity == len(os.sched_getaffinity(0))
    assert 1 <= budget.cpus <= budget.affinity
