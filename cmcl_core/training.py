"""Fitting a CMCL network (Algorithm 1): joint Adam on Eq. 14, then the structure step.

Each optimiser step computes, on one minibatch, (a) the embedding ELBO (Eq. 6), (b) the causal
representation ELBO (Eq. 19), (c) the DAG loss on ``V = [u, z]`` (Eq. 10) and, every
``cr_every`` steps, (d) the counterfactual contrastive regulariser (Eq. 13); one backward pass
updates all modules (the classifier D has its own learning rate). The augmented Lagrangian's
``rho`` and ``alpha`` are updated between epochs, as NOTEARS updates them between primal
solves. Every ``rotate_every`` epochs the latents are rotated to the decoder's sparsest basis
(``cmcl_core.rotation``) and the joint DAG starts again. After training the graph is re-solved
to convergence on ``[u, E[z | x, u]]`` and oriented (``cmcl_core.structure``), and the causal
functions are refitted on it.

:func:`fit_network` trains a :class:`~cmcl_core.network.CMCLNetwork` in place and returns a
:class:`FitResult`; it knows nothing of the estimator that owns the network.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

import cmcl_core.losses as losses
from cmcl_core.acyclicity import AugmentedLagrangian
from cmcl_core.config import CMCLConfig
from cmcl_core.device import Cohort, autocast, grad_scaler
from cmcl_core.edges import UNUSED_SCALE
from cmcl_core.graph import threshold_dag
from cmcl_core.network import INFERENCE_BATCH, CMCLNetwork
from cmcl_core.objective import (
    batch_standardise,
    cr_step,
    current_omega,
    dag_objective,
    representation_losses,
)
from cmcl_core.rotation import rewritten_parameters, rotate_latents
from cmcl_core.structure import StructureData, refit_functions, solve_structure

logger = logging.getLogger(__name__)

#: Rows whose posterior means and decoder Jacobian the sparse rotation is computed on.
ROTATION_ROWS = 1000
#: Rows at which each latent's effect on the decoded image is measured (:func:`image_effect`).
EFFECT_POINTS = 64

EpochCallback = Callable[[int, dict], None]


@dataclass
class FitResult:
    """What fitting produced besides the trained network.

    Attributes:
        z_shift: [m] mean of the posterior means of z over all rows.
        z_scale: [m] their standard deviation (+1e-6): the DAG sees ``(z - shift) / scale``.
        raw_adjacency: ``[(d + m), (d + m)]`` weighted adjacency of the jointly trained DAG.
        weighted_adjacency: the final graph (thresholded, acyclic).
        structure: the data the final graph was solved on (for resampling it).
        image_effect: [m] how much the decoded image moves per standard deviation of each
            latent (:func:`image_effect`); a latent below ``UNUSED_SCALE`` of the largest is
            kept out of the final graph.
        history: one record per epoch (loss parts, ``h``, ``rho``, ``alpha``, ``val_loss``,
            ``seconds``).
    """

    z_shift: np.ndarray
    z_scale: np.ndarray
    raw_adjacency: np.ndarray
    weighted_adjacency: np.ndarray
    structure: StructureData
    image_effect: np.ndarray
    history: list[dict] = field(default_factory=list)


@dataclass
class EarlyStopping:
    """Patience on a monitored loss (relative improvement ``min_delta``)."""

    patience: int
    min_delta: float
    best: float = math.inf
    stale: int = 0

    def update(self, monitored: float) -> None:
        """Record an epoch's monitored loss."""
        improved = monitored < self.best - self.min_delta * abs(self.best)
        if improved if math.isfinite(self.best) else True:
            self.best, self.stale = monitored, 0
        else:
            self.stale += 1

    def reset(self) -> None:
        """Forget the best loss (after a re-parametrisation changes the loss landscape)."""
        self.best, self.stale = math.inf, 0

    @property
    def exhausted(self) -> bool:
        """Whether the patience is used up."""
        return self.stale >= self.patience


def rotations_on(cfg: CMCLConfig, net: CMCLNetwork) -> bool:
    """Sparse rotations need the CM module (they rewrite the posterior's last layer)."""
    return bool(cfg.rotate_every) and net.has_cm


def rotation_due(cfg: CMCLConfig, epoch: int, net: CMCLNetwork) -> bool:
    """Sparse latent rotation after every ``rotate_every``-th epoch up to ``rotate_until``."""
    if not rotations_on(cfg, net):
        return False
    return (epoch + 1) % cfg.rotate_every == 0 and epoch + 1 <= cfg.rotate_until


def _optimizer(net: CMCLNetwork, cfg: CMCLConfig) -> torch.optim.Adam:
    return torch.optim.Adam(
        [
            {"params": net.representation_parameters(), "lr": cfg.learning_rate(net.latent_dim)},
            {"params": list(net.dag.parameters()), "lr": cfg.lr_dag},
            {"params": list(net.classifier.parameters()), "lr": cfg.lr_cr},
        ]
    )


def _train_epoch(
    net: CMCLNetwork,
    cfg: CMCLConfig,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    constraint: AugmentedLagrangian,
    batches: list[np.ndarray],
    data: tuple[Cohort, np.ndarray],
    warm: bool,
    step: int,
) -> tuple[dict[str, float], int]:
    """One pass of Adam steps on Eq. 14; returns (summed loss parts, the next step number)."""
    images, u = data
    dev = net.device
    omega = current_omega(net, cfg.w_threshold)
    use_cr = cfg.use_cr and not warm and bool(omega[0]) and bool(omega[1])
    sums: dict[str, float] = defaultdict(float)
    for rows in batches:
        x, u_raw, u_dag = net.batch(images, u, rows)
        with autocast(cfg.precision, dev):  # mixed precision: the representation modules only
            parts, z_mu = representation_losses(net, cfg, x, u_raw)
        z_dag = batch_standardise(z_mu.detach() if warm else z_mu)
        v = torch.cat([u_dag, z_dag], 1)  # V = [u, z], [n, d + m], float32
        dag, link = dag_objective(net, cfg, v, constraint)  # float32, outside autocast
        total = sum(parts.values()) + cfg.lambda_dag * dag  # Eq. 14 (without CR)
        if use_cr and step % cfg.cr_every == 0:
            with autocast(cfg.precision, dev):
                parts["cr"] = cr_step(net, cfg, z_mu, u_raw, u_dag, omega).float()
            total = total + cfg.lambda_cr * parts["cr"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()  # fp16: scaled against underflow; else unchanged
        scaler.step(opt)
        scaler.update()
        step += 1
        for key, val in parts.items():
            sums[key] += float(val.detach())
        sums["link"] += float(link.detach())
        sums["loss"] += float(total.detach())
    return sums, step


@torch.no_grad()
def _validation_loss(
    net: CMCLNetwork, cfg: CMCLConfig, data: tuple[Cohort, np.ndarray], idx: np.ndarray
) -> float:
    """Deterministic validation loss: -L1 - L2 (+ sparsity) + DAG link loss, batch average."""
    images, u = data
    total, count = 0.0, 0
    for start in range(0, len(idx), INFERENCE_BATCH):
        x, u_raw, u_dag = net.batch(images, u, idx[start : start + INFERENCE_BATCH])
        with autocast(cfg.precision, net.device):
            parts, z_mu = representation_losses(net, cfg, x, u_raw, sample=False)
        if z_mu.shape[0] > 2:
            parts["link"] = net.dag.loss(torch.cat([u_dag, batch_standardise(z_mu)], 1))
        total += float(sum(parts.values())) * x.shape[0]
        count += x.shape[0]
    return total / max(count, 1)


def _rotate(
    net: CMCLNetwork,
    cfg: CMCLConfig,
    data: tuple[Cohort, np.ndarray],
    train_idx: np.ndarray,
    epoch: int,
) -> None:
    images, u = data
    rows = np.sort(train_idx[:ROTATION_ROWS])
    z = net.posterior_means(images, u, rows)
    gain = rotate_latents(
        net, z, epoch, cfg.rotation == "oblique", np.asarray(u)[rows], cfg.rotation_u_weight
    )
    logger.info("epoch %d: latents rotated to the sparsest basis (L1 -%.1f%%)", epoch, 100 * gain)


def _log_epoch(record: dict) -> None:
    val = record["val_loss"]
    logger.info(
        "epoch %d: loss %.2f, link %.3f, h %.2e, rho %.1e, val %s, %.1fs",
        record["epoch"],
        record["loss"],
        record["link"],
        record["h"],
        record["rho"],
        "-" if val is None else f"{val:.2f}",
        record["seconds"],
    )


def fit_network(
    net: CMCLNetwork,
    cfg: CMCLConfig,
    images: np.ndarray | Cohort,
    u: np.ndarray,
    seed: int,
    callback: EpochCallback | None = None,
) -> FitResult:
    """Train ``net`` in place (Algorithm 1), then solve, orient and refit the final graph.

    Args:
        net: a freshly built network (input statistics set).
        cfg: the model's settings.
        images: [n, C, H, W] array in [0, 1] (read per batch; may be memory-mapped), or a
            :class:`~cmcl_core.device.Cohort` of it for the network's device.
        u: raw u [n, d].
        seed: seed of the data split, the batch order and the structure step.
        callback: called as ``callback(epoch, record)`` after each epoch.

    Returns:
        The latents' statistics, the joint and the final graph, and the epoch history.
    """
    rng = np.random.default_rng(seed)
    n = len(u)
    n_val = int(round(cfg.val_fraction * n)) if cfg.val_fraction > 0 else 0
    perm = rng.permutation(n)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    data = (Cohort.for_device(images, net.device, cfg.precision), u)
    opt = _optimizer(net, cfg)
    scaler = grad_scaler(cfg.precision, net.device)
    constraint = AugmentedLagrangian(cfg.rho_init, cfg.rho_mult, cfg.rho_max, cfg.h_shrink)
    stopping = EarlyStopping(cfg.patience, cfg.min_delta)
    history: list[dict] = []
    bs, step, rotated = cfg.batch_size, 0, False
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        warm = epoch < cfg.dag_warmup_epochs
        order = rng.permutation(train_idx)
        batches = [order[b * bs : (b + 1) * bs] for b in range(len(order) // bs)]
        sums, step = _train_epoch(net, cfg, opt, scaler, constraint, batches, data, warm, step)
        with torch.no_grad():
            h_val = float(net.dag.acyclicity(cfg.acyclicity))
        if not warm:  # NOTEARS dual ascent, once per epoch
            constraint.update(h_val)
        net.eval()
        rotated = rotation_due(cfg, epoch, net)
        if rotated:
            _rotate(net, cfg, data, train_idx, epoch)
            # Adam's moments of the rewritten layers belong to the old basis: drop them (they
            # restart, bias correction included); every other layer keeps its moments.
            for p in rewritten_parameters(net):
                opt.state.pop(p, None)
            constraint.reset()  # the DAG starts again
            stopping.reset()
        val_loss = _validation_loss(net, cfg, data, val_idx) if n_val > 1 else None
        record = {k: v / max(len(batches), 1) for k, v in sums.items()}
        record.update(
            epoch=epoch, h=h_val, rho=constraint.rho, alpha=constraint.alpha, val_loss=val_loss
        )
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        _log_epoch(record)
        if callback is not None:
            callback(epoch, record)
        stopping.update(record["loss"] if val_loss is None else val_loss)
        acyclic = h_val <= cfg.h_tol or cfg.refit_dag
        if epoch + 1 >= cfg.min_epochs and stopping.exhausted and acyclic:
            logger.info(
                "early stopping at epoch %d (no improvement for %d epochs)", epoch, stopping.stale
            )
            break
    if cfg.refit_dag and rotations_on(cfg, net) and not rotated:
        # A last rotation right before the final DAG solve, which starts from scratch anyway:
        # it hands the solve whitened latents in the sparsest basis (docs/method.md).
        _rotate(net, cfg, data, train_idx, cfg.epochs)
    return _final_graph(net, cfg, data, train_idx, seed, history)


def _final_graph(
    net: CMCLNetwork,
    cfg: CMCLConfig,
    data: tuple[Cohort, np.ndarray],
    train_idx: np.ndarray,
    seed: int,
    history: list[dict],
) -> FitResult:
    """Fitted z statistics, final DAG (thresholded, acyclic), refitted causal functions."""
    images, u = data
    net.eval()
    z = net.posterior_means(images, u)  # [n, m]
    z_shift, z_scale = z.mean(0), z.std(0) + 1e-6
    with torch.no_grad():
        # The jointly trained DAG; the final graph when refit_dag is off. With refit_dag (and a
        # rotation, which restarts the joint DAG, just before) the solve below is the graph.
        raw = net.dag.adjacency().cpu().numpy().astype(np.float64)
    rows = np.sort(train_idx)
    if len(rows) > cfg.refit_dag_max_samples:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, cfg.refit_dag_max_samples, replace=False))
    u_dag = net.dag_inputs(u[rows]).cpu().numpy()
    X = np.concatenate([u_dag, (z[rows] - z_shift) / z_scale], 1)  # [n, d + m]
    effect = image_effect(net.decoder, z[rows[:EFFECT_POINTS]], z_scale)  # [m]
    unused = _without_effect(effect, X.shape[1] - len(effect))  # [d + m]
    allowed = net.dag.allowed.cpu().numpy() & ~(unused[:, None] | unused[None, :])
    structure = StructureData(X, tuple(net.dag_types), allowed, tuple(net.dag_levels))
    if cfg.refit_dag:
        W = solve_structure(X, net.dag_types, allowed, seed, cfg)
    else:
        W = threshold_dag(np.where(allowed, raw, 0.0), cfg.w_threshold)
    X_t = torch.as_tensor(X, dtype=torch.float32, device=net.device)
    net.replace_dag(
        refit_functions(net.dag_types, net.dag_levels, X_t, W, cfg.dag_hidden, cfg.lambda2)
    )
    return FitResult(z_shift, z_scale, raw, W, structure, effect, history)


@torch.no_grad()
def image_effect(decoder: torch.nn.Module, z: np.ndarray, z_scale: np.ndarray) -> np.ndarray:
    """How much the decoded image moves when each latent moves by one standard deviation:
    ``[k, m]`` posterior means -> ``[m]``, the mean over the ``k`` points of the L2 norm (over
    pixels) of the forward difference of ``sigmoid(decoder)`` with a step of 0.1 sd, divided
    by 0.1.

    Unlike the spread of the posterior means, it survives the rotation's whitening (which
    gives every latent unit variance) and tells a latent that shapes the image from one that
    only carries what the prior and the encoder know from ``u`` (with more latents than image
    factors, the extra ones decode to almost nothing: docs/method.md).
    """
    device = next(decoder.parameters()).device
    pts = torch.as_tensor(z, dtype=torch.float32, device=device)  # [k, m]
    step = torch.as_tensor(0.1 * np.asarray(z_scale), dtype=torch.float32, device=device)
    diff = losses.decoder_differences(decoder, pts, torch.diag(step))  # [m, k, P]
    return (diff.norm(dim=2).mean(1) / 0.1).double().cpu().numpy()


def _without_effect(effect: np.ndarray, d: int) -> np.ndarray:
    """``[d + m]``: True for the latents whose image effect is below ``UNUSED_SCALE`` of the
    largest (kept out of the final graph: they are not image features), logged by name."""
    unused = effect < UNUSED_SCALE * effect.max(initial=0.0)
    if unused.any():
        logger.info(
            "latents %s hardly change the decoded image (effect below %.0f%% of the largest): "
            "reported unused and kept out of the graph",
            ", ".join(f"z{j}" for j in np.flatnonzero(unused)),
            100 * UNUSED_SCALE,
        )
    return np.concatenate([np.zeros(d, bool), unused])
