"""Edge stability: the structure step (or the whole model) refitted on bootstrap resamples.

Two levels:

* ``dag``: bootstrap the rows of ``[u, z]`` the final graph was solved on (``z`` from the fitted
  encoder) and re-solve the DAG and the orientation on each resample. The resamples are solved
  in chunks of :data:`CHUNK` as one batched problem (``cmcl_core.dag_batch``).
* ``full``: refit the whole model on each bootstrap sample of the images and ``u``, match each
  refit's latents to the reference's (Hungarian assignment on |correlation| of ``transform``
  on the same images) and compare the graphs in the reference's latent order.

The work comes in independent units (a chunk of resamples, one refit) that are pure functions
of arrays and seeds, so a caller can run them on any executor (``map``): the pipeline submits
them as tasks to its compute engine. Each unit runs with one torch thread and the chunks do not
depend on the executor, so every engine gives the same numbers for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import torch

from cmcl_core.config import CMCLConfig
from cmcl_core.dag import DagConfig
from cmcl_core.dag_batch import learn_dags
from cmcl_core.edges import Stability
from cmcl_core.estimator import CMCL
from cmcl_core.metrics import mcc
from cmcl_core.orientation import orient_edges_batch
from cmcl_core.variables import VariableType

#: Resamples solved together in one batched problem (one task of the compute engine).
CHUNK = 10
LEVELS = ("dag", "full")

Mapper = Callable[[Callable[..., Any], Iterable[Any]], Iterable[Any]]


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resample_seeds(seed: int, resamples: int) -> list[int]:
    """One independent seed per resample, derived from ``seed``."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(resamples)]


def chunked(seeds: Sequence[int], size: int = CHUNK) -> list[list[int]]:
    """The seeds in consecutive chunks of ``size`` (the units of work of the ``dag`` level)."""
    return [list(seeds[k : k + size]) for k in range(0, len(seeds), size)]


def bootstrap_rows(n: int, seed: int) -> np.ndarray:
    """n row indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, n)


def dag_resample_graphs(
    X: np.ndarray,
    var_types: Sequence[str],
    allowed: np.ndarray,
    levels: Sequence[int],
    seeds: Sequence[int],
    cfg: CMCLConfig,
    orient_seed: int = 0,
) -> np.ndarray:
    """The structure step (``structure.solve_structure``) on one bootstrap resample per seed.

    Args:
        X: ``[n, p]`` the data the reference graph was solved on (DAG inputs of ``[u, z]``).
        var_types: a type per column.
        allowed: ``[p, p]`` mask of possible edges (the reference's).
        levels: level count per column (from the full data).
        seeds: one per resample (bootstrap rows and solver initialisation).
        cfg: the model settings (``dag_hidden``, ``lambda1``, ``lambda2``, ``w_threshold``,
            ``acyclicity``, ``orient_edges``).
        orient_seed: seed of the orientation's regressions (the reference fit's seed).

    Returns:
        ``[len(seeds), p, p]`` weighted adjacencies.
    """
    X = np.asarray(X, dtype=np.float64)
    p = X.shape[1]
    types = list(var_types)
    keep = np.array(
        [t != VariableType.CONTINUOUS or X[:, k].std() > 1e-6 for k, t in enumerate(types)]
    )  # as the reference solve: a constant latent gets no edge
    types_k = [t for t, k in zip(types, keep, strict=True) if k]
    levels_k = [lv for lv, k in zip(levels, keep, strict=True) if k]
    allowed_k = np.asarray(allowed)[np.ix_(keep, keep)]
    dag_cfg = DagConfig(
        hidden=cfg.dag_hidden,
        lambda1=cfg.lambda1,
        lambda2=cfg.lambda2,
        w_threshold=cfg.w_threshold,
        acyclicity=cfg.acyclicity,
    )
    with _threads(1):
        Xs = np.stack([X[bootstrap_rows(len(X), s)][:, keep] for s in seeds])  # [B, n, p_k]
        Ws = learn_dags(Xs, types_k, allowed_k, seeds, dag_cfg, levels_k)
        if cfg.orient_edges:
            Ws = orient_edges_batch(
                Xs, Ws, types_k, allowed_k, orient_seed, cfg.dag_hidden, levels_k
            )
    out = np.zeros((len(seeds), p, p))
    out[:, keep[:, None] & keep[None, :]] = Ws.reshape(len(seeds), -1)
    return out


def full_resample_graph(
    params: dict[str, Any],
    images: np.ndarray,
    u: np.ndarray,
    fit_kwargs: dict[str, Any],
    z_reference: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Refit the whole model on one bootstrap sample; its graph in the reference's latent order.

    Args:
        params: the reference estimator's ``get_params()`` (its seed is replaced by ``seed``).
        images: all images [n, C, H, W] (the bootstrap rows are read from them).
        u: all raw u [n, d].
        fit_kwargs: ``u_types``, ``u_names``, ``u_roles`` as given to the reference fit.
        z_reference: the reference's posterior means on all images, [n, m].
        seed: bootstrap rows and the refit's seed.

    Returns:
        ``[(d + m), (d + m)]`` weighted adjacency with latent j the refit's latent matched to
        the reference's z_j.
    """
    rows = np.sort(bootstrap_rows(len(u), seed))
    model = CMCL(**{**params, "seed": int(seed)})
    model.fit(np.asarray(images[rows]), u[rows], **fit_kwargs)
    _, match = mcc(z_reference, model.transform(images, u))  # refit column per reference z
    d = model.n_features_in_
    order = np.concatenate([np.arange(d), d + np.asarray(match)])
    W = model.weighted_adjacency_
    return W[np.ix_(order, order)]


def assess_stability(
    model: CMCL,
    images: np.ndarray,
    u: np.ndarray,
    resamples: int = 30,
    level: str = "dag",
    seed: int | None = None,
    map: Mapper = map,  # noqa: A002 - the builtin's name is the natural one
) -> Stability:
    """Resample a fitted model and return its edge frequencies (see the module docstring).

    Args:
        model: a fitted CMCL (fitted on ``images``, ``u``).
        images: the images it was fitted on.
        u: the raw u it was fitted on.
        resamples: B.
        level: ``"dag"`` or ``"full"``.
        seed: seed of the resamples (the model's seed when None).
        map: runs the units of work, e.g. an executor's ``map``; the builtin runs them here.

    Returns:
        The frequencies; pass them to ``model.set_stability`` to annotate its edges.
    """
    if level not in LEVELS:
        raise ValueError(f"stability level must be one of {LEVELS}, got {level!r}")
    model._check_fitted()
    seeds = resample_seeds(model.seed if seed is None else seed, resamples)
    if level == "dag":
        data = model.structure_data_
        unit = partial(
            dag_resample_graphs,
            data.X,
            data.types,
            data.allowed,
            data.levels,
            cfg=model.config_,
            orient_seed=model.seed,
        )
        graphs = np.concatenate(list(map(unit, chunked(seeds))))
    else:
        z_ref = model.transform(images, u)
        unit = partial(
            full_resample_graph, model.get_params(), images, u, model.fit_arguments(), z_ref
        )
        graphs = np.stack(list(map(unit, seeds)))
    return Stability.from_graphs(graphs, level)
