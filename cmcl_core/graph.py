"""Graph utilities on adjacency matrices: cycles, topological order, thresholding, masks, edges.

Pure numpy, written by hand because networkx is not a cmcl_core dependency.
Convention everywhere: ``W[i, j] != 0`` (or ``B[i, j]`` True) means the edge ``i -> j``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "bipartite_mask",
    "edge_list",
    "find_cycle",
    "is_dag",
    "node_names",
    "threshold_dag",
    "topological_order",
]


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


def topological_order(B: np.ndarray) -> list[int]:
    """Kahn's algorithm: the nodes of the DAG ``B`` with every parent before its children.

    Ties are broken by node index, so the order is deterministic.

    Raises:
        ValueError: when ``B`` has a directed cycle.
    """
    B = np.asarray(B) != 0
    indeg = B.sum(0).astype(int)
    ready = [k for k in range(B.shape[0]) if indeg[k] == 0]
    order = []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for j in np.flatnonzero(B[k]):
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(int(j))
    if len(order) != B.shape[0]:
        raise ValueError("topological_order: the graph has a directed cycle")
    return order


def node_names(u_names: Sequence[str], m: int) -> list[str]:
    """Names of the nodes of ``V = [u, z]``: the clinical names, then ``z0 .. z{m-1}``."""
    return [str(s) for s in u_names] + [f"z{j}" for j in range(m)]


def edge_list(W: np.ndarray, names: Sequence[str]) -> list[tuple[str, str, float]]:
    """``[(source, target, weight)]`` of the non-zero entries of ``W``, strongest first."""
    src, dst = np.nonzero(W)
    edges = [(names[i], names[j], float(W[i, j])) for i, j in zip(src, dst, strict=True)]
    return sorted(edges, key=lambda e: -abs(e[2]))
