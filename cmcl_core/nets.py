"""Networks of CMCL: conv VAE encoder/decoder, posterior, conditional prior, CR classifier.

Widths follow Appendix D.3 of the paper (synthetic images: 16/16/32/32/64/64 channels with
stride-2 down-sampling, decoder mirrored; MLPs of 3 x 50 for the posterior and 3 x 10 for the
classifier D). The number of down-sampling stages is derived from the image size, so 16x16 up to
128x128 (or larger) one-channel inputs work with the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def n_down_stages(height: int, width: int, min_spatial: int = 4) -> int:
    """Number of stride-2 stages that take an image down to about ``min_spatial`` pixels.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        min_spatial: stop halving when the smaller side would drop below this.

    Returns:
        The number of stages (0 for tiny images).
    """
    stages = 0
    h, w = height, width
    while min(h, w) // 2 >= min_spatial and h % 2 == 0 and w % 2 == 0:
        h, w = h // 2, w // 2
        stages += 1
    return stages


def stage_channels(n_stages: int, base: int, cap: int) -> list[int]:
    """Channels per stage: ``base`` doubling per stage, capped (Appendix D.3: 16/32/64)."""
    return [min(base * 2**s, cap) for s in range(max(n_stages, 1))]


def mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    """A fully connected network with LeakyReLU between layers (as iVAE's reference MLPs).

    Args:
        n_in: input width.
        hidden: hidden layer widths.
        n_out: output width.

    Returns:
        The network.
    """
    layers: list[nn.Module] = []
    prev = n_in
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.LeakyReLU(0.2)]
        prev = width
    layers.append(nn.Linear(prev, n_out))
    return nn.Sequential(*layers)


def input_stats(images: np.ndarray, seed: int, max_rows: int = 2000) -> tuple[torch.Tensor, float]:
    """Per-pixel mean [C, H, W] and global std of ``images`` [n, C, H, W] (a fixed subsample of
    ``max_rows`` when larger): the encoder's input standardisation (``set_input_stats``)."""
    n = images.shape[0]
    rows = np.arange(n)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    x = np.asarray(images[rows], dtype=np.float64)  # [r, C, H, W]
    shift = x.mean(0)
    scale = float((x - shift).std()) or 1.0
    return torch.as_tensor(shift, dtype=torch.float32), scale


def he_init(module: nn.Module) -> None:
    """He (Kaiming) normal weights and zero biases for every conv / linear layer in ``module``.

    PyTorch's default init shrinks the signal by about sqrt(3) per layer; after six conv
    layers the encoder's output hardly varies between images, the KL term then pins q(z0 | x)
    to the prior before the reconstruction gradient can grow it (posterior collapse: on the
    paper's synthetic images every posterior mean had a spread of 0 after training).
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ConvEncoder(nn.Module):
    """Image -> Gaussian parameters: q(z0 | x) of the latent embedding module (Eq. 5-6).

    Each stage is a 4x4 stride-2 convolution then a 3x3 convolution at the halved size (the
    "16/16/32/32/64/64" pairs of Appendix D.3), ReLU after each.

    Args:
        in_channels: image channels C.
        image_hw: (H, W).
        out_dim: latent size.
        base_channels: channels of the first stage.
        max_channels: channel cap.
        min_spatial: smallest feature-map side.
    """

    def __init__(
        self,
        in_channels: int,
        image_hw: tuple[int, int],
        out_dim: int,
        base_channels: int = 16,
        max_channels: int = 64,
        min_spatial: int = 4,
        he: bool = False,
    ) -> None:
        super().__init__()
        n_st = n_down_stages(*image_hw, min_spatial=min_spatial)
        chans = stage_channels(n_st, base_channels, max_channels)
        layers: list[nn.Module] = []
        prev = in_channels
        for s in range(n_st):  # down-sample first, so no 3x3 convolution runs at full size
            layers += [nn.Conv2d(prev, chans[s], 4, stride=2, padding=1), nn.ReLU()]
            layers += [nn.Conv2d(chans[s], chans[s], 3, padding=1), nn.ReLU()]
            prev = chans[s]
        if n_st == 0:
            layers += [nn.Conv2d(prev, chans[0], 3, padding=1), nn.ReLU()]
            prev = chans[0]
        self.features = nn.Sequential(*layers)
        h, w = image_hw[0] // 2**n_st, image_hw[1] // 2**n_st
        self.head = nn.Linear(prev * h * w, 2 * out_dim)
        self.out_dim = out_dim
        if he:
            he_init(self)
        # Input standardisation x -> (x - shift) / scale, set from the training images by the
        # estimator (identity until then); see CMCLConfig.standardize_images.
        self.register_buffer("x_shift", torch.zeros(in_channels, *image_hw))
        self.register_buffer("x_scale", torch.ones(()))

    def set_input_stats(self, shift: torch.Tensor, scale: float) -> None:
        """Standardise inputs by a per-pixel ``shift`` [C, H, W] and a global ``scale``."""
        self.x_shift.copy_(shift.to(self.x_shift))
        self.x_scale.fill_(float(scale))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images.

        Args:
            x: images [n, C, H, W] in [0, 1].

        Returns:
            (mean [n, out_dim], log-variance [n, out_dim]).
        """
        x = (x - self.x_shift) / self.x_scale  # [n, C, H, W]
        hidden = self.features(x).flatten(1)  # [n, C, H, W] -> [n, c_last * h * w]
        mean, logvar = self.head(hidden).chunk(2, dim=1)  # -> 2 x [n, out_dim]
        return mean, logvar.clamp(-12.0, 8.0)


class ConvDecoder(nn.Module):
    """Latent -> Bernoulli logits of the image, p(x | z0) or p(x | z) (Eq. 5, 7); mirrors
    :class:`ConvEncoder` (3x3 convolution then 4x4 stride-2 transposed convolution per stage;
    the last one outputs the image channels).

    Args:
        in_dim: latent size.
        out_channels: image channels C.
        image_hw: (H, W).
        base_channels: channels of the last (full-resolution) stage.
        max_channels: channel cap.
        min_spatial: smallest feature-map side (as the encoder).
    """

    def __init__(
        self,
        in_dim: int,
        out_channels: int,
        image_hw: tuple[int, int],
        base_channels: int = 16,
        max_channels: int = 64,
        min_spatial: int = 4,
        he: bool = False,
    ) -> None:
        super().__init__()
        n_st = n_down_stages(*image_hw, min_spatial=min_spatial)
        chans = stage_channels(n_st, base_channels, max_channels)[::-1]
        self.start_shape = (chans[0], image_hw[0] // 2**n_st, image_hw[1] // 2**n_st)
        self.head = nn.Sequential(
            nn.Linear(in_dim, chans[0] * self.start_shape[1] * self.start_shape[2]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        for s in range(n_st):  # mirror of the encoder: 3x3 at the low size, then up-sample
            nxt = chans[s + 1] if s + 1 < n_st else out_channels
            layers += [nn.Conv2d(chans[s], chans[s], 3, padding=1), nn.ReLU()]
            layers.append(nn.ConvTranspose2d(chans[s], nxt, 4, stride=2, padding=1))
            if s + 1 < n_st:
                layers.append(nn.ReLU())
        if n_st == 0:
            layers.append(nn.Conv2d(chans[0], out_channels, 3, padding=1))
        self.features = nn.Sequential(*layers)
        if he:
            he_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents to logits.

        Args:
            z: latents [n, in_dim].

        Returns:
            Bernoulli logits [n, C, H, W] (apply sigmoid for an image in [0, 1]).
        """
        hidden = self.head(z).view(z.shape[0], *self.start_shape)  # [n, in] -> [n, c, h, w]
        return self.features(hidden)  # -> [n, C, H, W]


class Posterior(nn.Module):
    """q(z | z0, u) of the causal representation module (Eq. 7, 17): an MLP (Appendix D.3).

    Args:
        embed_dim: size of z0.
        u_dim: width of the u features.
        latent_dim: m.
        hidden: hidden widths (paper: 3 x 50).
        uses_u: feed u to the MLP (Eq. 17); False gives q(z | z0), u is then ignored.
    """

    def __init__(
        self,
        embed_dim: int,
        u_dim: int,
        latent_dim: int,
        hidden: Sequence[int],
        uses_u: bool = True,
    ):
        super().__init__()
        self.uses_u = uses_u
        self.net = mlp(embed_dim + (u_dim if uses_u else 0), hidden, 2 * latent_dim)

    def forward(self, z0: torch.Tensor, u_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters.

        Args:
            z0: embeddings [n, embed_dim].
            u_feat: encoded structured variables [n, u_dim].

        Returns:
            (mean [n, m], log-variance [n, m]).
        """
        inp = torch.cat([z0, u_feat], dim=1) if self.uses_u else z0  # [n, e (+ d_feat)]
        mean, logvar = self.net(inp).chunk(2, dim=1)  # -> 2 x [n, m]
        return mean, logvar.clamp(-12.0, 8.0)


class ConditionalPrior(nn.Module):
    """Factorised conditional Gaussian prior p(z_j | u) = N(mu_j(u), sigma_j(u)) (Eq. 2, 18).

    Design choice (Assumption 2, additive noise). The direction of a u-z edge is not decided by
    the prior: p(z_j | u) exists whichever way the edge points. It is decided afterwards by the
    DAG component from the additive-noise asymmetry between u and E[z | x, u] (Hoyer et al.
    2008). What the prior must do is make the coordinates of z line up with the true latents
    (identifiability, Assumption 3), and for that both directions need a u-dependent *mean*:
    for u_i -> z_j, E[z_j | u] = f_j(u_i); for z_j -> u_i, E[z_j | u] is the posterior mean of
    a cause given its effect, also a non-constant function of u_i. We therefore let both the
    mean and the variance depend on u (Eq. 18). iVAE's reference prior (zero mean,
    u-dependent variance; ``with_mean=False``) cannot express that shift; on the two-edge test
    problem it left the latents mixed and the DAG then reversed both edges, while the
    mean-and-variance prior recovered both directions.

    Args:
        u_dim: width of the u features.
        latent_dim: m.
        hidden: hidden widths.
        with_mean: let the mean depend on u too.
    """

    def __init__(self, u_dim: int, latent_dim: int, hidden: Sequence[int], with_mean: bool):
        super().__init__()
        self.with_mean = with_mean
        self.latent_dim = latent_dim
        self.net = mlp(u_dim, hidden, (2 if with_mean else 1) * latent_dim)

    def forward(self, u_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior parameters.

        Args:
            u_feat: encoded structured variables [n, u_dim].

        Returns:
            (mean [n, m], log-variance [n, m]).
        """
        out = self.net(u_feat)  # [n, u_dim] -> [n, (1 or 2) * m]
        if self.with_mean:
            mean, logvar = out.chunk(2, dim=1)
        else:
            mean, logvar = torch.zeros_like(out), out
        return mean, logvar.clamp(-8.0, 8.0)


class UFeatures(nn.Module):
    """Raw u [n, d] -> model features: continuous standardised, binary 0/1, categorical one-hot.

    Pure tensor arithmetic with fixed loops over columns, so it traces for ONNX export.

    Args:
        shift: per-column shift [d] (mean, or the low level of a binary variable).
        scale: per-column scale [d] (std, or high - low).
        categorical_levels: column index -> sorted level values of each categorical column.
    """

    def __init__(
        self,
        shift: torch.Tensor,
        scale: torch.Tensor,
        categorical_levels: dict[int, torch.Tensor],
    ) -> None:
        super().__init__()
        self.register_buffer("shift", shift.float())
        self.register_buffer("scale", scale.float())
        self.cat_cols = sorted(categorical_levels)
        for col in self.cat_cols:
            self.register_buffer(f"levels_{col}", categorical_levels[col].float())
        self.d = int(shift.shape[0])
        self.out_dim = self.d + sum(int(categorical_levels[c].numel()) - 1 for c in self.cat_cols)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Encode raw u.

        Args:
            u: raw structured variables [n, d].

        Returns:
            Features [n, out_dim].
        """
        parts = []
        for col in range(self.d):
            if col in self.cat_cols:
                levels = getattr(self, f"levels_{col}")  # [K]
                parts.append((u[:, col : col + 1] == levels).float())  # [n, 1] -> [n, K]
            else:
                parts.append((u[:, col : col + 1] - self.shift[col]) / self.scale[col])
        return torch.cat(parts, dim=1)  # -> [n, out_dim]


class EncoderModule(nn.Module):
    """Exportable encoder: (x [n, C, H, W], raw u [n, d]) -> posterior mean of z [n, m].

    Args:
        encoder: the conv encoder of z0.
        u_features: raw-u encoder.
        posterior: q(z | z0, u), or None when the CM module is off (z = z0).
    """

    def __init__(self, encoder: ConvEncoder, u_features: UFeatures, posterior: Posterior | None):
        super().__init__()
        self.encoder = encoder
        self.u_features = u_features
        self.posterior = posterior

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Posterior means (no sampling).

        Args:
            x: images [n, C, H, W] in [0, 1].
            u: raw structured variables [n, d].

        Returns:
            z means [n, m].
        """
        z0_mean, _ = self.encoder(x)  # [n, C, H, W] -> [n, e]
        if self.posterior is None:
            return z0_mean
        z_mean, _ = self.posterior(z0_mean, self.u_features(u))  # -> [n, m]
        return z_mean


class DecoderModule(nn.Module):
    """Exportable decoder: z [n, m] -> image [n, C, H, W] in [0, 1] (sigmoid of the logits)."""

    def __init__(self, decoder: ConvDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode.

        Args:
            z: latents [n, m].

        Returns:
            Images [n, C, H, W] in [0, 1].
        """
        return torch.sigmoid(self.decoder(z))
