"""The stability step of a run: resampled fits as Prefect tasks on the compute engine.

``stability: {resamples: B, level: dag | full}`` in the config (``null`` turns it off):

* ``dag``: the B bootstrap resamples of the final graph's ``[u, z]`` rows are re-solved in
  fixed chunks (``cmcl_core.stability.CHUNK``), one task per chunk;
* ``full``: one task per resample refits the whole model on a bootstrap sample of the images
  (read from the run's memory-mapped image file, so a worker needs that path: a shared folder
  on a multi-machine cluster).

The tasks run on the task runner of ``compute:`` (:mod:`flows.compute`), each with one torch
thread, so the local and the Dask engines give the same stabilities for the same seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NONE

from cmcl_core.config import CMCLConfig
from cmcl_core.edges import Stability
from cmcl_core.estimator import CMCL
from cmcl_core.stability import (
    chunked,
    dag_resample_graphs,
    full_resample_graph,
    resample_seeds,
)
from cmcl_core.structure import StructureData
from flows.compute import single_torch_thread, task_runner
from pipeline.config import Config

logger = logging.getLogger(__name__)

# privacy: never pickle task results (patient-derived arrays) into $PREFECT_HOME/storage
_PRIVATE = dict(persist_result=False, cache_policy=NONE)


@task(name="resample-dag", **_PRIVATE)
def resample_dag_task(
    data: StructureData, seeds: list[int], model_cfg: CMCLConfig, orient_seed: int
) -> np.ndarray:
    """Re-solve the DAG and its orientation on one chunk of bootstrap resamples."""
    return dag_resample_graphs(
        data.X, data.types, data.allowed, data.levels, seeds, model_cfg, orient_seed
    )


@task(name="resample-full", **_PRIVATE)
def resample_full_task(
    params: dict[str, Any],
    images_path: str,
    u: np.ndarray,
    fit_kwargs: dict[str, Any],
    z_reference: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Refit the whole model on one bootstrap sample; its graph in the reference's order."""
    images = np.load(images_path, mmap_mode="r")
    return full_resample_graph(
        {**params, "num_threads": 1}, images, u, fit_kwargs, z_reference, seed
    )


def _run(runner: Any, submissions: list[tuple[Any, dict[str, Any]]]) -> list[np.ndarray]:
    """Submit tasks to a started task runner and wait for their results, in order.

    Tasks are submitted to the runner directly rather than through a subflow: a subflow's
    parameters are stored by the Prefect API, and these are patient-derived arrays.
    """
    futures = [runner.submit(t, parameters=params) for t, params in submissions]
    return [f.result() for f in futures]


def assess_stability(
    cfg: Config, model: CMCL, images_path: Path, u: np.ndarray
) -> Stability | None:
    """The run's edge stability under ``cfg.stability`` (None when it is off).

    Args:
        cfg: the run's config (``stability``, ``compute``, ``seed``).
        model: the fitted model.
        images_path: the run's memory-mapped ``[n, 1, S, S]`` image file (``full`` level).
        u: the cohort's raw u [n, d].
    """
    if cfg.stability is None:
        return None
    level = cfg.stability.level
    seeds = resample_seeds(cfg.seed, cfg.stability.resamples)
    if level == "dag":
        data, mcfg = model.structure_data_, model.config_
        jobs = [
            (resample_dag_task, dict(data=data, seeds=c, model_cfg=mcfg, orient_seed=model.seed))
            for c in chunked(seeds)
        ]
    else:
        z_ref = model.transform(np.load(images_path, mmap_mode="r"), u)
        common = dict(
            params=model.get_params(), images_path=str(images_path), u=u,
            fit_kwargs=model.fit_arguments(), z_reference=z_ref,
        )  # fmt: skip
        jobs = [(resample_full_task, dict(common, seed=s)) for s in seeds]
    with single_torch_thread(), task_runner(cfg.compute) as runner:
        results = _run(runner, jobs)
    graphs = np.concatenate(results) if level == "dag" else np.stack(results)
    logger.info("stability: %d %s resamples on the %s engine", len(graphs), level,
                cfg.compute.engine)  # fmt: skip
    return Stability.from_graphs(graphs, level)
