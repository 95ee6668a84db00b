"""Sparse rotation of the latent space: a function-preserving re-parametrisation of z.

The structural-sparsity term (``losses.decoder_jacobian_l1``) lines the latents up with the
true ones by gradient steps, which is slow: every step moves the encoder and the decoder a
little towards the sparse basis. Between epochs we can take the whole step at once, as factor
analysis does with varimax: whiten the posterior means, find the rotation ``R`` that makes the
decoder's Jacobian sparsest (L1 norm, Adam on ``R = expm(S - S^T)``), and re-parametrise

    z' = A z + b,    A = R^T L^{-1},  b = -A mu      (C = L L^T the covariance of E[z | x, u])

by rewriting the last layer of the posterior and prior networks (their means exactly; their
log-variances approximately) and the first layer of the decoder and of the classifier D (exactly,
``W' = W A^{-1}``). The decoded image of a posterior mean is unchanged; the DAG, whose
per-variable causal functions cannot be rotated, is re-initialised and re-learnt.

The Jacobian's sparsity identifies latents that drive pixels of their own. Latents that share
most of their pixels (an opacity over the heart shadow) have no such pixels, and a mixed basis
can have the sparser Jacobian (``benchmarks/rotation_overlap.py``). The clinical variables
then carry what tells them apart: a latent caused by, or causing, one variable and another
latent tied to another are mixed only at the price of each variable correlating with more
latents. With ``rotation_u_weight`` the criterion adds the L1 norm of the correlations between
the clinical features (``UFeatures``: standardised, binary, one-hot) and the latents, each
term relative to its value at the start of the search: sparsity of the dependence of the
latents on the auxiliary variables, which identifies latents in the mechanism-sparsity line of
work (Lachapelle et al. 2022), here only in its linear, second-moment form.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import cmcl_core.losses as losses
from cmcl_core.network import CMCLNetwork

#: Posterior means at which the decoder's Jacobian is taken for the rotation search. The
#: Jacobian's support (which pixels a latent drives) is what matters, and it is shared across
#: points: on 4/10 and 20/40 fits, 16 points give a rotation whose L1 norm on 64 points is
#: within 0.5% of the 64-point optimum, at a quarter of the cost.
ROTATION_POINTS = 16


def jacobian_at(decoder: nn.Module, z: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Forward-difference Jacobian of ``sigmoid(decoder(z))``: [k, P, m] for z [k, m]."""
    diff = losses.decoder_differences(decoder, z, torch.diag(step))  # [m, k, P]
    return (diff / step[:, None, None]).permute(1, 2, 0)


def _soft_l1(X: torch.Tensor) -> torch.Tensor:
    """A smooth L1 norm of every entry of ``X``."""
    return torch.sqrt(X.pow(2) + 1e-10).sum()


def _clinical_scale(J: torch.Tensor, K: torch.Tensor | None, weight: float) -> float:
    """The factor of the clinical term ``sum |K T|``: ``weight * sum|J| / sum|K|``, so each
    term is relative to its value at the start and ``weight`` trades their relative changes
    while the Jacobian term keeps its scale; 0 without ``K`` (``[d, m]`` correlations of the
    clinical features with the current latents) or ``weight``."""
    if K is None or weight <= 0:
        return 0.0
    return weight * float(J.abs().sum()) / max(float(K.abs().sum()), 1e-12)


def sparsest_rotation(
    J: torch.Tensor,
    iters: int = 100,
    seed: int = 0,
    restarts: int = 0,
    K: torch.Tensor | None = None,
    weight: float = 0.0,
) -> torch.Tensor:
    """Orthogonal ``R`` [m, m] minimising ``sum |J R|`` for a Jacobian ``J`` [k, P, m]
    (with ``K`` [d, m] and ``weight``, plus ``sum |K R|`` scaled by :func:`_clinical_scale`).

    Adam on a skew-symmetric parametrisation ``R = expm(S - S^T)``, its learning rate decayed
    to 0 on a cosine schedule, from the identity (the current, whitened basis) and from
    ``restarts`` random rotations (the L1 objective is not convex); the best end point wins.
    With a constant rate Adam keeps circling the non-smooth optimum: on Jacobians of a 4/10 and
    two 20/40 fits (after 5 and 40 epochs) 100 cosine-decayed iterations ended 0.07-0.5% lower
    than 300 constant-rate ones, in a third of the time. No restart by default: on the
    Jacobians of every rotation of a 4/10 and a 20/40 fit (8 each) the identity start ended
    lowest every time, and each restart costs as much as the whole search.
    """
    m = J.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    Jd = J.detach().cpu().float()  # float32: the optimum of float64 (tested), 1.1-1.8x faster
    Kd = None if K is None else K.detach().cpu().float()
    c = _clinical_scale(Jd, Kd, weight)
    Kd = None if c == 0 else Kd

    def objective(R: torch.Tensor) -> torch.Tensor:
        return _soft_l1(Jd @ R) if Kd is None else _soft_l1(Jd @ R) + c * _soft_l1(Kd @ R)

    best_R, best = torch.eye(m, dtype=torch.float64), float(objective(torch.eye(m)))
    starts = [torch.zeros(m, m)]
    for _ in range(restarts):
        starts.append(torch.randn(m, m, generator=gen, dtype=torch.float64).float())
    for s0 in starts:
        S = s0.clone().requires_grad_(True)
        opt = torch.optim.Adam([S], lr=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
        for _ in range(iters):
            opt.zero_grad()
            loss = objective(torch.linalg.matrix_exp(S - S.T))
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            A = (S - S.T).double()
            R = torch.linalg.matrix_exp(A)  # float64: orthogonal to ~1e-15 (float32: ~1e-5)
            val = float(objective(R.float()))
        if val < best:
            best, best_R = val, R
    return best_R


def sparsest_oblique(
    J: torch.Tensor, iters: int = 150, K: torch.Tensor | None = None, weight: float = 0.0
) -> torch.Tensor:
    """``G`` [m, m] with unit-norm rows minimising ``sum |J G^-1|`` for a Jacobian ``J``
    [k, P, m] in whitened coordinates ``w``: the new latents ``z' = G w`` keep unit variance
    but may correlate (``cov(z') = G G^T``), as in oblique factor rotation (Jennrich 2006,
    component loss; the L1 loss grows without bound as two rows of ``G`` become parallel, so
    the latents cannot collapse onto one another). With ``K`` [d, m] (correlations of the
    clinical features with ``w``) and ``weight``, plus ``sum |K G^T|`` scaled by
    :func:`_clinical_scale`.

    Adam on an unconstrained ``M`` (rows normalised to give ``G``), from the identity, its rate
    cosine-decayed to 0 as in :func:`sparsest_rotation`.
    """
    m = J.shape[-1]
    Jd = J.detach().cpu().float()
    c = _clinical_scale(Jd, K, weight)
    Kd = None if c == 0 else K.detach().cpu().float()

    def objective(G: torch.Tensor) -> torch.Tensor:
        jac = _soft_l1(Jd @ torch.linalg.inv(G))
        return jac if Kd is None else jac + c * _soft_l1(Kd @ G.T)

    M = torch.eye(m).requires_grad_(True)
    opt = torch.optim.Adam([M], lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    for _ in range(iters):
        opt.zero_grad()
        objective(M / M.norm(dim=1, keepdim=True)).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        M = M.double()
        return M / M.norm(dim=1, keepdim=True)


def _mean_logvar_layer(layer: nn.Linear, m: int, A: torch.Tensor, b: torch.Tensor) -> None:
    """Rewrite a Linear whose outputs are [mean (m), log-variance (m)] for z' = A z + b."""
    W, c = layer.weight, layer.bias  # [2m, h], [2m]
    A2 = A.pow(2)  # [m, m]
    mix = A2 / A2.sum(1, keepdim=True)  # row-stochastic weights of the old variances
    W_mu, W_lv, c_mu, c_lv = W[:m].clone(), W[m:].clone(), c[:m].clone(), c[m:].clone()
    W[:m] = A @ W_mu
    c[:m] = A @ c_mu + b
    W[m:] = mix @ W_lv
    c[m:] = mix @ c_lv + A2.sum(1).log()


def rewritten_parameters(net: CMCLNetwork) -> list[nn.Parameter]:
    """The parameters :func:`rotate_latents` rewrites (and the DAG's, which it re-initialises):
    their optimiser moments belong to the old basis; every other parameter's stay valid."""
    layers: list[nn.Module] = [net.posterior.net[-1], net.decoder.head[0]]
    if net.prior.with_mean:
        layers.append(net.prior.net[-1])
    params = [p for layer in layers for p in layer.parameters()]
    return params + [net.classifier[0].weight, *net.dag.parameters()]


def clinical_correlation(u_features: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``[d', m]`` Pearson correlations of each (non-constant) clinical feature column with
    each latent of ``w`` [k, m]; constant columns are dropped."""
    U = torch.as_tensor(u_features, dtype=torch.float64)
    U = U - U.mean(0)
    keep = U.std(0) > 1e-8
    U = U[:, keep] / U[:, keep].std(0)
    W = (w - w.mean(0)) / w.std(0).clamp_min(1e-12)
    return U.T @ W / max(len(W) - 1, 1)


@torch.no_grad()
def sparse_basis(
    decoder: nn.Module,
    z_means: np.ndarray | torch.Tensor,
    seed: int,
    oblique: bool = False,
    u_features: torch.Tensor | None = None,
    u_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The affine map ``z' = A z + b`` to standardised latents in the decoder's sparsest basis.

    Any decoder of latents to image logits works (CMCL's during training, a two-stage
    baseline's after it): the posterior means are whitened (``C = L L^T``) and rotated by the
    orthogonal ``R`` that minimises the L1 norm of the decoder's Jacobian, or, ``oblique``,
    mapped by the unit-row ``G`` of :func:`sparsest_oblique` (latents that may correlate).

    Args:
        decoder: ``z [k, m] -> logits [k, C, H, W]``.
        z_means: [k, m] posterior means E[z | x, u] of the rows that estimate the mean, the
            covariance and the decoder's Jacobian (its first ``ROTATION_POINTS`` rows).
        seed: seed of the rotation search.
        oblique: search the oblique ``G`` instead of the orthogonal ``R``.
        u_features: ``[k, d']`` the clinical features of the same rows (``UFeatures``), for
            ``u_weight``.
        u_weight: weight of the clinical term (:func:`_clinical_scale`): a basis in which
            each clinical variable correlates with few latents is preferred, as the Jacobian
            term prefers one in which each pixel depends on few latents. 0: the Jacobian
            alone.

    Returns:
        ``(A [m, m], b [m], gain)`` in float64 on the CPU, ``A = R^T L^{-1}`` (oblique:
        ``G L^{-1}``), ``b = -A mu``; ``gain`` is the relative drop of the Jacobian's L1 norm.
    """
    dev = next(decoder.parameters()).device
    z = torch.as_tensor(z_means, dtype=torch.float64)  # [k, m]
    m = z.shape[1]
    mu = z.mean(0)
    C = torch.cov(z.T).reshape(m, m)
    # relative jitter: exact whitening whatever the latents' scale (a fixed 1e-6 left a latent
    # of variance 1e-4 at 0.99 after whitening), and still a Cholesky for a collapsed latent
    C = C + 1e-6 * float(C.diagonal().mean().clamp_min(1e-12)) * torch.eye(m, dtype=torch.float64)
    L = torch.linalg.cholesky(C)  # z = mu + L w, w white
    pts = z[:ROTATION_POINTS].to(dev, torch.float32)
    step = (0.1 * C.diagonal().sqrt()).to(dev, torch.float32)  # [m]
    J_z = jacobian_at(decoder, pts, step).double().cpu()  # [k, P, m]
    J_w = J_z @ L  # Jacobian in whitened coordinates
    K = None
    if u_features is not None and u_weight > 0:
        w = torch.linalg.solve_triangular(L, (z - mu).T, upper=False).T  # [k, m] white
        K = clinical_correlation(u_features, w)  # [d', m]
    with torch.enable_grad():
        if oblique:
            G = sparsest_oblique(J_w, K=K, weight=u_weight)
        else:
            G = sparsest_rotation(J_w, seed=seed, K=K, weight=u_weight).T
    before = float(J_w.abs().sum())
    after = float((J_w @ torch.linalg.inv(G)).abs().sum())  # R^T^-1 = R
    A = G @ torch.linalg.inv(L)  # z' = A z + b
    return A, -A @ mu, 1.0 - after / max(before, 1e-12)


@torch.no_grad()
def rotate_latents(
    net: CMCLNetwork,
    z_means: np.ndarray,
    seed: int,
    oblique: bool = False,
    u: np.ndarray | None = None,
    u_weight: float = 0.0,
) -> float:
    """Re-parametrise ``net`` so its latents are standardised and in the decoder's sparsest
    basis (whitened too unless ``oblique``).

    Args:
        net: the network being trained (CM module on).
        z_means: [k, m] posterior means E[z | x, u] (see :func:`sparse_basis`).
        seed: seed of the rotation search.
        oblique: let the latents correlate (:func:`sparsest_oblique`).
        u: ``[k, d]`` the raw clinical variables of the same rows, for ``u_weight``.
        u_weight: weight of the clinical term (:func:`sparse_basis`).

    Returns:
        The relative drop of the Jacobian L1 norm achieved by the rotation.
    """
    dev = net.device
    m = net.latent_dim
    feats = None
    if u is not None and u_weight > 0:
        feats = net.u_features(torch.as_tensor(u, dtype=torch.float32, device=dev)).cpu()
    A, b, gain = sparse_basis(net.decoder, z_means, seed, oblique, feats, u_weight)
    A_inv = torch.linalg.inv(A)
    f = dict(device=dev, dtype=torch.float32)
    A_f, b_f, A_inv_f = A.to(**f), b.to(**f), A_inv.to(**f)
    _mean_logvar_layer(net.posterior.net[-1], m, A_f, b_f)
    if net.prior.with_mean:
        _mean_logvar_layer(net.prior.net[-1], m, A_f, b_f)
    head = net.decoder.head[0]  # Linear(m, .): W z + c = W A^-1 z' + (c - W A^-1 b)
    W_new = head.weight @ A_inv_f
    head.bias.sub_(W_new @ b_f)
    head.weight.copy_(W_new)
    first = net.classifier[0]  # D reads differences of z: W' = W A^-1
    first.weight.copy_(first.weight @ A_inv_f)
    net.dag.reset_parameters()
    return gain
