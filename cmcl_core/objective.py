"""The joint objective of CMCL on one minibatch (Eq. 14), composed from ``cmcl_core.losses``.

* :func:`representation_losses`: -L1 (Eq. 6) and -L2 (Eq. 19) and the posterior means of z;
* :func:`dag_objective`: L_DAG (Eq. 10) on ``V = [u, z]`` with the acyclicity penalty;
* :func:`cr_step`: the counterfactual contrastive regulariser (Eq. 11-13, Algorithm 1 step d).

Each function reads the network's modules and returns loss tensors; the training loop
(``cmcl_core.training``) sums them, back-propagates and steps the optimiser.
"""

from __future__ import annotations

import math

import torch

import cmcl_core.losses as losses
from cmcl_core.acyclicity import AugmentedLagrangian
from cmcl_core.config import CMCLConfig
from cmcl_core.device import float32
from cmcl_core.network import CMCLNetwork

#: Omega+ (u with a z child), Omega- (u with a z parent), the u -> z child mask [d, m].
Omega = tuple[list[int], list[int], torch.Tensor]


def batch_standardise(z: torch.Tensor) -> torch.Tensor:
    """Standardise z [n, m] for the DAG with the batch's statistics (in training no collapse of
    the latents' scale can lower the link loss)."""
    return (z - z.mean(0)) / (z.std(0) + 1e-4)  # [n, m]


def dag_objective(
    net: CMCLNetwork,
    cfg: CMCLConfig,
    v: torch.Tensor,
    constraint: AugmentedLagrangian,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_DAG of Eq. 10 on ``V = [u, z]`` [n, d + m] during joint training: (loss, link loss)."""
    link = net.dag.loss(v)
    l1, l2 = net.dag.l1_penalty(), net.dag.l2_penalty()
    penalty = constraint.penalty(net.dag.acyclicity(cfg.acyclicity))
    return losses.dag_loss(link, l1, l2, penalty, cfg.lambda1_joint, cfg.lambda2), link


def _sample(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Reparameterised Gaussian sample (Kingma and Welling 2014)."""
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # [n, k]


def representation_losses(
    net: CMCLNetwork, cfg: CMCLConfig, x: torch.Tensor, u_raw: torch.Tensor, sample: bool = True
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """-L1 (Eq. 6) and -L2 (Eq. 19) on a batch, and the posterior means of z.

    Args:
        net: the network being fitted.
        cfg: its config.
        x: images [n, C, H, W].
        u_raw: raw u [n, d].
        sample: draw z0 and z (training) or use the means (evaluation).

    Returns:
        (loss parts, z means [n, m]).
    """
    lik, sig = cfg.likelihood, cfg.gaussian_sigma
    # Under mixed precision the modules compute in bf16/fp16; every loss term is float32.
    z0_mu, z0_lv = (t.float() for t in net.encoder(x))  # [n, C, H, W] -> 2 x [n, e]
    z0 = _sample(z0_mu, z0_lv) if sample else z0_mu
    parts: dict[str, torch.Tensor] = {}
    if not cfg.use_cm:  # ablation: z = z0 (the paper flattens z0 as z)
        rec, kl = losses.negative_elbo(
            net.decoder(z0).float(), x, z0_mu, z0_lv, beta=cfg.beta_embed, likelihood=lik, sigma=sig
        )
        parts.update(recon=rec, kl=kl)
        if cfg.decoder_sparsity > 0:
            parts["sparsity"] = cfg.decoder_sparsity * jacobian_penalty(net, cfg, z0_mu, sample)
        return parts, z0_mu
    k = max(1, math.ceil(cfg.embed_recon_fraction * x.shape[0]))
    x0 = net.embed_decoder(z0[:k]).float()  # [k, C, H, W]
    rec1 = losses.reconstruction_nll(x0, x[:k], lik, sig).mean()  # Eq. 6
    kl1 = losses.gaussian_kl(z0_mu, z0_lv).mean()
    u_feat = net.u_features(u_raw)  # [n, d] -> [n, d_feat]
    z_mu, z_lv = (t.float() for t in net.posterior(z0_mu, u_feat))  # q(z | z0, u), Eq. 17
    p_mu, p_lv = (t.float() for t in net.prior(u_feat))  # p(z | u), Eq. 18
    z = _sample(z_mu, z_lv) if sample else z_mu
    rec2, kl2 = losses.negative_elbo(
        net.decoder(z).float(), x, z_mu, z_lv, p_mu, p_lv, cfg.beta_cm, likelihood=lik, sigma=sig
    )
    parts.update(recon_embed=rec1, kl_embed=cfg.beta_embed * kl1, recon=rec2, kl=kl2)
    if cfg.decoder_sparsity > 0:
        parts["sparsity"] = cfg.decoder_sparsity * jacobian_penalty(net, cfg, z_mu, sample)
    return parts, z_mu


def jacobian_penalty(
    net: CMCLNetwork, cfg: CMCLConfig, z_mu: torch.Tensor, sample: bool = True
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
    return losses.decoder_jacobian_l1(net.decoder, z_mu[:k], dims, scale) * (m / r)


def current_omega(net: CMCLNetwork, w_threshold: float) -> Omega:
    """Omega+ (u with a z child), Omega- (u with a z parent) and the u->z child mask [d, m]
    of the current thresholded W (Eq. 12)."""
    d = net.encoding.d
    with torch.no_grad():
        edge = net.dag.adjacency() >= w_threshold  # [p, p]
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
    net: CMCLNetwork,
    cfg: CMCLConfig,
    x_recon_z: torch.Tensor,
    u_raw: torch.Tensor,
    u_dag: torch.Tensor,
    omega: Omega,
) -> torch.Tensor:
    """Counterfactual contrastive regulariser on a subset of the batch (Eq. 11-13, Alg. 1 d).

    For each sample draw u_i in Omega+ and u_n in Omega- and a donor sample whose values they
    take. Causal counterfactual: abduction through the causal functions,
    z_j' = z_j + f_j(V') - f_j(V) for the children z_j of u_i; anti-causal: z unchanged.
    Decode, re-encode with the intervened u, and let D tell the two changes of the
    re-encoded representation (relative to re-encoding the factual decoding) apart.

    Args:
        net: the network being fitted.
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
    with torch.no_grad(), float32(dev):  # the causal functions are read in float32
        mean, std = x_recon_z.mean(0), x_recon_z.std(0) + 1e-4  # [m]
        zs = (z - mean) / std  # [s, m]
        out = net.dag.out_start[d:]  # output column of each z
        f_fact = net.dag(torch.cat([ud, zs], 1))[:, out]  # [s, p] -> [s, m]
        f_cf = net.dag(torch.cat([ud_pos, zs], 1))[:, out]  # [s, m]
        shift = (f_cf - f_fact) * child[i_pos].float() * std  # [s, m], 0 off u_i's children
    z_cf = z + shift  # [s, m]
    x_dec = torch.sigmoid(net.decoder(torch.cat([z, z_cf], 0)))  # [2s, C, H, W]
    e_mu, _ = net.encoder(x_dec)  # [2s, e]
    e_all = torch.cat([e_mu[:s], e_mu[s:], e_mu[:s]], 0)  # factual, causal cf, anti-causal cf
    if net.posterior is not None:
        u_all = torch.cat([ur, ur_pos, ur_neg], 0)  # [3s, d]
        z_t, _ = net.posterior(e_all, net.u_features(u_all))  # [3s, m]
    else:
        z_t = e_all
    ref, z_pos, z_neg = z_t.float().chunk(3, 0)
    logit_pos = net.classifier(z_pos - ref).squeeze(1).float()  # [s]
    logit_neg = net.classifier(z_neg - ref).squeeze(1).float()  # [s]
    return losses.cr_loss(logit_pos, logit_neg)
