"""Many NOTEARS-MLP problems of one structure, solved together (bootstrap resamples of a graph).

Re-solving a DAG on B resamples of the same variables is B small problems whose cost is
almost all per-call overhead (a 10-variable NOTEARS-MLP evaluation is microseconds of
arithmetic). :class:`NotearsBatch` stacks B independent NOTEARS-MLPs, with the variables,
types and edge mask of one :class:`~cmcl_core.dag.NotearsMLP`, along a leading problem axis,
so one forward and backward pass evaluates all of them. :func:`learn_dags` runs the
augmented-Lagrangian schedule of ``learn_dag`` for every problem at once: each round solves the
primal problems of all unfinished problems jointly (their objectives are separable, so the
joint minimum is each problem's minimum) and then updates each problem's own ``rho`` and
``alpha`` exactly as ``learn_dag`` does; a finished problem's parameters stop moving.

Each problem starts from the initialisation ``learn_dag`` would draw with its seed. The joint
L-BFGS shares its line search and curvature memory across problems, so a problem's end point
is a NOTEARS solution but not bit for bit the one ``learn_dag`` finds alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcl_core.acyclicity import h_expm_sq, h_logdet_sq
from cmcl_core.dag import (
    DagConfig,
    NotearsMLP,
    discrete_input_scaling,
    lbfgs,
    prepare_data,
)
from cmcl_core.graph import threshold_dag


class NotearsBatch(nn.Module):
    """B independent NOTEARS-MLPs sharing one structure (parameters ``[B, ...]``).

    Args:
        template: gives the variables, types, level counts, mask and hidden widths.
        seeds: one per problem; problem b is initialised as ``NotearsMLP`` is under
            ``torch.manual_seed(seeds[b])``.
    """

    def __init__(self, template: NotearsMLP, seeds: Sequence[int]) -> None:
        super().__init__()
        # the template's buffers (masks, indices) are read; it is not registered as a submodule,
        # so its own parameters are not part of this module's (keep it on the same dtype/device)
        object.__setattr__(self, "t", template)
        members = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                members.append(
                    NotearsMLP(
                        template.var_types,
                        template.hidden,
                        template.allowed,
                        template.n_levels,
                        bias=template.fc1.bias is not None,
                    )
                )
        p, h1 = template.p, template.hidden[0]
        self.register_buffer("in_shift", None, persistent=False)  # standardise_discrete_inputs
        self.register_buffer("in_scale", None, persistent=False)
        self.fc1_w = nn.Parameter(
            torch.stack([m.fc1.weight.detach().view(p, h1, -1) for m in members])
        )  # [B, p, h1, D_in]
        self.fc1_b = (
            nn.Parameter(torch.stack([m.fc1.bias.detach().view(p, h1) for m in members]))
            if template.fc1.bias is not None
            else None
        )  # [B, p, h1]
        self.lc_w = nn.ParameterList(
            [
                nn.Parameter(torch.stack([m.lc_weights[k].detach() for m in members]))
                for k in range(len(template.lc_weights))
            ]
        )  # each [B, p, h_k, h_k+1]
        self.lc_b = nn.ParameterList(
            [
                nn.Parameter(torch.stack([m.lc_biases[k].detach() for m in members]))
                for k in range(len(template.lc_biases))
            ]
        )  # each [B, p, h_k+1]

    def expand_inputs(self, X: Tensor) -> Tensor:
        """Raw values ``[B, n, p]`` -> inputs ``[B, n, D_in]`` (``NotearsMLP.expand_inputs``)."""
        t = self.t
        if t.has_cat:
            cols = X[:, :, t.in_var]  # [B, n, p] -> [B, n, D_in]
            onehot = (cols == t.in_level.to(X.dtype)).to(X.dtype)
            X = torch.where(t.in_level >= 0, onehot, cols)  # [B, n, D_in]
        if self.in_shift is not None:
            X = (X - self.in_shift) / self.in_scale  # [B, n, D_in]
        return X

    def standardise_discrete_inputs(self, X: Tensor) -> None:
        """Each problem's binary and indicator inputs standardised on its own data ``X``
        ``[B, n, p]`` (``NotearsMLP.standardise_discrete_inputs``)."""
        discrete = self.t.discrete_inputs()
        if bool(discrete.any()):
            self.in_shift, self.in_scale = discrete_input_scaling(self.expand_inputs(X), discrete)

    @property
    def n_problems(self) -> int:
        """B."""
        return self.fc1_w.shape[0]

    def fc1_weight(self) -> Tensor:
        """Masked first-layer weights ``[B, p, h1, D_in]``."""
        return self.fc1_w * self.t.fc1_mask  # [B, p, h1, D_in] * [p, 1, D_in]

    def forward(self, X: Tensor) -> Tensor:
        """Link predictions ``[B, n, sum(out_dims)]`` from raw values ``X`` ``[B, n, p]``."""
        t = self.t
        X = self.expand_inputs(X)  # [B, n, p] -> [B, n, D_in]
        B, n = X.shape[:2]
        w1 = self.fc1_weight().flatten(1, 2)  # [B, p * h1, D_in]
        if self.fc1_b is None:
            x = torch.bmm(X, w1.transpose(1, 2))  # [B, n, D_in] -> [B, n, p * h1]
        else:
            x = torch.baddbmm(self.fc1_b.flatten(1)[:, None], X, w1.transpose(1, 2))
        x = x.view(B, n, t.p, -1)  # [B, n, p, h1]
        for k, w in enumerate(self.lc_w):
            x = torch.sigmoid(x)
            if w.shape[-1] == 1:  # a single output per variable: one GEMM, see _block_diagonal
                x = torch.bmm(
                    x.flatten(2), _block_diagonal(w[..., 0])
                )  # [B, n, p * h] -> [B, n, p]
                x = x.unsqueeze(-1)  # [B, n, p, 1]
            else:
                x = torch.einsum("bnph,bphk->bnpk", x, w)  # [B, n, p, h_k+1]
            if len(self.lc_b):
                x = x + self.lc_b[k][:, None]
        if not t.has_cat:
            return x.squeeze(-1)  # [B, n, p]
        return x[:, :, t.out_var, t.out_pos]  # [B, n, sum(out_dims)]

    def adjacency_sq(self) -> Tensor:
        """``A = W o W`` per problem, ``[B, p, p]``, ``A[b, k, j]`` over MLP j's input k."""
        sq = self.fc1_weight().pow(2).sum(2)  # [B, p, D_in]
        if self.t.has_cat:
            sq = sq @ self.t.group  # [B, p, p]
        return sq.transpose(1, 2)

    def adjacency(self) -> Tensor:
        """Weighted adjacency per problem, ``[B, p, p]``."""
        return self.adjacency_sq().sqrt()

    def link_losses(self, X: Tensor, log_mse: bool = False) -> Tensor:
        """Per-variable link loss per problem, mean over samples: ``[B, p]`` (as
        ``NotearsMLP.link_losses``; ``log_mse`` gives continuous columns ``0.5 log(MSE)``)."""
        t = self.t
        pred = self(X)  # [B, n, sum(out_dims)]
        first = pred[:, :, t.out_start] if t.has_cat else pred  # [B, n, p]
        out = X.new_zeros(X.shape[0], t.p)
        if len(t.cont_idx):
            mse = (first[:, :, t.cont_idx] - X[:, :, t.cont_idx]).pow(2).mean(1)  # [B, n_cont]
            out = out.index_copy(1, t.cont_idx, 0.5 * (mse.log() if log_mse else mse))
        if len(t.bin_idx):
            bce = F.binary_cross_entropy_with_logits(
                first[:, :, t.bin_idx], X[:, :, t.bin_idx], reduction="none"
            )  # [B, n, n_bin]
            out = out.index_copy(1, t.bin_idx, bce.mean(1))
        if len(t.cat_idx):
            pad = torch.cat([pred, pred.new_full((*pred.shape[:2], 1), -torch.inf)], 2)
            logp = torch.log_softmax(pad[:, :, t.cat_logit_idx], -1)  # [B, n, n_cat, K_max]
            codes = X[:, :, t.cat_idx].round().long().unsqueeze(-1)  # [B, n, n_cat, 1]
            nll = -logp.gather(-1, codes).squeeze(-1).mean(1)  # [B, n_cat]
            out = out.index_copy(1, t.cat_idx, nll)
        return out

    def l1_penalty(self, smooth: float) -> Tensor:
        """Curvature-scaled smooth L1 of the first layer per problem (``NotearsMLP``): ``[B]``."""
        w = self.fc1_weight()
        return ((torch.sqrt(w * w + smooth * smooth) - smooth) * self.t.l1_scale).sum((1, 2, 3))

    def l2_penalty(self) -> Tensor:
        """Sum of squared weights per problem (biases excluded): ``[B]``."""
        reg = self.fc1_weight().pow(2).sum((1, 2, 3))
        for w in self.lc_w:
            reg = reg + w.pow(2).sum((1, 2, 3))
        return reg

    def acyclicity(self, kind: str, s: float) -> Tensor:
        """``h(W)`` per problem: ``[B]``."""
        A = self.adjacency_sq()
        return h_expm_sq(A) if kind == "expm" else h_logdet_sq(A, s)


def _block_diagonal(w: Tensor) -> Tensor:
    """``[B, p, h] -> [B, p * h, p]``, zero but for ``out[b, j * h + k, j] = w[b, j, k]``.

    Each variable's output ``sum_k s[b, n, j, k] w[b, j, k]`` as one batched matrix product
    ``s.view(B, n, p * h) @ out``: p times the arithmetic of the weighted sum, but one GEMM
    forward and two backward instead of elementwise products and reductions over a
    ``[B, n, p, h]`` temporary, which cost about half of every evaluation at n = 1000.
    """
    B, p, h = w.shape
    eye = torch.eye(p, dtype=w.dtype, device=w.device)
    return (w[:, :, :, None] * eye[None, :, None, :]).reshape(B, p * h, p)


def _primal_solve(
    batch: NotearsBatch, X: Tensor, cfg: DagConfig, rho: Tensor, alpha: Tensor, live: Tensor
) -> None:
    """One L-BFGS solve of the augmented Lagrangians of the live problems (the others are
    weighted 0, so their gradient is 0 and they do not move)."""
    params = list(batch.parameters())
    opt = lbfgs(params, cfg)
    weight = live.to(X.dtype)

    def closure() -> Tensor:
        opt.zero_grad()
        h = batch.acyclicity(cfg.acyclicity, cfg.s)  # [B]
        out_of_domain = ~torch.isfinite(h) | (h < 0)  # logdet only, as in learn_dag
        h_safe = torch.where(out_of_domain, torch.zeros_like(h), h)
        penalty = torch.where(out_of_domain, 1e30, 0.5 * rho * h_safe * h_safe + alpha * h_safe)
        obj = batch.link_losses(X).sum(1) + penalty
        obj = obj + 0.5 * cfg.lambda2 * batch.l2_penalty()
        obj = obj + cfg.lambda1 * batch.l1_penalty(cfg.l1_smooth)
        total = (weight * obj).sum()
        total.backward()
        return total

    opt.step(closure)


def learn_dags(
    Xs: np.ndarray,
    var_types: Sequence[str] | None,
    allowed: np.ndarray | None,
    seeds: Sequence[int],
    cfg: DagConfig,
    levels: Sequence[int] | None = None,
) -> np.ndarray:
    """``learn_dag`` on each of ``Xs`` [B, n, p], solved together (see the module docstring).

    Args:
        Xs: B data matrices of the same variables (e.g. bootstrap resamples of one matrix).
        var_types: a type per column.
        allowed: ``[p, p]`` mask of possible edges, shared by all problems.
        seeds: initialisation seed per problem.
        cfg: the solver's settings (as ``learn_dag``'s).
        levels: level count per column (categorical columns; from the full data, since a
            resample may lack a level); read from ``Xs[0]`` when None.

    Returns:
        ``[B, p, p]`` thresholded, acyclic weighted adjacencies.
    """
    Xs = np.asarray(Xs, dtype=np.float64)
    if Xs.ndim != 3 or len(seeds) != Xs.shape[0]:
        raise ValueError(f"Xs must be [B, n, p] with one seed per problem, got {Xs.shape}")
    prepared = [prepare_data(X, var_types, allowed) for X in Xs]
    types, levels0, mask = prepared[0][1], prepared[0][2], prepared[0][3]
    levels = list(levels) if levels is not None else levels0
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    with torch.random.fork_rng(devices=[]):
        template = NotearsMLP(types, cfg.hidden, mask, levels, cfg.bias).to(dtype)
    batch = NotearsBatch(template, seeds).to(dtype)
    if cfg.acyclicity == "logdet":
        with torch.no_grad():
            batch.fc1_w.zero_()
    X = torch.as_tensor(np.stack([p[0] for p in prepared]), dtype=dtype)  # [B, n, p]
    batch.standardise_discrete_inputs(X)
    B = X.shape[0]
    rho, alpha = torch.ones(B, dtype=dtype), torch.zeros(B, dtype=dtype)
    h_prev = torch.full((B,), float("inf"), dtype=dtype)
    iters = torch.zeros(B, dtype=torch.long)
    live = torch.ones(B, dtype=torch.bool)
    while live.any():
        backup = [q.detach().clone() for q in batch.parameters()]
        _primal_solve(batch, X, cfg, rho, alpha, live)
        with torch.no_grad():
            h = batch.acyclicity(cfg.acyclicity, cfg.s)
            finite = torch.isfinite(h)
            for q in batch.parameters():
                finite &= torch.isfinite(q.flatten(1)).all(1)
            if (~finite).any():
                # A non-finite value in one problem spreads to all through the joint line
                # search: restore every problem it reached (finished ones included) and, as
                # learn_dag does, raise rho of the unfinished ones.
                for q, b in zip(batch.parameters(), backup, strict=True):
                    q[~finite] = b[~finite]
            bad = live & ~finite
            rho = torch.where(bad, rho * 10, rho)
            ok = live & finite
            slow = ok & (h > 0.25 * h_prev)
            rho = torch.where(slow, rho * 10, rho)
            accept = ok & (~slow | (rho >= cfg.rho_max))
            alpha = torch.where(accept, alpha + rho * h, alpha)
            h_prev = torch.where(accept, h, h_prev)
            iters = iters + accept.long()
            done = accept & ((h <= cfg.h_tol) | (rho >= cfg.rho_max) | (iters >= cfg.max_iter))
            live = live & ~done & (rho < cfg.rho_max)
    with torch.no_grad():
        W = batch.adjacency().cpu().numpy().astype(np.float64)
    return np.stack([threshold_dag(Wb, cfg.w_threshold) for Wb in W])
