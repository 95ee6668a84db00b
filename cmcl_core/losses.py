"""Loss terms of CMCL as pure functions of tensors (the training loop composes them, Eq. 14).

Every function returns a per-sample tensor or a scalar and names the paper's equation it
implements. Signs follow the minimised objective L = -L1 - L2 + L_DAG - L_CR (Eq. 14).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Negative Bernoulli log-likelihood -log p(x | z) summed over pixels (Eq. 6, 19).

    The paper uses the cross-entropy reconstruction term (Appendix D.3); images in [0, 1] act
    as soft targets.

    Args:
        logits: decoder logits [n, C, H, W].
        x: target images [n, C, H, W] in [0, 1].

    Returns:
        Per-sample loss [n].
    """
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")  # [n, C, H, W]
    return bce.flatten(1).sum(dim=1)  # -> [n]


def gaussian_nll(logits: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Negative Gaussian log-likelihood (up to a constant) of x ~ N(sigmoid(logits), sigma^2),
    summed over pixels.

    Args:
        logits: decoder logits [n, C, H, W] (the mean image is their sigmoid).
        x: target images [n, C, H, W] in [0, 1].
        sigma: fixed pixel noise standard deviation.

    Returns:
        Per-sample loss [n].
    """
    sq = (torch.sigmoid(logits) - x).pow(2)  # [n, C, H, W]
    return sq.flatten(1).sum(dim=1) / (2.0 * sigma * sigma)  # -> [n]


def reconstruction_nll(
    logits: torch.Tensor, x: torch.Tensor, likelihood: str = "bernoulli", sigma: float = 0.1
) -> torch.Tensor:
    """-log p(x | z) per sample [n]: Bernoulli (cross-entropy) or fixed-sigma Gaussian."""
    if likelihood == "gaussian":
        return gaussian_nll(logits, x, sigma)
    return bernoulli_nll(logits, x)


def gaussian_kl(
    mean_q: torch.Tensor,
    logvar_q: torch.Tensor,
    mean_p: torch.Tensor | None = None,
    logvar_p: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, summed over dimensions.

    With ``mean_p = logvar_p = None`` the prior is N(0, I): the KL term of the latent
    embedding ELBO (Eq. 6). With a conditional prior it is the factorised KL of Eq. 19,
    sum_j KL(q(z_j | z0, u) || p(z_j | u)).

    Args:
        mean_q: posterior means [n, k].
        logvar_q: posterior log-variances [n, k].
        mean_p: prior means [n, k] or None for 0.
        logvar_p: prior log-variances [n, k] or None for 0.

    Returns:
        Per-sample KL [n].
    """
    if mean_p is None:
        mean_p = torch.zeros_like(mean_q)
    if logvar_p is None:
        logvar_p = torch.zeros_like(logvar_q)
    var_ratio = torch.exp(logvar_q - logvar_p)  # [n, k]
    sq = (mean_q - mean_p).pow(2) * torch.exp(-logvar_p)  # [n, k]
    return 0.5 * (var_ratio + sq - 1.0 - logvar_q + logvar_p).sum(dim=1)  # -> [n]


def negative_elbo(
    logits: torch.Tensor,
    x: torch.Tensor,
    mean_q: torch.Tensor,
    logvar_q: torch.Tensor,
    mean_p: torch.Tensor | None = None,
    logvar_p: torch.Tensor | None = None,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
    sigma: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-ELBO of one module, averaged over the batch: -L1 (Eq. 6) or -L2 (Eq. 19).

    Args:
        logits: decoder logits [n, C, H, W].
        x: images [n, C, H, W].
        mean_q: posterior means [n, k].
        logvar_q: posterior log-variances [n, k].
        mean_p: prior means [n, k] (None: standard normal, Eq. 6).
        logvar_p: prior log-variances [n, k] (None: standard normal).
        beta: weight of the KL term.
        likelihood: ``"bernoulli"`` or ``"gaussian"`` (see :func:`reconstruction_nll`).
        sigma: pixel standard deviation of the Gaussian likelihood.

    Returns:
        (reconstruction term, KL term), both scalar batch means; -ELBO = recon + beta * kl.
    """
    recon = reconstruction_nll(logits, x, likelihood, sigma).mean()
    kl = gaussian_kl(mean_q, logvar_q, mean_p, logvar_p).mean()
    return recon, beta * kl


def dag_loss(
    link_loss: torch.Tensor,
    l1: torch.Tensor,
    l2: torch.Tensor,
    acyclicity_penalty: torch.Tensor,
    lambda1: float,
    lambda2: float,
) -> torch.Tensor:
    """L_DAG of Eq. 10: link loss + alpha_1 ||A^(1)||_1 + L2 + the acyclicity penalty.

    Args:
        link_loss: mean per-sample link loss sum_i l(v_i, MLP_i(V)) (scalar).
        l1: L1 norm of the first NOTEARS layer (scalar).
        l2: squared L2 norm of the NOTEARS weights (scalar).
        acyclicity_penalty: ``AugmentedLagrangian.penalty(h(W))`` (scalar).
        lambda1: L1 weight (alpha_1 in Eq. 10).
        lambda2: L2 weight.

    Returns:
        Scalar loss.
    """
    return link_loss + lambda1 * l1 + 0.5 * lambda2 * l2 + acyclicity_penalty


def cr_loss(logits_causal: torch.Tensor, logits_anticausal: torch.Tensor) -> torch.Tensor:
    """Counterfactual contrastive regulariser as a loss, -L_CR (Eq. 13).

    Eq. 13 is maximised when D scores causal counterfactual representations (u_i in Omega+)
    as 1 and anti-causal ones (u_n in Omega-) as 0; we minimise the matching binary
    cross-entropy (the classifier loss named in Appendix D.3), balanced between the classes.

    Args:
        logits_causal: D's logits on causal counterfactuals [n_pos].
        logits_anticausal: D's logits on anti-causal counterfactuals [n_neg].

    Returns:
        Scalar loss.
    """
    pos = F.binary_cross_entropy_with_logits(logits_causal, torch.ones_like(logits_causal))
    neg = F.binary_cross_entropy_with_logits(logits_anticausal, torch.zeros_like(logits_anticausal))
    return 0.5 * (pos + neg)


def decoder_differences(
    decoder: torch.nn.Module, z: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Forward differences of the decoded mean image ``g = sigmoid o decoder``.

    Args:
        decoder: latent -> logits network.
        z: latent points [k, m].
        shift: displacement vectors [r, m].

    Returns:
        ``g(z + shift_i) - g(z)`` flattened per image, [r, k, C H W]: one batched decoder call.
    """
    k, r = z.shape[0], shift.shape[0]
    moved = (z.unsqueeze(0) + shift.unsqueeze(1)).reshape(r * k, -1)  # [r k, m]
    out = torch.sigmoid(decoder(torch.cat([z, moved], 0))).flatten(1)  # [(r + 1) k, P]
    return out[k:].reshape(r, k, -1) - out[:k].unsqueeze(0)


def decoder_jacobian_l1(
    decoder: torch.nn.Module,
    z: torch.Tensor,
    dims: torch.Tensor,
    scale: torch.Tensor,
    step: float = 0.1,
) -> torch.Tensor:
    """L1 norm of the decoder's Jacobian in the directions ``dims`` (structural sparsity).

    ``sum_p |d x_p / d z_j| * scale_j`` per sample, estimated by forward differences of the
    decoded mean image: ``(g(z + step * scale_j e_j) - g(z)) / step`` with ``g = sigmoid o
    decoder``. Multiplying by ``scale_j`` (the spread of ``z_j`` in the batch) makes the term
    invariant to a rescaling of a latent, so it cannot be lowered by inflating ``z`` against a
    weak KL term. For latents that drive disjoint image regions it is smallest when every
    coordinate of ``z`` drives one region, and grows for any rotation that mixes two of them
    (``(|c| + |s|) > 1`` for a rotation by ``(c, s)``): the identifiability argument of
    structural sparsity (Zheng, Ng and Zhang, NeurIPS 2022; Moran et al., ICLR 2022).

    Args:
        decoder: latent -> logits network.
        z: latent points [k, m] (treated as constants).
        dims: latent coordinates to differentiate along [r] (a subset keeps the cost low).
        scale: per-latent scale [m] (treated as constant).
        step: finite-difference step in units of ``scale``.

    Returns:
        Scalar: mean over the k points of the summed |Jacobian| over pixels and ``dims``.
    """
    z = z.detach()
    r = dims.shape[0]
    shift = torch.zeros(r, z.shape[1], dtype=z.dtype, device=z.device)  # [r, m]
    shift[torch.arange(r, device=z.device), dims] = step * scale.detach()[dims]
    diff = decoder_differences(decoder, z, shift).abs() / step  # [r, k, C H W]
    return diff.sum(dim=2).sum(dim=0).mean()  # [r, k] -> [k] -> scalar
