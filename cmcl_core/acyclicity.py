"""Acyclicity functions h(W) and graph post-processing for the DAG learner.

``h(W) = 0`` exactly when the weighted adjacency ``W`` is a DAG (paper Eq. 8,
Zheng et al. 2018); both functions below are pure torch, differentiable, and run on
GPU tensors. ``threshold_dag`` and ``bipartite_mask`` work on numpy arrays.

Convention everywhere: ``W[i, j] != 0`` means the edge ``i -> j``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["bipartite_mask", "find_cycle", "h_expm", "h_logdet", "is_dag", "threshold_dag"]


def h_expm_sq(A: Tensor) -> Tensor:
    """NOTEARS acyclicity on a non-negative matrix ``A = W o W``: ``tr(exp(A)) - d``.

    Args:
        A: ``[d, d]`` non-negative matrix (squared edge strengths).

    Returns:
        Scalar tensor, 0 iff ``A`` is the adjacency of a DAG.
    """
    d = A.shape[-1]
    return torch.linalg.matrix_exp(A).diagonal(dim1=-2, dim2=-1).sum(-1) - d  # [d, d] -> []


def h_logdet_sq(A: Tensor, s: float = 1.0) -> Tensor:
    """DAGMA acyclicity on ``A = W o W``: ``-log det(sI - A) + d log s``.

    Valid (and >= 0) only while ``sI - A`` is an M-matrix, i.e. the spectral radius of ``A``
    is below ``s``. Where ``det(sI - A) <= 0`` (surely outside the domain) it returns ``+inf``;
    other points outside the domain can give a negative value: callers treat ``h < 0`` or
    ``inf`` as "left the domain" (as DAGMA does).

    Args:
        A: ``[d, d]`` non-negative matrix (squared edge strengths).
        s: scale of the M-matrix domain (DAGMA's ``s``).

    Returns:
        Scalar tensor, 0 iff ``A`` is the adjacency of a DAG (inside the domain).
    """
    d = A.shape[-1]
    eye = torch.eye(d, dtype=A.dtype, device=A.device)  # [d, d]
    sign, logabsdet = torch.linalg.slogdet(s * eye - A)  # [d, d] -> [], []
    h = -logabsdet + d * math.log(s)
    return torch.where(sign > 0, h, torch.full_like(h, math.inf))


def h_expm(W: Tensor) -> Tensor:
    """NOTEARS acyclicity ``h(W) = tr(exp(W o W)) - d`` (paper Eq. 8; Zheng et al. 2018).

    Uses ``torch.linalg.matrix_exp`` (exact autograd, CPU or GPU).

    Args:
        W: ``[d, d]`` weighted adjacency.

    Returns:
        Scalar tensor: 0 on a DAG, > 0 when ``W`` has a cycle.
    """
    return h_expm_sq(W * W)  # [d, d] -> []


def h_logdet(W: Tensor, s: float = 1.0) -> Tensor:
    """DAGMA log-det acyclicity ``h(W) = -log det(sI - W o W) + d log s`` (Bello et al. 2022).

    Args:
        W: ``[d, d]`` weighted adjacency with spectral radius of ``W o W`` below ``s``.
        s: scale of the M-matrix domain.

    Returns:
        Scalar tensor: 0 on a DAG, > 0 when ``W`` has a cycle (inside the domain).
    """
    return h_logdet_sq(W * W, s)  # [d, d] -> []


def find_cycle(B: np.ndarray) -> list[int] | None:
    """One directed cycle of the graph ``B`` (``B[i, j] != 0`` means ``i -> j``), or None.

    Iterative depth-first search (no recursion limit); written by hand because networkx is
    not a cmcl_core dependency.

    Args:
        B: ``[d, d]`` adjacency (any dtype; non-zero entries are edges).

    Returns:
        The nodes ``[v0, v1, ..., vk]`` of a cycle ``v0 -> v1 -> ... -> vk -> v0``, or None.
    """
    d = B.shape[0]
    children = [np.flatnonzero(B[i]).tolist() for i in range(d)]
    state = [0] * d  # 0 = unseen, 1 = on the stack, 2 = done
    parent = [-1] * d
    for root in range(d):
        if state[root]:
            continue
        stack = [(root, iter(children[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state[nxt] == 1:  # back edge node -> nxt closes a cycle
                cycle = [node]
                while cycle[-1] != nxt:
                    cycle.append(parent[cycle[-1]])
                return cycle[::-1]
            elif state[nxt] == 0:
                state[nxt] = 1
                parent[nxt] = node
                stack.append((nxt, iter(children[nxt])))
    return None


def is_dag(B: np.ndarray) -> bool:
    """True when the graph ``B`` (``B[i, j] != 0`` means ``i -> j``) has no directed cycle."""
    return find_cycle(np.asarray(B)) is None


def threshold_dag(W: np.ndarray, w_threshold: float = 0.3) -> np.ndarray:
    """Zero the weak edges of ``W`` and break any surviving cycle.

    Entries with ``|W| < w_threshold`` and the diagonal are zeroed; then, while a directed
    cycle exists, the weakest edge on it is removed (each removal is logged at INFO).

    Args:
        W: ``[d, d]`` weighted adjacency, ``W[i, j] != 0`` means ``i -> j``.
        w_threshold: edges weaker than this (in absolute value) are dropped.

    Returns:
        A new ``[d, d]`` array (same dtype as ``W``, float) that is a DAG.

    Raises:
        ValueError: when ``W`` is not a finite square matrix or the threshold is negative.
    """
    W = np.array(W, dtype=float, copy=True)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"threshold_dag needs a square [d, d] matrix, got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("threshold_dag got a W with NaN or inf entries; check the solver output")
    if w_threshold < 0:
        raise ValueError(f"w_threshold must be >= 0, got {w_threshold}")
    W[np.abs(W) < w_threshold] = 0.0
    np.fill_diagonal(W, 0.0)
    while (cycle := find_cycle(W)) is not None:
        edges = list(zip(cycle, cycle[1:] + cycle[:1], strict=True))
        i, j = min(edges, key=lambda e: abs(W[e]))
        logger.info(
            "threshold_dag: cycle %s survived thresholding; dropping its weakest edge %d -> %d "
            "(|w| = %.4g)",
            " -> ".join(map(str, cycle + cycle[:1])),
            i,
            j,
            abs(W[i, j]),
        )
        W[i, j] = 0.0
    return W


def bipartite_mask(d: int, m: int) -> np.ndarray:
    """Allowed-edge mask of the paper's bipartite assumption: edges only between u and z.

    Args:
        d: number of structured variables ``u`` (the first ``d`` nodes).
        m: number of latent variables ``z`` (the last ``m`` nodes).

    Returns:
        ``[(d + m), (d + m)]`` bool array, True exactly for ``u -> z`` and ``z -> u`` pairs.

    Raises:
        ValueError: when ``d`` or ``m`` is negative.
    """
    if d < 0 or m < 0:
        raise ValueError(f"bipartite_mask needs d >= 0 and m >= 0, got d={d}, m={m}")
    is_u = np.arange(d + m) < d  # [d + m]
    return is_u[:, None] != is_u[None, :]  # [d + m, d + m]
