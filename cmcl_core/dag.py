"""NOTEARS-MLP causal DAG learner with per-type link functions (paper Section 3.2, Eq. 8-10).

One MLP per variable ``v_j = f_j(Pa(v_j)) + eps_j`` (Zheng et al. 2020, "Learning sparse
nonparametric DAGs"), vectorised over variables: the first layer of all MLPs is one
``Linear(D_in -> p * h1)`` and the deeper layers are locally connected (one weight block per
variable, applied with ``einsum``). The weighted adjacency is read from the first layer,
``W[k, j] = ||A_j^(1)[:, k]||_2`` (Eq. 9-10), and acyclicity is enforced with ``h(W)``
(``cmcl_core.acyclicity``) under the augmented-Lagrangian schedule of the reference
implementation.

Two ways to use it:

* ``learn_dag(X, var_types)``: the whole solver on a data matrix, returns a thresholded DAG.
* ``NotearsMLP``: the reusable pieces (``forward``, ``loss``, ``adjacency``, ``l1_penalty``,
  ``l2_penalty``, ``acyclicity``) for a joint training loop (the CMCL estimator composes them
  into its own Adam objective, Eq. 10, with ``V = [u, z]``).

Convention everywhere: ``W[i, j] != 0`` means the edge ``i -> j``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmcl_core.acyclicity import AugmentedLagrangian, h_expm_sq, h_logdet_sq
from cmcl_core.graph import threshold_dag
from cmcl_core.variables import check_var_types

logger = logging.getLogger(__name__)

__all__ = ["DagConfig", "NotearsMLP", "learn_dag", "prepare_data"]

ACYCLICITY_KINDS = ("expm", "logdet")


class NotearsMLP(nn.Module):
    """One MLP per variable with a shared, masked first layer (NOTEARS-MLP, paper Eq. 9).

    Inputs are raw values: continuous and binary (0/1) columns as they are, categorical
    columns as integer codes ``0..K-1`` stored as floats (one-hot expanded internally).
    Outputs are raw link predictions: a mean (continuous), a logit (binary) or ``K`` logits
    (categorical). The module does not standardise anything: callers pass standardised
    continuous data (``learn_dag`` does).

    Args:
        var_types: a ``VariableType`` name per variable, length ``p``.
        hidden: widths of the hidden layers of each MLP (paper Appendix D.3: 3 x 10).
        allowed: optional ``[p, p]`` bool mask; ``allowed[i, j]`` False makes ``i -> j``
            impossible. The diagonal is always masked (no self-loops).
        n_levels: number of levels ``K`` per variable (read for categorical ones only;
            required when any variable is categorical).
        bias: whether the layers have biases.
    """

    def __init__(
        self,
        var_types: Sequence[str],
        hidden: Sequence[int] = (10, 10, 10),
        allowed: np.ndarray | Tensor | None = None,
        n_levels: Sequence[int] | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.var_types = check_var_types(var_types)
        p = self.p = len(self.var_types)
        self.hidden = tuple(int(h) for h in hidden)
        if p < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"NotearsMLP needs >= 1 variable and hidden widths >= 1, got {hidden}")
        if any(t == "categorical" for t in self.var_types):
            if n_levels is None or len(n_levels) != p:
                raise ValueError(
                    "categorical variables need n_levels: one level count per variable"
                )
        levels = [
            int(n_levels[k]) if t == "categorical" else 1  # type: ignore[index]
            for k, t in enumerate(self.var_types)
        ]
        if any(k < 2 for k, t in zip(levels, self.var_types, strict=True) if t == "categorical"):
            raise ValueError(f"each categorical variable needs n_levels >= 2, got {levels}")
        self.n_levels = levels
        self.out_dims = levels  # K logits for categorical, 1 output otherwise
        is_cat = torch.tensor([t == "categorical" for t in self.var_types])

        # Input expansion: column c of the expanded input reads variable in_var[c]; for a
        # categorical variable it is the indicator of level in_level[c], else in_level = -1.
        in_var = torch.repeat_interleave(torch.arange(p), torch.tensor(levels))  # [D_in]
        starts = torch.cumsum(torch.tensor([0] + levels[:-1]), 0)  # [p]
        in_level = torch.arange(len(in_var)) - starts[in_var]  # [D_in]
        in_level = torch.where(is_cat[in_var], in_level, torch.full_like(in_level, -1))
        self.register_buffer("in_var", in_var, persistent=False)
        self.register_buffer("in_level", in_level, persistent=False)
        self.register_buffer("out_start", starts, persistent=False)
        group = F.one_hot(in_var, p).float()  # [D_in, p]: expanded column -> variable
        self.register_buffer("group", group, persistent=False)
        # input standardisation of binary and indicator columns (standardise_discrete_inputs)
        self.register_buffer("in_shift", None, persistent=False)
        self.register_buffer("in_scale", None, persistent=False)
        d_in = len(in_var)

        if allowed is None:
            allowed_t = torch.ones(p, p, dtype=torch.bool)
        else:
            allowed_t = torch.as_tensor(
                np.asarray(allowed) if not torch.is_tensor(allowed) else allowed
            )
            if allowed_t.shape != (p, p):
                raise ValueError(
                    f"allowed must be a [{p}, {p}] bool mask, got {tuple(allowed_t.shape)}"
                )
            allowed_t = allowed_t.to(torch.bool).cpu()
        allowed_t = allowed_t & ~torch.eye(p, dtype=torch.bool)
        self.register_buffer("allowed", allowed_t, persistent=False)
        # Per-child L1 weight: the curvature of the child's link loss at the null model, relative
        # to the Gaussian's (1 for 0.5 * r^2 on standardised data). The log-loss of a binary or
        # K-level child has curvature (1/K)(1 - 1/K) <= 1/4 per logit at uniform probabilities,
        # so under one L1 weight a discrete child needs ~4x the evidence of a continuous one to
        # keep an edge: on a demo cohort (pipeline.synthetic, 4/10, seed 10) NOTEARS on the true
        # latents loses z1 -> covid at lambda1 = 0.05 (weight 1.67 at 0.01). Scaling puts every
        # child's edges on the same footing.
        n_cls = [2 if t == "binary" else k for t, k in zip(self.var_types, levels, strict=True)]
        l1_scale = [
            1.0 if t == "continuous" else (1 - 1 / k) / k
            for t, k in zip(self.var_types, n_cls, strict=True)
        ]
        self.register_buffer("l1_scale", torch.tensor(l1_scale).view(p, 1, 1), persistent=False)
        # fc1 mask [p, 1, D_in]: MLP j may read expanded column c iff in_var[c] -> j is allowed.
        self.register_buffer(
            "fc1_mask", allowed_t[in_var].t().unsqueeze(1).float(), persistent=False
        )

        h1 = self.hidden[0]
        self.fc1 = nn.Linear(d_in, p * h1, bias=bias)
        dims = [*self.hidden, max(self.out_dims)]
        self.lc_weights = nn.ParameterList(
            [nn.Parameter(torch.empty(p, a, b)) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.lc_biases = nn.ParameterList(
            [nn.Parameter(torch.empty(p, b)) for b in dims[1:]] if bias else []
        )
        # Loss indices per link; categorical logits padded to K_max with a -inf column.
        self.has_cat = bool(is_cat.any())
        types = self.var_types
        for name, kind in (
            ("cont_idx", "continuous"),
            ("bin_idx", "binary"),
            ("cat_idx", "categorical"),
        ):
            idx = torch.tensor([k for k, t in enumerate(types) if t == kind], dtype=torch.long)
            self.register_buffer(name, idx, persistent=False)
        k_max = max(self.out_dims)
        cat_logit_idx = torch.full((len(self.cat_idx), k_max), d_in, dtype=torch.long)
        for r, k in enumerate(self.cat_idx.tolist()):
            cat_logit_idx[r, : levels[k]] = torch.arange(levels[k]) + int(starts[k])
        self.register_buffer("cat_logit_idx", cat_logit_idx, persistent=False)
        # Output gather: column c of forward()'s output is output out_pos[c] of MLP out_var[c].
        self.register_buffer("out_var", in_var.clone(), persistent=False)
        self.register_buffer("out_pos", torch.arange(d_in) - starts[in_var], persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as the reference: uniform(+-1/sqrt(fan_in)); masked weights are zero."""
        self.fc1.reset_parameters()
        self.fc1.weight.mul_(
            self.fc1_mask.expand(-1, self.hidden[0], -1).reshape_as(self.fc1.weight)
        )
        for k, w in enumerate(self.lc_weights):
            bound = 1.0 / math.sqrt(w.shape[1])
            w.uniform_(-bound, bound)
            if len(self.lc_biases):
                self.lc_biases[k].uniform_(-bound, bound)
        # Outputs beyond a variable's out_dim are never read: keep them at zero.
        out_used = torch.arange(self.lc_weights[-1].shape[2]) < torch.tensor(self.out_dims)[:, None]
        self.lc_weights[-1].mul_(out_used[:, None, :].to(self.lc_weights[-1].dtype))
        if len(self.lc_biases):
            self.lc_biases[-1].mul_(out_used.to(self.lc_biases[-1].dtype))

    def fc1_weight(self) -> Tensor:
        """Masked first-layer weights ``[p, h1, D_in]`` (MLP j, hidden unit, input column)."""
        w = self.fc1.weight.view(self.p, self.hidden[0], -1)  # [p * h1, D_in] -> [p, h1, D_in]
        return w * self.fc1_mask  # [p, h1, D_in]

    def expand_inputs(self, X: Tensor) -> Tensor:
        """Raw values ``[n, p]`` -> model inputs ``[n, D_in]`` (categorical one-hot; binary and
        indicator columns standardised once :meth:`standardise_discrete_inputs` has run)."""
        if self.has_cat:
            cols = X[:, self.in_var]  # [n, p] -> [n, D_in]
            onehot = (cols == self.in_level.to(X.dtype)).to(X.dtype)  # [n, D_in]
            X = torch.where(self.in_level >= 0, onehot, cols)  # [n, D_in]
        if self.in_shift is not None:
            X = (X - self.in_shift) / self.in_scale  # [n, D_in]
        return X

    def discrete_inputs(self) -> Tensor:
        """``[D_in]`` bool: expanded input columns that read a binary or categorical variable."""
        discrete = torch.tensor([t != "continuous" for t in self.var_types])
        return discrete[self.in_var.cpu()].to(self.in_var.device)

    def standardise_discrete_inputs(self, X: Tensor) -> None:
        """Read binary columns and level indicators as inputs with zero mean and unit variance
        on ``X`` ``[n, p]`` (targets keep their 0/1 and codes).

        Continuous columns arrive standardised (:func:`prepare_data`); a 0/1 column has standard
        deviation at most 0.5, so under one L1 weight a discrete parent's edge needed twice the
        first-layer weight of a continuous parent with the same effect, and a child's MLP could
        settle in the local minimum where both of its layers are zero: on the ``cxr`` cohort's
        true latents with ``covid`` declared a cause, ``covid -> z0`` (first-layer norm 1.76
        when found) was lost from 3 of 12 initialisations, from none once standardised.
        """
        discrete = self.discrete_inputs()
        if not bool(discrete.any()):
            return
        shift, scale = discrete_input_scaling(self.expand_inputs(X), discrete)
        self.in_shift, self.in_scale = shift, scale

    def forward(self, X: Tensor) -> Tensor:
        """Link predictions of every variable from all the others.

        Args:
            X: ``[n, p]`` raw values (categorical as codes).

        Returns:
            ``[n, sum(out_dims)]`` predictions: mean, logit, or K logits per variable.
        """
        n = X.shape[0]
        x_in = self.expand_inputs(X)  # [n, p] -> [n, D_in]
        w1 = self.fc1_weight().reshape(self.p * self.hidden[0], -1)  # [p * h1, D_in]
        x = F.linear(x_in, w1, self.fc1.bias).view(n, self.p, -1)  # [n, D_in] -> [n, p, h1]
        for k, w in enumerate(self.lc_weights):
            x = torch.sigmoid(x)  # [n, p, h_k]
            x = torch.einsum("nph,phk->npk", x, w)  # [n, p, h_k] -> [n, p, h_k+1]
            if len(self.lc_biases):
                x = x + self.lc_biases[k]  # [n, p, h_k+1]
        if not self.has_cat:
            return x.squeeze(-1)  # [n, p, 1] -> [n, p]
        return x[:, self.out_var, self.out_pos]  # [n, p, out_max] -> [n, sum(out_dims)]

    def adjacency_sq(self) -> Tensor:
        """Squared edge strengths ``A = W o W``, ``[p, p]``, ``A[k, j]`` over MLP j's input k."""
        sq = self.fc1_weight().pow(2).sum(1)  # [p, h1, D_in] -> [p, D_in]
        if not self.has_cat:
            return sq.t()  # [j, k] -> [k, j]
        return (sq @ self.group).t()  # [p, D_in] @ [D_in, p] -> [j, k] -> [k, j]

    def adjacency(self) -> Tensor:
        """Weighted adjacency ``W[k, j] = ||A_j^(1)[:, k]||_2`` (group norm over one-hot columns).

        Differentiable; the gradient at a zero entry is defined as zero.

        Returns:
            ``[p, p]`` non-negative tensor, ``W[i, j] > 0`` means a candidate edge ``i -> j``.
        """
        A = self.adjacency_sq()  # [p, p]
        pos = A > 0
        return torch.where(pos, torch.sqrt(torch.where(pos, A, torch.ones_like(A))), 0.0)

    def loss(self, X: Tensor, pred: Tensor | None = None) -> Tensor:
        """Link loss (first term of Eq. 10): mean over samples, summed over variables.

        Continuous: ``0.5 * squared error`` (as the NOTEARS reference); binary: BCE with
        logits; categorical: cross-entropy over the K logits.

        Args:
            X: ``[n, p]`` raw values (targets).
            pred: ``[n, sum(out_dims)]`` output of ``forward(X)``; computed when None.

        Returns:
            Scalar loss.
        """
        return self.link_losses(X, pred).sum()

    def link_losses(self, X: Tensor, pred: Tensor | None = None, log_mse: bool = False) -> Tensor:
        """Per-variable link loss, mean over samples: ``[p]``.

        Args:
            X: ``[n, p]`` raw values (targets).
            pred: ``[n, sum(out_dims)]`` output of ``forward(X)``; computed when None.
            log_mse: continuous variables give ``0.5 log(mean squared error)`` instead of
                ``0.5 * mean squared error``: the Gaussian negative log-likelihood per sample
                with the noise variance at its maximum (constants dropped), in the same unit
                (nats per sample) as the binary and categorical log-losses, so that scores of
                different variables can be added (``cmcl_core.orientation``).
        """
        if pred is None:
            pred = self(X)
        first = pred[:, self.out_start] if self.has_cat else pred  # [n, p]: first output each
        out = X.new_zeros(X.shape[1])  # [p]
        if len(self.cont_idx):
            mse = (first[:, self.cont_idx] - X[:, self.cont_idx]).pow(2).mean(0)  # [n_cont]
            out = out.index_put((self.cont_idx,), 0.5 * (mse.log() if log_mse else mse))
        if len(self.bin_idx):
            bce = F.binary_cross_entropy_with_logits(
                first[:, self.bin_idx], X[:, self.bin_idx], reduction="none"
            )  # [n, n_bin]
            out = out.index_put((self.bin_idx,), bce.mean(0))
        if len(self.cat_idx):
            pad = torch.cat([pred, pred.new_full((pred.shape[0], 1), -torch.inf)], 1)
            logits = pad[:, self.cat_logit_idx]  # [n, sum(out_dims) + 1] -> [n, n_cat, K_max]
            logp = torch.log_softmax(logits, -1)  # [n, n_cat, K_max]
            codes = X[:, self.cat_idx].round().long().unsqueeze(-1)  # [n, n_cat, 1]
            out = out.index_put((self.cat_idx,), -logp.gather(-1, codes).squeeze(-1).mean(0))
        return out

    def l1_penalty(self, smooth: float = 0.0) -> Tensor:
        """L1 norm of the first-layer weights (Eq. 10, ``alpha_1`` term), each child's inputs
        weighted by its link's curvature (1 continuous, 1/4 binary, (1/K)(1 - 1/K) categorical).

        Args:
            smooth: 0 for the exact ``sum |w|`` (for subgradient methods such as Adam); ``> 0``
                for the pseudo-Huber ``sum sqrt(w^2 + smooth^2) - smooth`` used with L-BFGS.

        Returns:
            Scalar tensor.
        """
        w = self.fc1_weight()  # [p, h1, D_in]
        if smooth > 0:
            return ((torch.sqrt(w * w + smooth * smooth) - smooth) * self.l1_scale).sum()
        return (w.abs() * self.l1_scale).sum()

    def l2_penalty(self) -> Tensor:
        """Sum of squared weights of all layers (biases excluded), as the reference ``l2_reg``."""
        reg = self.fc1_weight().pow(2).sum()
        for w in self.lc_weights:
            reg = reg + w.pow(2).sum()
        return reg

    def acyclicity(self, kind: str = "expm", s: float = 1.0) -> Tensor:
        """``h(W)`` of the current adjacency: ``"expm"`` (NOTEARS) or ``"logdet"`` (DAGMA, ``s``).

        Computed from ``A = W o W`` directly, so no square root enters the gradient.
        """
        if kind == "expm":
            return h_expm_sq(self.adjacency_sq())
        if kind == "logdet":
            return h_logdet_sq(self.adjacency_sq(), s)
        raise ValueError(f"unknown acyclicity {kind!r}: use one of {ACYCLICITY_KINDS}")


@dataclass(frozen=True)
class DagConfig:
    """Hyperparameters of ``learn_dag`` (names from the NOTEARS reference).

    Attributes:
        hidden: hidden-layer widths of each variable's MLP. Default ``(10,)``: the NOTEARS
            reference architecture ``dims=[d, 10, 1]``. The paper's 3 x 10 (Appendix D.3) is
            ``(10, 10, 10)``; with the reference's L2 on every layer, L-BFGS was measured to
            collapse it to the empty graph on the 5 u + 5 z benchmark graph.
        lambda1: L1 weight on the first layer (Eq. 10 ``alpha_1``).
        lambda2: L2 weight on all layer weights (reference ``lambda2``, used as 0.5 * lambda2).
        w_threshold: edges with ``|W| < w_threshold`` are dropped from the result.
        acyclicity: ``"expm"`` (NOTEARS, default) or ``"logdet"`` (DAGMA). Measured with this
            solver (benchmarks/results/dag_scaling.md): expm took 1.4-3.6x less CPU than logdet
            at d = 10 and 20 with equal or better SHD; logdet also leaves its M-matrix domain
            during line searches (steps are then rejected) and floors near 1e-6 in float32.
        s: DAGMA's M-matrix scale, used by ``"logdet"`` only.
        h_tol: stop when ``h(W) <= h_tol``.
        rho_max: stop when the penalty ``rho`` reaches this.
        max_iter: maximum number of dual-ascent (alpha) updates.
        lbfgs_max_iter: L-BFGS iterations per primal subproblem.
        lbfgs_history: L-BFGS memory.
        lbfgs_tol: L-BFGS ``tolerance_change`` (and ``tolerance_grad``).
        l1_smooth: pseudo-Huber smoothing of the L1 term so that L-BFGS sees a smooth
            objective (the reference splits w = w+ - w- with L-BFGS-B bounds instead).
        dtype: ``"float32"`` (default: same SHD as float64 on the benchmark graphs, about 2x
            faster) or ``"float64"`` (the reference's precision).
        bias: biases in the MLP layers.
    """

    hidden: tuple[int, ...] = (10,)
    lambda1: float = 0.01
    lambda2: float = 0.01
    w_threshold: float = 0.3
    acyclicity: str = "expm"
    s: float = 1.0
    h_tol: float = 1e-8
    rho_max: float = 1e16
    max_iter: int = 100
    lbfgs_max_iter: int = 500
    lbfgs_history: int = 20
    lbfgs_tol: float = 1e-9
    l1_smooth: float = 1e-3
    dtype: str = "float32"
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.acyclicity not in ACYCLICITY_KINDS:
            raise ValueError(
                f"acyclicity must be one of {ACYCLICITY_KINDS}, got {self.acyclicity!r}"
            )
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if min(self.lambda1, self.lambda2, self.w_threshold, self.l1_smooth) < 0:
            raise ValueError("lambda1, lambda2, w_threshold and l1_smooth must be >= 0")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be non-empty positive widths, got {self.hidden}")


def discrete_input_scaling(x_in: Tensor, discrete: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of the discrete expanded columns over samples (0 and 1 for
    the others, and scale 1 for a constant column, e.g. a level a resample lacks).

    Args:
        x_in: ``[..., n, D_in]`` expanded inputs.
        discrete: ``[D_in]`` bool, the columns to standardise.

    Returns:
        ``(shift, scale)``, each ``[..., 1, D_in]``.
    """
    mean = x_in.mean(-2, keepdim=True)  # [..., 1, D_in]
    std = x_in.std(-2, unbiased=False, keepdim=True)
    shift = torch.where(discrete, mean, torch.zeros_like(mean))
    scale = torch.where(discrete & (std > 0), std, torch.ones_like(std))
    return shift, scale


def prepare_data(
    X: np.ndarray, var_types: Sequence[str] | None, allowed: np.ndarray | None
) -> tuple[np.ndarray, list[str], list[int], np.ndarray | None]:
    """Validate a data matrix for the DAG learner and standardise its continuous columns.

    Args:
        X: ``[n, p]`` data: continuous columns in any scale, binary 0/1, categorical codes.
        var_types: a type per column (all continuous when None).
        allowed: optional ``[p, p]`` mask of possible edges.

    Returns:
        (standardised float64 data, types, level count per column, mask as bool or None).

    Raises:
        ValueError: naming the column and the fix.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1:
        raise ValueError(f"X must be a 2-D [n, p] array with n >= 2 samples, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) and X.dtype != bool:
        raise ValueError(
            f"X must be numeric, got dtype {X.dtype}: encode categories as codes 0..K-1"
        )
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        bad = sorted(set(np.argwhere(~np.isfinite(X))[:, 1].tolist()))
        raise ValueError(f"X has NaN or inf values in columns {bad}: impute or drop those rows")
    n, p = X.shape
    types = check_var_types(var_types if var_types is not None else ["continuous"] * p, p)
    levels = [1] * p
    for k, t in enumerate(types):
        col = X[:, k]
        if t == "binary" and not np.all((col == 0) | (col == 1)):
            raise ValueError(f"column {k} is declared binary but has values other than 0/1")
        if t == "categorical":
            if np.any(col < 0) or np.any(col != np.round(col)):
                raise ValueError(
                    f"column {k} is declared categorical but is not integer codes 0..K-1"
                )
            levels[k] = max(int(col.max()) + 1, 2)
        if t == "continuous":
            sd = col.std()
            if sd == 0:
                raise ValueError(f"continuous column {k} is constant: drop it before learning")
            X[:, k] = (col - col.mean()) / sd
    if allowed is not None:
        allowed = np.asarray(allowed)
        if allowed.shape != (p, p):
            raise ValueError(f"allowed must be a [{p}, {p}] bool mask, got shape {allowed.shape}")
        allowed = allowed.astype(bool)
    return X, types, levels, allowed


def learn_dag(
    X: np.ndarray,
    var_types: Sequence[str] | None = None,
    allowed: np.ndarray | None = None,
    seed: int = 0,
    device: str | None = None,
    *,
    hidden: Sequence[int] = (10,),
    lambda1: float = 0.01,
    lambda2: float = 0.01,
    w_threshold: float = 0.3,
    acyclicity: str = "expm",
    s: float = 1.0,
    h_tol: float = 1e-8,
    rho_max: float = 1e16,
    max_iter: int = 100,
    lbfgs_max_iter: int = 500,
    lbfgs_history: int = 20,
    lbfgs_tol: float = 1e-9,
    l1_smooth: float = 1e-3,
    dtype: str = "float32",
    bias: bool = True,
) -> np.ndarray:
    """Learn a causal DAG with NOTEARS-MLP (Zheng et al. 2020; paper Eq. 8-10).

    Continuous columns are standardised internally (zero mean, unit variance) so that
    variables in mixed units are treated alike; binary columns must be 0/1 and use the
    logistic link; categorical columns must be codes 0..K-1 and use a softmax link.

    Solver: augmented Lagrangian as the reference (``rho`` from 1, x10 while
    ``h_new > 0.25 h``, ``alpha += rho h``, stop at ``h <= h_tol`` or ``rho >= rho_max``); each
    primal subproblem runs ``torch.optim.LBFGS`` (strong-Wolfe line search) on
    ``loss + 0.5 rho h^2 + alpha h + 0.5 lambda2 ||w||^2 + lambda1 L1_smooth(fc1)``.
    Deterministic for a given seed on CPU.

    Args:
        X: ``[n, p]`` data.
        var_types: a ``VariableType`` name per column; all continuous when None.
        allowed: optional ``[p, p]`` bool mask of possible edges (e.g. ``graph.bipartite_mask``).
        seed: seed of the MLP initialisation.
        device: torch device (e.g. ``"cuda"``); CPU when None.
        hidden, lambda1, lambda2, w_threshold, acyclicity, s, h_tol, rho_max, max_iter,
            lbfgs_max_iter, lbfgs_history, lbfgs_tol, l1_smooth, dtype, bias: the solver's
            settings, documented on :class:`DagConfig`.

    Returns:
        ``[p, p]`` numpy weighted adjacency, thresholded and acyclic; ``W[i, j] != 0`` means
        ``i -> j``.

    Raises:
        ValueError: on malformed data, types, mask or settings.
    """
    cfg = DagConfig(
        hidden=tuple(hidden),
        lambda1=lambda1,
        lambda2=lambda2,
        w_threshold=w_threshold,
        acyclicity=acyclicity,
        s=s,
        h_tol=h_tol,
        rho_max=rho_max,
        max_iter=max_iter,
        lbfgs_max_iter=lbfgs_max_iter,
        lbfgs_history=lbfgs_history,
        lbfgs_tol=lbfgs_tol,
        l1_smooth=l1_smooth,
        dtype=dtype,
        bias=bias,
    )
    Xs, types, levels, allowed = prepare_data(X, var_types, allowed)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    dev = torch.device(device or "cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NotearsMLP(types, cfg.hidden, allowed, levels, cfg.bias)
    model = model.to(device=dev, dtype=dtype)
    if cfg.acyclicity == "logdet":
        # DAGMA's log-det is only defined while the spectral radius of W o W is below s:
        # start from W = 0 as DAGMA does (the random init of fc1 can lie outside).
        with torch.no_grad():
            model.fc1.weight.zero_()
    Xt = torch.as_tensor(Xs, dtype=dtype, device=dev)  # [n, p]
    model.standardise_discrete_inputs(Xt)
    W = _solve(model, Xt, cfg)
    return threshold_dag(W, cfg.w_threshold)


def lbfgs(params: Iterable[nn.Parameter], cfg: DagConfig) -> torch.optim.LBFGS:
    """The primal solver of the augmented Lagrangian: L-BFGS with a strong-Wolfe line search."""
    return torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=cfg.lbfgs_max_iter,
        history_size=cfg.lbfgs_history,
        tolerance_grad=cfg.lbfgs_tol,
        tolerance_change=cfg.lbfgs_tol,
        line_search_fn="strong_wolfe",
    )


def fit_fixed_graph(model: nn.Module, objective: Callable[[], Tensor], max_iter: int) -> None:
    """Minimise ``objective()`` over ``model``'s parameters with L-BFGS (strong Wolfe, history
    20): the causal functions of a graph that is already fixed (no acyclicity term)."""
    opt = torch.optim.LBFGS(
        model.parameters(), max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)


def _primal_solve(
    model: NotearsMLP, X: Tensor, cfg: DagConfig, constraint: AugmentedLagrangian
) -> int:
    """Minimise the augmented Lagrangian at fixed (rho, alpha) with L-BFGS; returns #evaluations.

    Objective: ``loss + 0.5 rho h^2 + alpha h + 0.5 lambda2 l2 + lambda1 l1_smooth``.
    """
    params = [q for q in model.parameters() if q.requires_grad]
    opt = lbfgs(params, cfg)
    n_evals = 0

    def closure() -> Tensor:
        nonlocal n_evals
        n_evals += 1
        opt.zero_grad()
        loss = model.loss(X)
        h_val = model.acyclicity(cfg.acyclicity, cfg.s)
        if not torch.isfinite(h_val) or h_val < 0:
            # Left DAGMA's M-matrix domain (logdet only): a huge value makes the line search
            # backtrack; the data term keeps the gradient defined.
            obj = loss + 1e30
        else:
            # the terms of AugmentedLagrangian.penalty, summed in the reference's order (a
            # different float32 order moves L-BFGS's end point and the reported weights)
            obj = loss + 0.5 * constraint.rho * h_val * h_val + constraint.alpha * h_val
        obj = obj + 0.5 * cfg.lambda2 * model.l2_penalty()
        obj = obj + cfg.lambda1 * model.l1_penalty(cfg.l1_smooth)
        obj.backward()
        return obj

    opt.step(closure)
    return n_evals


def _solve(model: NotearsMLP, X: Tensor, cfg: DagConfig) -> tuple[np.ndarray, AugmentedLagrangian]:
    """Augmented-Lagrangian loop of the reference ``notears_nonlinear``; returns raw ``W`` and
    the final dual state."""
    constraint = AugmentedLagrangian(rho_init=1.0, rho_mult=10.0, rho_max=cfg.rho_max)
    params = [q for q in model.parameters() if q.requires_grad]
    for it in range(cfg.max_iter):
        h_new = math.inf
        while constraint.rho < cfg.rho_max:
            backup = [q.detach().clone() for q in params]
            n_evals = _primal_solve(model, X, cfg, constraint)
            with torch.no_grad():
                h_t = model.acyclicity(cfg.acyclicity, cfg.s)
                loss_t = float(model.loss(X))
            if not all(torch.isfinite(q).all() for q in params) or not torch.isfinite(h_t):
                logger.warning(
                    "learn_dag: non-finite step at rho=%.3g; restoring, raising rho",
                    constraint.rho,
                )
                with torch.no_grad():
                    for q, b in zip(params, backup, strict=True):
                        q.copy_(b)
                constraint.raise_rho()
                continue
            h_new = float(h_t)
            logger.debug(
                "learn_dag: subproblem rho=%.3g alpha=%.3g: h=%.3g, loss=%.4f, %d evaluations",
                constraint.rho,
                constraint.alpha,
                h_new,
                loss_t,
                n_evals,
            )
            if not constraint.too_slow(h_new):
                break
            constraint.raise_rho()
        constraint.ascend(h_new)
        logger.debug(
            "learn_dag: iteration %d, h=%.3g, rho=%.3g, alpha=%.3g",
            it,
            constraint.h,
            constraint.rho,
            constraint.alpha,
        )
        if constraint.h <= cfg.h_tol or constraint.rho >= cfg.rho_max:
            break
    with torch.no_grad():
        return model.adjacency().detach().cpu().numpy().astype(np.float64)
