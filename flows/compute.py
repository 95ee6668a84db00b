"""Where fan-out work runs (the config's ``compute:`` section): a Prefect task runner.

Both size themselves to the CPUs the run is given (:func:`run_threads`, :func:`run_workers`:
the affinity and cgroup quota of :func:`pipeline.cpus.cpu_budget`, unless ``compute.threads``
/ ``compute.workers`` say otherwise).

* ``local``: a thread pool of ``compute.workers`` threads in the flow's process. The fanned-out
  work (batched torch solves, refits) spends its time in torch kernels, which release the GIL,
  so threads run it in parallel without the start-up cost of worker processes.
* ``dask``: prefect-dask's ``DaskTaskRunner``: without ``compute.address`` a ``LocalCluster`` of
  ``compute.workers`` single-threaded worker processes, which report their task runs to this
  process's Prefect API (:func:`prefect_api_url`); with it, the scheduler at that address
  (a dask-jobqueue or Kubernetes cluster is just an address; its workers need
  ``PREFECT_API_URL`` in their environment).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

import torch
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pipeline.config import ComputeConfig
from pipeline.cpus import cpu_budget
from pipeline.errors import ConfigError

SCHEDULER_TIMEOUT_S = 10


def run_threads(compute: ComputeConfig) -> int:
    """Torch intra-op threads for the run: ``compute.threads``, else the CPU budget, capped by
    ``OMP_NUM_THREADS`` when the environment sets it (as batch schedulers and CI do)."""
    if compute.threads:
        return compute.threads
    cpus = cpu_budget().cpus
    env = os.environ.get("OMP_NUM_THREADS", "")
    return min(cpus, int(env)) if env.isdigit() and int(env) >= 1 else cpus


def run_workers(compute: ComputeConfig) -> int:
    """Workers of the fan-out: ``compute.workers``, else one per CPU of the budget."""
    return compute.workers or cpu_budget().cpus


@contextmanager
def torch_threads(n: int):
    """Torch's intra-op threads set to ``n`` for the block (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def task_runner(compute: ComputeConfig) -> TaskRunner[Any]:
    """The task runner of the ``compute`` engine (see the module docstring)."""
    workers = run_workers(compute)
    if compute.engine == "dask":
        from prefect_dask import DaskTaskRunner  # deferred: dask is heavy and only used here

        if compute.address:
            return DaskTaskRunner(address=compute.address)
        cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True,
                   "env": {"PREFECT_API_URL": prefect_api_url()}}  # fmt: skip
        return DaskTaskRunner(cluster_kwargs=cluster)
    return ThreadPoolTaskRunner(max_workers=workers)


def prefect_api_url() -> str:
    """The Prefect API this process reports to: ``PREFECT_API_URL``, else its temporary local
    server (started now if it is not running yet).

    A LocalCluster's workers are given it: a worker process that has no API URL starts a
    temporary server of its own on its first task (seconds of CPU per worker, on every run, and
    its task runs recorded in a database nobody reads)."""
    url = PREFECT_API_URL.value()
    if url:
        return str(url)
    with get_client(sync_client=True) as client:
        return str(client.api_url)


def check_compute(compute: ComputeConfig) -> None:
    """Fail before any work when the configured Dask scheduler cannot be reached.

    Raises:
        ConfigError: naming the address and the fix.
    """
    if compute.engine != "dask" or not compute.address:
        return
    from distributed import Client  # deferred: dask is heavy and only used here

    try:
        Client(compute.address, timeout=SCHEDULER_TIMEOUT_S).close()
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(
            f"the Dask scheduler at {compute.address} cannot be reached "
            f"({type(err).__name__}) within {SCHEDULER_TIMEOUT_S} s",
            "start the scheduler, fix compute.address, or set compute.engine: local",
        ) from None


@contextmanager
def single_torch_thread():
    """Torch's intra-op threads pinned to one while work fans out (each unit of work uses
    one thread on every engine, so every engine computes the same floats)."""
    with torch_threads(1):
        yield
