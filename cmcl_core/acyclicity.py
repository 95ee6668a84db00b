"""Acyclicity functions h(W) and the augmented Lagrangian that drives h(W) to zero.

``h(W) = 0`` exactly when the weighted adjacency ``W`` is a DAG (paper Eq. 8,
Zheng et al. 2018); the functions below are pure torch, differentiable, and run on
GPU tensors. :class:`AugmentedLagrangian` holds the dual-ascent state (``rho``, ``alpha``) that
both the standalone solver (``dag.learn_dag``) and the joint training loop update.

Convention everywhere: ``W[i, j] != 0`` means the edge ``i -> j``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["AugmentedLagrangian", "h_expm", "h_logdet"]


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


@dataclass
class AugmentedLagrangian:
    """Dual-ascent state for the constraint ``h(W) = 0`` (NOTEARS, Zheng et al. 2018, Alg. 1).

    The primal problem adds :meth:`penalty` ``0.5 rho h^2 + alpha h`` to its loss (Eq. 10 writes
    the constraint as a weighted term; NOTEARS enforces it this way). After each primal solve the
    caller asks :meth:`too_slow` and, if so, :meth:`raise_rho`; then :meth:`ascend` moves
    ``alpha``. ``dag.learn_dag`` re-solves at the same ``alpha`` while progress is too slow (the
    reference's inner loop); the joint training loop takes one epoch as its primal step.

    Args:
        rho_init: initial penalty ``rho``.
        rho_mult: factor applied to ``rho`` when ``h`` did not shrink enough.
        rho_max: cap on ``rho``.
        h_shrink: progress is too slow when ``h_new > h_shrink * h`` (NOTEARS: 0.25).
    """

    rho_init: float = 1.0
    rho_mult: float = 10.0
    rho_max: float = 1e16
    h_shrink: float = 0.25
    rho: float = field(init=False)
    alpha: float = field(init=False)
    h: float = field(init=False)  # h of the last accepted primal solution

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start again from ``rho_init``, ``alpha = 0`` (e.g. after the DAG is re-initialised)."""
        self.rho, self.alpha, self.h = self.rho_init, 0.0, math.inf

    def penalty(self, h: Tensor) -> Tensor:
        """``0.5 rho h^2 + alpha h`` for the current ``rho`` and ``alpha`` (scalar tensor)."""
        return 0.5 * self.rho * h * h + self.alpha * h

    def too_slow(self, h_new: float) -> bool:
        """Whether ``h`` shrank by less than ``h_shrink`` since the last accepted solution."""
        return h_new > self.h_shrink * self.h

    def raise_rho(self) -> None:
        """Multiply ``rho`` by ``rho_mult``, up to ``rho_max``."""
        self.rho = min(self.rho * self.rho_mult, self.rho_max)

    def ascend(self, h_new: float) -> None:
        """Accept a primal solution with acyclicity ``h_new``: ``alpha += rho h_new``."""
        self.alpha += self.rho * h_new
        self.h = h_new

    def update(self, h_new: float) -> None:
        """One dual step after a single (inexact) primal step: raise ``rho`` if progress was
        too slow, then ascend."""
        if self.too_slow(h_new):
            self.raise_rho()
        self.ascend(h_new)
