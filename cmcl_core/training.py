"""Training loop of CMCL (Algorithm 1): joint Adam on Eq. 14 with an augmented Lagrangian.

Each optimiser step computes, on one minibatch, (a) the embedding ELBO (Eq. 6), (b) the causal
representation ELBO (Eq. 19), (c) the DAG loss on ``V = [u, z]`` (Eq. 10) and, every
``cr_every`` steps, (d) the counterfactual contrastive regulariser (Eq. 13); one backward pass
updates all modules (the classifier D has its own learning rate). ``rho`` and ``alpha`` are
updated between epochs as in NOTEARS. After training the DAG is re-solved to convergence on
``[u, E[z | x, u]]`` (``refit_dag``), its edges are re-oriented by likelihood (``orient_edges``,
``cmcl_core.orientation``) and the causal functions are refitted on the final graph, so that
interventions use exactly the reported edges.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from cmcl_core import losses
from cmcl_core.config import CMCLConfig
from cmcl_core.dag import NotearsMLP, bipartite_mask, learn_dag, threshold_dag
from cmcl_core.orientation import orient_edges
from cmcl_core.rotation import rewritten_parameters, rotate_latents

if TYPE_CHECKING:
    from cmcl_core.estimator import CMCL

logger = logging.getLogger(__name__)


def _sample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Reparameterised Gaussian sample (Kingma and Welling 2014)."""
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # [n, k]


def representation_losses(
    model: CMCL, cfg: CMCLConfig, x: torch.Tensor, u_raw: torch.Tensor, sample: bool = True
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """-L1 (Eq. 6) and -L2 (Eq. 19) on a batch, and the posterior means of z.

    Args:
        model: the estimator being fitted (modules built).
        cfg: its config.
        x: images [n, C, H, W].
        u_raw: raw u [n, d].
        sample: draw z0 and z (training) or use the means (evaluation).

    Returns:
        (loss parts, z means [n, m]).
    """
    lik, sig = cfg.likelihood, cfg.gaussian_sigma
    z0_mu, z0_lv = model.encoder_(x)  # [n, C, H, W] -> 2 x [n, e]
    z0 = _sample(z0_mu, z0_lv) if sample else z0_mu
    parts: dict[str, torch.Tensor] = {}
    if not cfg.use_cm:  # ablation: z = z0 (the paper flattens z0 as z)
        rec, kl = losses.negative_elbo(
            model.decoder_(z0), x, z0_mu, z0_lv, beta=cfg.beta_embed, likelihood=lik, sigma=sig
        )
        parts.update(recon=rec, kl=kl)
        if cfg.decoder_sparsity > 0:
            parts["sparsity"] = cfg.decoder_sparsity * _jacobian_penalty(model, cfg, z0_mu, sample)
        return parts, z0_mu
    k = max(1, math.ceil(cfg.embed_recon_fraction * x.shape[0]))
    rec1 = losses.reconstruction_nll(model.embed_decoder_(z0[:k]), x[:k], lik, sig).mean()  # Eq. 6
    kl1 = losses.gaussian_kl(z0_mu, z0_lv).mean()
    u_feat = model.u_features_(u_raw)  # [n, d] -> [n, d_feat]
    z_mu, z_lv = model.posterior_(z0_mu, u_feat)  # q(z | z0, u), Eq. 17, on E[z0 | x]
    p_mu, p_lv = model.prior_(u_feat)  # p(z | u), Eq. 18
    z = _sample(z_mu, z_lv) if sample else z_mu
    rec2, kl2 = losses.negative_elbo(
        model.decoder_(z), x, z_mu, z_lv, p_mu, p_lv, cfg.beta_cm, likelihood=lik, sigma=sig
    )
    parts.update(recon_embed=rec1, kl_embed=cfg.beta_embed * kl1, recon=rec2, kl=kl2)
    if cfg.decoder_sparsity > 0:
        parts["sparsity"] = cfg.decoder_sparsity * _jacobian_penalty(model, cfg, z_mu, sample)
    return parts, z_mu


def _jacobian_penalty(
    model: CMCL, cfg: CMCLConfig, z_mu: torch.Tensor, sample: bool = True
) -> torch.Tensor:
    """Structural-sparsity term on the decoder p(x | z) (``CMCLConfig.decoder_sparsity``):
    the Jacobian's L1 norm at ``sparsity_samples`` posterior means, along ``sparsity_dims``
    random latent directions, rescaled to all m directions (an unbiased estimate). In
    evaluation (``sample=False``) every direction is used, so the validation loss that early
    stopping watches is deterministic and sees the alignment, which reconstruction cannot."""
    m = z_mu.shape[1]
    k = min(cfg.sparsity_samples, z_mu.shape[0])
    r = min(cfg.sparsity_dims, m) if sample else m
    dev = z_mu.device
    dims = torch.randperm(m, device=dev)[:r] if r < m else torch.arange(m, device=dev)
    scale = z_mu.detach().std(0) + 1e-4  # [m]
    return losses.decoder_jacobian_l1(model.decoder_, z_mu[:k], dims, scale) * (m / r)


def current_omega(model: CMCL, cfg: CMCLConfig) -> tuple[list[int], list[int], torch.Tensor]:
    """Omega+ (u with a z child), Omega- (u with a z parent) and the u->z child mask [d, m]
    of the current thresholded W (Eq. 12)."""
    d = model.n_features_in_
    with torch.no_grad():
        edge = model.dag_.adjacency() >= cfg.w_threshold  # [p, p]
    child = edge[:d, d:]  # [d, m]
    pos = torch.nonzero(child.any(1)).flatten().tolist()
    neg = torch.nonzero(edge[d:, :d].any(0)).flatten().tolist()
    return pos, neg, child


def _intervene_batch(
    u_raw: torch.Tensor, u_dag: torch.Tensor, var: torch.Tensor, donor: torch.Tensor, s: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows :s with u_var set to the value of a donor row (an empirical do(u_i = u'))."""
    rows = torch.arange(s, device=u_raw.device)
    u_raw2, u_dag2 = u_raw[:s].clone(), u_dag[:s].clone()
    u_raw2[rows, var] = u_raw[donor, var]
    u_dag2[rows, var] = u_dag[donor, var]
    return u_raw2, u_dag2


def cr_step(
    model: CMCL,
    cfg: CMCLConfig,
    x_recon_z: torch.Tensor,
    u_raw: torch.Tensor,
    u_dag: torch.Tensor,
    omega: tuple[list[int], list[int], torch.Tensor],
) -> torch.Tensor:
    """Counterfactual contrastive regulariser on a subset of the batch (Eq. 11-13, Alg. 1 d).

    For each sample draw u_i in Omega+ and u_n in Omega- and a donor sample whose values they
    take. Causal counterfactual: abduction through the causal functions,
    z_j' = z_j + f_j(V') - f_j(V) for the children z_j of u_i; anti-causal: z unchanged.
    Decode, re-encode with the intervened u, and let D tell the two changes of the
    re-encoded representation (relative to re-encoding the factual decoding) apart.

    Args:
        model: the estimator.
        cfg: its config.
        x_recon_z: posterior means z of the batch [n, m] (with gradient).
        u_raw: raw u [n, d].
        u_dag: DAG encoding of u [n, d].
        omega: output of :func:`current_omega`.

    Returns:
        Scalar -L_CR (BCE of D).
    """
    pos, neg, child = omega
    n, d = u_raw.shape
    s = min(cfg.cr_samples, n)
    dev = u_raw.device
    z = x_recon_z[:s]  # [s, m]
    i_pos = torch.as_tensor(pos, device=dev)[torch.randint(len(pos), (s,), device=dev)]
    i_neg = torch.as_tensor(neg, device=dev)[torch.randint(len(neg), (s,), device=dev)]
    donor = torch.randint(n, (s,), device=dev)
    ur, ud = u_raw[:s], u_dag[:s]
    ur_pos, ud_pos = _intervene_batch(u_raw, u_dag, i_pos, donor, s)
    ur_neg, _ = _intervene_batch(u_raw, u_dag, i_neg, donor, s)
    with torch.no_grad():  # the causal functions are read, not trained, here
        mean, std = x_recon_z.mean(0), x_recon_z.std(0) + 1e-4  # [m]
        zs = (z - mean) / std  # [s, m]
        out = model.dag_.out_start[d:]  # output column of each z
        f_fact = model.dag_(torch.cat([ud, zs], 1))[:, out]  # [s, p] -> [s, m]
        f_cf = model.dag_(torch.cat([ud_pos, zs], 1))[:, out]  # [s, m]
        shift = (f_cf - f_fact) * child[i_pos].float() * std  # [s, m], 0 off u_i's children
    z_cf = z + shift  # [s, m]
    x_dec = torch.sigmoid(model.decoder_(torch.cat([z, z_cf], 0)))  # [2s, C, H, W]
    e_mu, _ = model.encoder_(x_dec)  # [2s, e]
    e_all = torch.cat([e_mu[:s], e_mu[s:], e_mu[:s]], 0)  # factual, causal cf, anti-causal cf
    if model.posterior_ is not None:
        u_all = torch.cat([ur, ur_pos, ur_neg], 0)  # [3s, d]
        z_t, _ = model.posterior_(e_all, model.u_features_(u_all))  # [3s, m]
    else:
        z_t = e_all
    ref, z_pos, z_neg = z_t.chunk(3, 0)
    logit_pos = model.classifier_(z_pos - ref).squeeze(1)  # [s]
    logit_neg = model.classifier_(z_neg - ref).squeeze(1)  # [s]
    return losses.cr_loss(logit_pos, logit_neg)


@torch.no_grad()
def _evaluate(model: CMCL, cfg: CMCLConfig, images, u, idx: np.ndarray) -> float:
    """Deterministic validation loss: -L1 - L2 (+ sparsity) + DAG link loss, batch average."""
    total, count = 0.0, 0
    for start in range(0, len(idx), 256):
        x, u_raw, u_dag = model._batch(images, u, idx[start : start + 256])
        parts, z_mu = representation_losses(model, cfg, x, u_raw, sample=False)
        if z_mu.shape[0] > 2:
            v = torch.cat([u_dag, model._z_std(z_mu, batch_stats=True)], 1)
            parts["link"] = model.dag_.loss(v)
        total += float(sum(parts.values())) * x.shape[0]
        count += x.shape[0]
    return total / max(count, 1)


@torch.no_grad()
def posterior_means(model: CMCL, images, u, idx: np.ndarray | None = None) -> np.ndarray:
    """E[z | x, u] for the rows idx (all when None), in batches: [len(idx), m]."""
    idx = np.arange(len(u)) if idx is None else idx
    enc = model._encoder()
    out = []
    for start in range(0, len(idx), 256):
        x, u_raw, _ = model._batch(images, u, idx[start : start + 256])
        out.append(enc(x, u_raw).cpu().numpy())
    return np.concatenate(out, 0) if out else np.zeros((0, model.latent_dim_))


def _set_mode(model: CMCL, train_mode: bool) -> None:
    for name in model._module_names():
        mod = getattr(model, name)
        if mod is not None:
            mod.train(train_mode)


def train(
    model: CMCL,
    cfg: CMCLConfig,
    images,
    u: np.ndarray,
    n_val: int,
    callback: Callable[[int, dict], None] | None,
) -> None:
    """Run Algorithm 1 and set the fitted attributes of ``model``.

    Args:
        model: estimator whose modules are built.
        cfg: resolved config.
        images: [n, C, H, W] array (read per batch).
        u: raw u [n, d].
        n_val: number of held-out samples for early stopping.
        callback: optional ``callback(epoch, record)``.
    """
    rng = np.random.default_rng(model.seed)
    n = len(u)
    perm = rng.permutation(n)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    rep = [
        p
        for name in ("encoder_", "embed_decoder_", "posterior_", "prior_", "decoder_")
        if getattr(model, name) is not None
        for p in getattr(model, name).parameters()
    ]

    opt = torch.optim.Adam(
        [
            {"params": rep, "lr": cfg.learning_rate(model.latent_dim_)},
            {"params": list(model.dag_.parameters()), "lr": cfg.lr_dag},
            {"params": list(model.classifier_.parameters()), "lr": cfg.lr_cr},
        ]
    )
    rho, alpha, h_prev = cfg.rho_init, 0.0, math.inf
    best, stale, step = math.inf, 0, 0
    model.history_ = []
    bs = cfg.batch_size
    rotated = False
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        _set_mode(model, True)
        warm = epoch < cfg.dag_warmup_epochs
        omega = current_omega(model, cfg)
        use_cr = cfg.use_cr and not warm and bool(omega[0]) and bool(omega[1])
        sums: dict[str, float] = defaultdict(float)
        order = rng.permutation(train_idx)
        n_batches = len(order) // bs
        for b in range(n_batches):
            x, u_raw, u_dag = model._batch(images, u, order[b * bs : (b + 1) * bs])
            parts, z_mu = representation_losses(model, cfg, x, u_raw)
            z_dag = model._z_std(z_mu.detach() if warm else z_mu, batch_stats=True)
            v = torch.cat([u_dag, z_dag], 1)  # V = [u, z], [n, d + m]
            link = model.dag_.loss(v)
            l1, l2 = model.dag_.l1_penalty(), model.dag_.l2_penalty()
            h = model.dag_.acyclicity(cfg.acyclicity)
            dag = losses.dag_loss(link, l1, l2, h, rho, alpha, cfg.lambda1_joint, cfg.lambda2)
            total = sum(parts.values()) + cfg.lambda_dag * dag  # Eq. 14 (without CR)
            if use_cr and step % cfg.cr_every == 0:
                parts["cr"] = cr_step(model, cfg, z_mu, u_raw, u_dag, omega)
                total = total + cfg.lambda_cr * parts["cr"]
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            step += 1
            for key, val in parts.items():
                sums[key] += float(val.detach())
            sums["link"] += float(link.detach())
            sums["loss"] += float(total.detach())
        with torch.no_grad():
            h_val = float(model.dag_.acyclicity(cfg.acyclicity))
        if not warm:  # NOTEARS dual ascent, once per epoch
            if h_val > cfg.h_shrink * h_prev:
                rho = min(rho * cfg.rho_mult, cfg.rho_max)
            alpha += rho * h_val
            h_prev = h_val
        _set_mode(model, False)
        rotated = _rotation_due(cfg, epoch, model)
        if rotated:
            _rotate(model, images, u, train_idx, epoch)
            # Adam's moments of the rewritten layers belong to the old basis: drop them (they
            # restart, bias correction included); every other layer keeps its moments. A new
            # optimiser for all (before): 20/40, 40 epochs, seeds 0/1, MCC 0.94/0.91 -> 0.96/0.94.
            for p in rewritten_parameters(model):
                opt.state.pop(p, None)
            rho, alpha, h_prev = cfg.rho_init, 0.0, math.inf  # the DAG starts again
            best, stale = math.inf, 0
        val_loss = _evaluate(model, cfg, images, u, val_idx) if n_val > 1 else None
        record = {k: v / max(n_batches, 1) for k, v in sums.items()}
        record.update(epoch=epoch, h=h_val, rho=rho, alpha=alpha, val_loss=val_loss)
        record["seconds"] = time.perf_counter() - t0
        model.history_.append(record)
        logger.info(
            "epoch %d: loss %.2f, link %.3f, h %.2e, rho %.1e, val %s, %.1fs",
            epoch,
            record["loss"],
            record["link"],
            h_val,
            rho,
            "-" if val_loss is None else f"{val_loss:.2f}",
            record["seconds"],
        )
        if callback is not None:
            callback(epoch, record)
        monitored = record["loss"] if val_loss is None else val_loss
        if monitored < best - cfg.min_delta * abs(best) if math.isfinite(best) else True:
            best, stale = monitored, 0
        else:
            stale += 1
        acyclic = h_val <= cfg.h_tol or cfg.refit_dag
        if epoch + 1 >= cfg.min_epochs and stale >= cfg.patience and acyclic:
            logger.info("early stopping at epoch %d (no improvement for %d epochs)", epoch, stale)
            break
    if cfg.refit_dag and _rotations_on(cfg, model) and not rotated:
        # A last rotation right before the final DAG solve, which starts from scratch anyway:
        # it hands the solve whitened, sparsest-basis latents. Measured on 20/40 (seeds 0/1,
        # 40 epochs): SHD 15/22 with it, 30/40 when the last rotation came 5 epochs earlier.
        _rotate(model, images, u, train_idx, cfg.epochs)
    _finalize(model, cfg, images, u, train_idx)


def _rotate(model: CMCL, images, u: np.ndarray, train_idx: np.ndarray, epoch: int) -> None:
    gain = rotate_latents(model, images, u, np.sort(train_idx[:1000]), seed=epoch)
    logger.info("epoch %d: latents rotated to the sparsest basis (L1 -%.1f%%)", epoch, 100 * gain)


def _rotations_on(cfg: CMCLConfig, model: CMCL) -> bool:
    return bool(cfg.rotate_every) and model.posterior_ is not None


def _rotation_due(cfg: CMCLConfig, epoch: int, model: CMCL) -> bool:
    """Sparse latent rotation after every ``rotate_every``-th epoch up to ``rotate_until``."""
    if not _rotations_on(cfg, model):
        return False
    return (epoch + 1) % cfg.rotate_every == 0 and epoch + 1 <= cfg.rotate_until


def _refit_functions(
    model: CMCL, cfg: CMCLConfig, X: torch.Tensor, graph: np.ndarray, n_levels: list[int]
) -> NotearsMLP:
    """Refit the causal functions f on the final graph (link loss only, L-BFGS)."""
    types = list(model.dag_.var_types)
    dag = NotearsMLP(types, cfg.dag_hidden, graph != 0, n_levels).to(X.device)
    opt = torch.optim.LBFGS(
        dag.parameters(), max_iter=200, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = dag.loss(X) + 0.5 * cfg.lambda2 * dag.l2_penalty()
        loss.backward()
        return loss

    opt.step(closure)
    return dag.eval()


def _finalize(model: CMCL, cfg: CMCLConfig, images, u: np.ndarray, train_idx) -> None:
    """Fitted z statistics, final DAG (thresholded, acyclic), refitted causal functions."""
    _set_mode(model, False)
    d, m = model.n_features_in_, model.latent_dim_
    z = posterior_means(model, images, u)  # [n, m]
    model.z_shift_ = z.mean(0)
    model.z_scale_ = z.std(0) + 1e-6
    with torch.no_grad():
        # The jointly trained DAG; the final graph when refit_dag is off. With refit_dag (and a
        # rotation, which restarts the joint DAG, just before) the refit below is the graph.
        model.raw_adjacency_ = model.dag_.adjacency().cpu().numpy().astype(np.float64)
    rng = np.random.default_rng(model.seed)
    rows = np.sort(train_idx)
    if len(rows) > cfg.refit_dag_max_samples:
        rows = np.sort(rng.choice(rows, cfg.refit_dag_max_samples, replace=False))
    u_dag = model._u_dag(u[rows]).cpu().numpy()
    X = np.concatenate([u_dag, (z[rows] - model.z_shift_) / model.z_scale_], 1)  # [n, d + m]
    allowed = None if cfg.allow_all_edges else bipartite_mask(d, m)
    n_levels = list(model.dag_.n_levels)
    if cfg.refit_dag:
        # A collapsed latent (constant posterior mean) carries no information and learn_dag
        # rejects constant columns: solve on the other variables, the constant one has no edge.
        types = list(model.dag_.var_types)
        keep = np.array([t != "continuous" or X[:, k].std() > 1e-6 for k, t in enumerate(types)])
        if allowed is None:
            allowed = np.ones((d + m, d + m), dtype=bool) & ~np.eye(d + m, dtype=bool)
        W = np.zeros((d + m, d + m))
        X_k, types_k = X[:, keep], [t for t, k in zip(types, keep, strict=True) if k]
        allowed_k = np.asarray(allowed)[np.ix_(keep, keep)]
        W_k = learn_dag(
            X_k,
            var_types=types_k,
            allowed=allowed_k,
            seed=model.seed,
            hidden=cfg.dag_hidden,
            lambda1=cfg.lambda1,
            lambda2=cfg.lambda2,
            w_threshold=cfg.w_threshold,
            acyclicity=cfg.acyclicity,
        )
        if cfg.orient_edges:
            W_k = orient_edges(X_k, W_k, types_k, allowed_k, model.seed, cfg.dag_hidden)
        W[np.ix_(keep, keep)] = W_k
    else:
        W = threshold_dag(model.raw_adjacency_, cfg.w_threshold)
    model.weighted_adjacency_ = W
    X_t = torch.as_tensor(X, dtype=torch.float32, device=model.device_)
    model.dag_ = _refit_functions(model, cfg, X_t, W, n_levels)
    from cmcl_core.estimator import _edges  # the estimator module imports this one

    model.edges_ = _edges(W, model.u_names_, m)
