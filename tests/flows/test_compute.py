"""Tests of flows.compute: threads and workers sized from the CPU budget, overrides, restore."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from flows.compute import prefect_api_url, run_threads, run_workers, task_runner, torch_threads
from pipeline.config import ComputeConfig
from pipeline.cpus import cpu_budget


def test_threads_and_workers_follow_the_budget_unless_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = cpu_budget().cpus
    assert run_threads(ComputeConfig()) == cpus
    assert run_workers(ComputeConfig()) == cpus
    assert run_threads(ComputeConfig(threads=3)) == 3
    assert run_workers(ComputeConfig(workers=5)) == 5
    assert task_runner(ComputeConfig(workers=3))._max_workers == 3  # prefect keeps it private


def test_omp_num_threads_in_the_environment_caps_the_budget(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert run_threads(ComputeConfig()) == 1
    assert run_threads(ComputeConfig(threads=2)) == 2  # the config's explicit value wins
    monkeypatch.setenv("OMP_NUM_THREADS", "4096")
    assert run_threads(ComputeConfig()) == cpu_budget().cpus
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert run_threads(ComputeConfig()) == cpu_budget().cpus


def test_threads_must_be_positive():
    with pytest.raises(ValidationError, match="threads"):
        ComputeConfig(threads=0)


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_a_process_restricted_to_one_cpu_gets_one_thread():
    code = (
        "import os; os.environ.pop('OMP_NUM_THREADS', None); "
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from flows.compute import run_threads; from pipeline.config import ComputeConfig; "
        "print(run_threads(ComputeConfig()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_makes_openmp_threads_wait_passively_unless_told(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, sys; sys.argv = ['cmcl', '--help']; from flows import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    ).stdout.split()
    assert out[-2:] == [expected, "False"]  # set before torch was imported


def test_local_cluster_workers_report_to_this_processs_api(prefect_harness):
    """Without it each Dask worker would start a temporary Prefect server of its own."""
    from prefect.settings import PREFECT_API_URL

    url = prefect_api_url()
    assert url == str(PREFECT_API_URL.value()) and url.startswith("http")
    runner = task_runner(ComputeConfig(engine="dask", workers=2))
    assert runner.cluster_kwargs["env"] == {"PREFECT_API_URL": url}
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    remote = task_runner(ComputeConfig(engine="dask", address="tcp://127.0.0.1:8786"))
    assert not remote.cluster_kwargs  # a remote cluster's workers bring their own settings
