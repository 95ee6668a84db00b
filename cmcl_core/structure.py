"""The structure step on ``V = [u, z]``: the final DAG solve, its orientation, the causal functions.

After joint training CMCL re-solves the graph to convergence on ``[u, E[z | x, u]]``
(``learn_dag``), re-orients its edges by likelihood (``orient_edges``) and refits the causal
functions on the final graph, so that interventions use exactly the reported edges. The same
step serves every two-stage pipeline that learns a graph on estimated latents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cmcl_core.config import CMCLConfig
from cmcl_core.dag import NotearsMLP, fit_fixed_graph, learn_dag
from cmcl_core.orientation import orient_edges
from cmcl_core.variables import VariableType


@dataclass(frozen=True)
class StructureData:
    """The data the final graph is solved on: DAG inputs of ``[u, z]`` and their description.

    Attributes:
        X: ``[n, d + m]`` rows of the training data (at most ``refit_dag_max_samples``):
            continuous u and z standardised, binary 0/1, categorical codes.
        types: a type per column.
        allowed: ``[(d + m), (d + m)]`` mask of possible edges (bipartite and knowledge).
        levels: level count per column (1 unless categorical).
    """

    X: np.ndarray
    types: tuple[str, ...]
    allowed: np.ndarray
    levels: tuple[int, ...]


def solve_structure(
    X: np.ndarray,
    var_types: Sequence[str],
    allowed: np.ndarray | None,
    seed: int,
    cfg: CMCLConfig,
) -> np.ndarray:
    """The thresholded, acyclic graph on ``X`` [n, p] (``learn_dag``, then ``orient_edges``).

    A constant continuous column (a collapsed latent carries no information, and ``learn_dag``
    rejects constant columns) gets no edge; the graph is solved on the other columns.

    Args:
        X: DAG inputs: continuous columns in any scale, binary 0/1, categorical codes.
        var_types: a type per column.
        allowed: ``[p, p]`` mask of possible edges (all but self-loops when None).
        seed: seed of the solver's initialisation.
        cfg: ``dag_hidden``, ``lambda1``, ``lambda2``, ``w_threshold``, ``acyclicity`` and
            ``orient_edges`` are read.

    Returns:
        ``[p, p]`` weighted adjacency, ``W[i, j] != 0`` meaning ``i -> j``.
    """
    p = X.shape[1]
    types = list(var_types)
    keep = np.array(
        [t != VariableType.CONTINUOUS or X[:, k].std() > 1e-6 for k, t in enumerate(types)]
    )
    if allowed is None:
        allowed = np.ones((p, p), dtype=bool) & ~np.eye(p, dtype=bool)
    X_k, types_k = X[:, keep], [t for t, k in zip(types, keep, strict=True) if k]
    allowed_k = np.asarray(allowed)[np.ix_(keep, keep)]
    W_k = learn_dag(
        X_k,
        var_types=types_k,
        allowed=allowed_k,
        seed=seed,
        hidden=cfg.dag_hidden,
        lambda1=cfg.lambda1,
        lambda2=cfg.lambda2,
        w_threshold=cfg.w_threshold,
        acyclicity=cfg.acyclicity,
    )
    if cfg.orient_edges:
        W_k = orient_edges(X_k, W_k, types_k, allowed_k, seed, cfg.dag_hidden)
    W = np.zeros((p, p))
    W[np.ix_(keep, keep)] = W_k
    return W


def refit_functions(
    var_types: Sequence[str],
    n_levels: Sequence[int],
    X: torch.Tensor,
    graph: np.ndarray,
    hidden: Sequence[int],
    lambda2: float,
) -> NotearsMLP:
    """Causal functions fitted on a fixed graph (link loss + L2, L-BFGS).

    Args:
        var_types: a type per node.
        n_levels: level count per node (1 unless categorical).
        X: ``[n, p]`` DAG inputs on the device the functions should live on.
        graph: ``[p, p]`` adjacency; its non-zero entries are each function's inputs.
        hidden: hidden widths of each function's MLP.
        lambda2: L2 weight.

    Returns:
        The fitted NOTEARS-MLP in eval mode.
    """
    dag = NotearsMLP(list(var_types), hidden, graph != 0, list(n_levels)).to(X.device)
    fit_fixed_graph(dag, lambda: dag.loss(X) + 0.5 * lambda2 * dag.l2_penalty(), max_iter=200)
    return dag.eval()
