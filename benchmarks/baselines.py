"""Representation learners for the two-stage baselines of the paper's benchmark (Section 4.1).

Each baseline learns ``z_hat`` from images (iVAE also from ``u``); the benchmark then runs
``cmcl_core.dag.learn_dag`` on ``[u, z_hat]`` with the same bipartite mask CMCL uses. The
learners are the ones the paper compares against in Table 1 and Figure 2:

* ``vae``: plain VAE (Kingma and Welling, 2014), standard normal prior.
* ``betavae``: beta-VAE (Higgins et al., 2017), KL weighted by ``beta``.
* ``ivae``: iVAE (Khemakhem et al., 2020) as in the reference code ilkhem/iVAE: conditional
  factorised Gaussian prior ``p(z | u) = N(0, diag(exp(logl(u))))`` (zero mean, u-dependent
  variance) and posterior ``q(z | x, u)``.
* ``tcvae``: beta-TCVAE (Chen et al., 2018), ELBO split into index-code MI, total correlation and
  dimension-wise KL, with the minibatch-weighted-sampling (MWS) estimate of ``log q(z)``.
* ``factorvae``: FactorVAE (Kim and Mnih, 2018), TC penalised through a discriminator between
  ``q(z)`` samples and their dimension-wise permutations (density-ratio trick).

All learners use CMCL's own conv encoder/decoder (``cmcl_core.nets``, the synthetic-data widths
of the paper's Appendix D.3, "16/16/32/32/64/64" down and mirrored up, ReLU between layers).
The benchmark trains every learner with CMCL's recipe (:meth:`BaselineConfig.from_recipe`: the
same likelihood, initialisation, input standardisation, batch size, epochs, learning-rate and
width rules, and KL weight), so the comparison differs only in the objective. The objectives
are written here with plain torch because no maintained library ships
these five behind one small API.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmcl_core.config import CMCLConfig
from cmcl_core.nets import ConvDecoder, ConvEncoder, input_stats
from cmcl_core.network import posterior_widths

logger = logging.getLogger(__name__)

BASELINES = ("vae", "betavae", "ivae", "tcvae", "factorvae")


@dataclass(frozen=True)
class BaselineConfig:
    """Hyperparameters shared by the two-stage representation learners.

    Attributes:
        epochs: passes over the data.
        batch_size: minibatch size (clipped to n).
        lr: Adam learning rate.
        beta: KL weight of beta-VAE and TC weight of beta-TCVAE.
        gamma: TC weight of FactorVAE.
        hidden: width of the iVAE prior / posterior MLPs.
        gaussian_sigma: None for the paper's Bernoulli cross-entropy reconstruction; a value
            for a Gaussian likelihood with that pixel noise (low-contrast images make the
            Bernoulli term too weak against the KL term and the posterior collapses).
        base_channels: first conv stage width (CMCL's default, Appendix D.3: 16/32/64).
        max_channels: cap on the conv widths (CMCL's default).
        kl_weight: weight of the KL term (beta-VAE's ``beta`` multiplies it).
        he_init: He-normal initialisation of the conv encoder and decoder.
        standardize_images: the encoder standardises its input by the training images'
            per-pixel mean and global std.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    beta: float = 4.0
    gamma: float = 10.0
    hidden: int = 50
    gaussian_sigma: float | None = None
    base_channels: int = CMCLConfig.base_channels
    max_channels: int = CMCLConfig.max_channels
    kl_weight: float = 1.0
    he_init: bool = False
    standardize_images: bool = False

    @classmethod
    def from_recipe(cls, recipe: CMCLConfig, latent_dim: int) -> BaselineConfig:
        """CMCL's training recipe for a learner of ``latent_dim`` latents.

        Likelihood, initialisation, input standardisation, batch size, epochs, the
        learning-rate rule (``CMCLConfig.learning_rate``), the width rule of the posterior MLP
        (``posterior_widths``: iVAE's posterior and prior MLPs) and the KL weight of CMCL's
        causal-representation ELBO (``beta_cm``) all come from ``recipe``.
        """
        return cls(
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            lr=recipe.learning_rate(latent_dim),
            hidden=posterior_widths(recipe, latent_dim)[0],
            gaussian_sigma=recipe.gaussian_sigma if recipe.likelihood == "gaussian" else None,
            base_channels=recipe.base_channels,
            max_channels=recipe.max_channels,
            kl_weight=recipe.beta_cm,
            he_init=recipe.he_init,
            standardize_images=recipe.standardize_images,
        )


def _mlp(d_in: int, d_out: int, hidden: int, n_hidden: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden), nn.LeakyReLU(0.1)]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def _gauss_logpdf(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar))."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())


def _kl_gauss(
    mu: torch.Tensor, logvar: torch.Tensor, p_mu: torch.Tensor, p_logvar: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(p_mu, e^p_logvar)) summed over the last axis: [n, m] -> [n]."""
    kl = p_logvar - logvar + (logvar.exp() + (mu - p_mu) ** 2) / p_logvar.exp() - 1.0
    return 0.5 * kl.sum(-1)


class _VAENet(nn.Module):
    """Encoder ``q(z | x[, u])``, decoder ``p(x | z)`` and, for iVAE, the prior ``p(z | u)``."""

    def __init__(self, kind: str, image_size: int, channels_in: int, m: int, d: int, cfg):
        super().__init__()
        self.kind, self.m = kind, m
        conditional = kind == "ivae"
        hw = (image_size, image_size)
        conv = dict(base_channels=cfg.base_channels, max_channels=cfg.max_channels, he=cfg.he_init)
        # The iVAE uses the conv encoder's mean head as a feature vector for q(z | x, u).
        self.encoder = ConvEncoder(channels_in, hw, cfg.hidden if conditional else m, **conv)
        self.decoder = ConvDecoder(m, channels_in, hw, **conv)
        if conditional:
            # q(z | x, u): image features and u through an MLP (ilkhem/iVAE uses an MLP on [x, u]).
            self.post = _mlp(cfg.hidden + d, 2 * m, cfg.hidden)
            # p(z | u) = N(0, diag(exp(logl(u)))): zero mean, u-dependent variance (ilkhem/iVAE).
            self.prior_logl = _mlp(d, m, cfg.hidden)
        if kind == "factorvae":
            self.disc = _mlp(m, 2, 1000 if m > 20 else 256, n_hidden=3)

    def encode(self, x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)  # [n, C, H, W] -> 2 x [n, m] (iVAE: [n, hidden])
        if self.kind == "ivae":
            h = self.post(torch.cat([F.relu(mu), u], dim=1))  # [n, hidden + d] -> [n, 2m]
            mu, logvar = h.chunk(2, dim=1)  # [n, 2m] -> 2 x [n, m]
        return mu, logvar.clamp(-10.0, 8.0)


def _tc_mws_terms(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, n_data: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """beta-TCVAE decomposition with minibatch-weighted sampling (Chen et al. 2018, Eq. 3-4).

    Args:
        z: samples ``[b, m]`` from ``q(z | x)``.
        mu: posterior means ``[b, m]``.
        logvar: posterior log-variances ``[b, m]``.
        n_data: dataset size N.

    Returns:
        Per-sample (index-code MI, total correlation, dimension-wise KL), each ``[b]``.
    """
    b = z.shape[0]
    log_qz_x = _gauss_logpdf(z, mu, logvar).sum(1)  # [b, m] -> [b]
    mat = _gauss_logpdf(
        z[:, None, :], mu[None], logvar[None]
    )  # [b, 1, m] vs [1, b, m] -> [b, b, m]
    log_nm = math.log(b * n_data)
    log_qz = torch.logsumexp(mat.sum(2), dim=1) - log_nm  # [b, b] -> [b]
    log_prod_qzi = (torch.logsumexp(mat, dim=1) - log_nm).sum(1)  # [b, m] -> [b]
    log_pz = _gauss_logpdf(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)  # [b]
    return log_qz_x - log_qz, log_qz - log_prod_qzi, log_prod_qzi - log_pz


def _permute_dims(z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shuffle each latent dimension independently across the batch (FactorVAE, Alg. 2)."""
    b, m = z.shape
    idx = torch.argsort(torch.rand(b, m, generator=gen, device=z.device), dim=0)  # [b, m]
    return torch.gather(z, 0, idx)  # [b, m] -> [b, m]


class TwoStageLearner:
    """A representation learner for the two-stage baselines (scikit-learn style).

    Args:
        kind: one of :data:`BASELINES`.
        latent_dim: m, the number of latents to learn.
        config: hyperparameters; defaults when None.
        device: torch device; CUDA when available when None.
        seed: seeds the initialisation and minibatch order.
    """

    def __init__(
        self,
        kind: str,
        latent_dim: int,
        config: BaselineConfig | None = None,
        device: str | None = None,
        seed: int = 0,
    ):
        self.kind = kind
        self.latent_dim = latent_dim
        self.config = config
        self.device = device
        self.seed = seed

    def _check(self, images: np.ndarray, u: np.ndarray) -> None:
        if self.kind not in BASELINES:
            raise ValueError(f"unknown baseline {self.kind!r}; choose one of {BASELINES}")
        if images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be [n, C, H, H], got shape {images.shape}")
        if u.ndim != 2 or u.shape[0] != images.shape[0]:
            raise ValueError(f"u must be [n, d] with n = {images.shape[0]}, got {u.shape}")

    def fit(self, images: np.ndarray, u: np.ndarray) -> TwoStageLearner:
        """Train on images ``[n, C, H, H]`` in [0, 1] and ``u`` ``[n, d]``; returns self."""
        images, u = np.asarray(images, np.float32), np.asarray(u, np.float32)
        self._check(images, u)
        cfg = self.config or BaselineConfig()
        dev = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(self.seed)
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        n, c, h, _ = images.shape
        self.u_mean_, self.u_std_ = u.mean(0), u.std(0) + 1e-6
        net = _VAENet(self.kind, h, c, self.latent_dim, u.shape[1], cfg).to(dev)
        if cfg.standardize_images:  # as CMCL's encoder
            net.encoder.set_input_stats(*input_stats(images, self.seed))
        vae_params = [p for name, p in net.named_parameters() if not name.startswith("disc.")]
        opt = torch.optim.Adam(vae_params, lr=cfg.lr)
        opt_d = torch.optim.Adam(net.disc.parameters(), lr=1e-4) if hasattr(net, "disc") else None
        X = torch.from_numpy(images).to(dev)  # [n, C, H, W]
        U = torch.from_numpy((u - self.u_mean_) / self.u_std_).to(dev)  # [n, d]
        bs = min(cfg.batch_size, n)
        self.history_: list[float] = []
        t0 = time.perf_counter()
        for epoch in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen, device=dev)
            total = 0.0
            for start in range(0, n - bs + 1, bs):
                idx = perm[start : start + bs]
                loss, z = self._loss(net, X[idx], U[idx], n, cfg)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if opt_d is not None:
                    self._disc_step(net, opt_d, z.detach(), gen)
                total += float(loss.detach()) * bs
            self.history_.append(total / n)
            logger.debug("%s epoch %d loss %.3f", self.kind, epoch, self.history_[-1])
        self.fit_seconds_ = time.perf_counter() - t0
        self.net_ = net.eval()
        self.device_ = dev
        return self

    def _loss(self, net: _VAENet, x: torch.Tensor, u: torch.Tensor, n: int, cfg: BaselineConfig):
        mu, logvar = net.encode(x, u)  # [b, m] each
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # [b, m]
        logits = net.decoder(z)  # [b, m] -> [b, C, H, W]
        if cfg.gaussian_sigma is None:  # Bernoulli cross-entropy, as the paper (Appendix D.3)
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        else:  # Gaussian N(x; sigmoid(logits), sigma^2), up to a constant
            err = (torch.sigmoid(logits) - x) ** 2 / (2 * cfg.gaussian_sigma**2)
            rec = err.flatten(1).sum(1)  # [b, C, H, W] -> [b]
        zeros = torch.zeros_like(mu)
        if self.kind == "ivae":
            p_logvar = net.prior_logl(u).clamp(-10.0, 8.0)  # [b, d] -> [b, m]
            kl = _kl_gauss(mu, logvar, zeros, p_logvar)
        elif self.kind == "tcvae":
            mi, tc, dw_kl = _tc_mws_terms(z, mu, logvar, n)
            kl = mi + cfg.beta * tc + dw_kl
        else:
            kl = _kl_gauss(mu, logvar, zeros, zeros)
            if self.kind == "betavae":
                kl = cfg.beta * kl
        loss = (rec + cfg.kl_weight * kl).mean()
        if self.kind == "factorvae":
            d_logits = net.disc(z)  # [b, m] -> [b, 2]; TC ~ E[log D(z) - log(1 - D(z))]
            loss = loss + cfg.gamma * (d_logits[:, 0] - d_logits[:, 1]).mean()
        return loss, z

    @staticmethod
    def _disc_step(net: _VAENet, opt_d, z: torch.Tensor, gen: torch.Generator) -> None:
        """FactorVAE discriminator update: class 0 = q(z) samples, class 1 = permuted."""
        z_perm = _permute_dims(z, gen)
        logits = net.disc(torch.cat([z, z_perm]))  # [2b, m] -> [2b, 2]
        target = torch.cat([torch.zeros(len(z)), torch.ones(len(z))]).long().to(z.device)
        d_loss = F.cross_entropy(logits, target)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()

    @torch.no_grad()
    def transform(self, images: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Posterior means of z: images ``[n, C, H, H]``, u ``[n, d]`` -> ``[n, m]``."""
        if not hasattr(self, "net_"):
            raise ValueError("call fit() before transform()")
        images, u = np.asarray(images, np.float32), np.asarray(u, np.float32)
        self._check(images, u)
        X = torch.from_numpy(images).to(self.device_)
        U = torch.from_numpy((u - self.u_mean_) / self.u_std_).to(self.device_)
        out = [self.net_.encode(X[i : i + 512], U[i : i + 512])[0] for i in range(0, len(X), 512)]
        return torch.cat(out).cpu().numpy()  # [n, m]
