"""The CMCL network: one ``nn.Module`` that holds every learned part of the model.

* the latent embedding module, a conv VAE ``q(z0 | x)`` / ``p(x | z0)`` (Eq. 5-6);
* the causal representation module, ``q(z | z0, u)``, the conditional prior ``p(z | u)`` and
  the decoder ``p(x | z)`` (Eq. 7, 17-19); without it (``use_cm`` off, an ablation) ``z = z0``;
* the causal DAG over ``V = [u, z]``, a NOTEARS-MLP (Eq. 8-10);
* the classifier ``D`` of the counterfactual contrastive regulariser (Eq. 11-13).

It also knows how raw ``u`` enters each part (:class:`~cmcl_core.variables.UEncoding`) and
computes posterior means in batches. Training (``cmcl_core.training``) and the sparse rotation
(``cmcl_core.rotation``) work on this module; the estimator owns one after ``fit``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cmcl_core.config import CMCLConfig
from cmcl_core.dag import NotearsMLP
from cmcl_core.device import Cohort
from cmcl_core.graph import bipartite_mask
from cmcl_core.nets import (
    ConditionalPrior,
    ConvDecoder,
    ConvEncoder,
    DecoderModule,
    EncoderModule,
    Posterior,
    UFeatures,
    input_stats,
    mlp,
)
from cmcl_core.variables import UEncoding, VariableType

#: Rows per batch when a network reads (possibly memory-mapped) images for inference.
INFERENCE_BATCH = 256


def posterior_widths(cfg: CMCLConfig, latent_dim: int) -> tuple[int, ...]:
    """Posterior MLP widths: ``cfg.posterior_hidden``, or 3 x max(50, 6 m) when None."""
    return cfg.posterior_hidden or (max(50, 6 * latent_dim),) * 3


def embedding_width(cfg: CMCLConfig, latent_dim: int) -> int:
    """Size of ``z0``: ``cfg.embed_dim`` or max(16, 2 m); m itself without the CM module."""
    if not cfg.use_cm:
        return latent_dim
    return cfg.embed_dim or max(16, 2 * latent_dim)


class CMCLNetwork(nn.Module):
    """Every module of a CMCL model, built for one data shape.

    Args:
        cfg: the model's settings.
        latent_dim: m.
        image_shape: (C, H, W).
        encoding: how the d observed variables enter the model.
        dag_allowed: ``[(d + m), (d + m)]`` mask of the DAG's possible edges; the paper's
            bipartite ``u``-``z`` mask (or all edges with ``allow_all_edges``) when None.
    """

    def __init__(
        self,
        cfg: CMCLConfig,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        encoding: UEncoding,
        dag_allowed: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        m, d = latent_dim, encoding.d
        self.latent_dim = m
        self.embed_dim = e = embedding_width(cfg, m)
        self.encoding = encoding
        conv = dict(
            base_channels=cfg.base_channels,
            max_channels=cfg.max_channels,
            min_spatial=cfg.min_spatial,
            he=cfg.he_init,
        )
        self.u_features = UFeatures(
            torch.as_tensor(encoding.shift),
            torch.as_tensor(encoding.scale),
            {i: torch.as_tensor(lv) for i, lv in encoding.levels.items()},
        )
        self.encoder = ConvEncoder(c, (h, w), e, **conv)
        self.embed_decoder: ConvDecoder | None = None
        self.posterior: Posterior | None = None
        self.prior: ConditionalPrior | None = None
        if cfg.use_cm:
            u_dim = self.u_features.out_dim
            self.embed_decoder = ConvDecoder(e, c, (h, w), **conv)
            self.posterior = Posterior(e, u_dim, m, posterior_widths(cfg, m), cfg.posterior_uses_u)
            self.prior = ConditionalPrior(u_dim, m, cfg.prior_hidden, cfg.prior_mean)
        self.decoder = ConvDecoder(m, c, (h, w), **conv)
        if dag_allowed is None and not cfg.allow_all_edges:
            dag_allowed = bipartite_mask(d, m)
        self.dag = NotearsMLP(self.dag_types, cfg.dag_hidden, dag_allowed, self.dag_levels)
        self.classifier = mlp(m, cfg.cr_hidden, 1)

    # ------------------------------------------------------------------ structure
    @property
    def has_cm(self) -> bool:
        """Whether the causal representation module exists (``use_cm``)."""
        return self.posterior is not None

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return next(self.parameters()).device

    @property
    def dag_types(self) -> list[str]:
        """Variable type of each node of ``V = [u, z]``."""
        return list(self.encoding.types) + [VariableType.CONTINUOUS.value] * self.latent_dim

    @property
    def dag_levels(self) -> list[int]:
        """Level count of each node of ``V`` (1 unless categorical)."""
        return self.encoding.n_levels + [1] * self.latent_dim

    def representation_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder, the CM module and the decoder (one learning rate)."""
        parts = (self.encoder, self.embed_decoder, self.posterior, self.prior, self.decoder)
        return [p for part in parts if part is not None for p in part.parameters()]

    def replace_dag(self, dag: NotearsMLP) -> None:
        """Swap in causal functions fitted on the final graph."""
        self.dag = dag.to(self.device)

    # ------------------------------------------------------------------ data
    def dag_inputs(self, u: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw u [n, d] -> DAG inputs: continuous standardised, binary 0/1, categorical codes."""
        dev = self.device
        enc = self.encoding
        u_t = torch.as_tensor(np.asarray(u, dtype=np.float32), device=dev)  # [n, d]
        shift = torch.as_tensor(enc.shift, dtype=torch.float32, device=dev)
        scale = torch.as_tensor(enc.scale, dtype=torch.float32, device=dev)
        out = (u_t - shift) / scale  # [n, d]
        for i, lv in enc.levels.items():
            lv_t = torch.as_tensor(lv, dtype=torch.float32, device=dev)
            out[:, i] = (u_t[:, i : i + 1] == lv_t).float().argmax(1).float()
        return out

    def batch(
        self, images: np.ndarray | Cohort, u: np.ndarray, idx: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``idx`` as float32 tensors on the device: (images, raw u, DAG inputs of u).

        ``images`` is an array (read and copied) or a :class:`~cmcl_core.device.Cohort`
        (already on the device, or streamed through pinned memory)."""
        idx = np.sort(idx)  # sorted reads are sequential on a memmap
        dev = self.device
        if isinstance(images, Cohort):
            x = images.rows(idx)
        else:
            x = torch.as_tensor(np.asarray(images[idx], dtype=np.float32), device=dev)
        u_raw = torch.as_tensor(np.asarray(u[idx], dtype=np.float32), device=dev)
        return x, u_raw, self.dag_inputs(u_raw.cpu().numpy())

    def set_input_stats(self, images: np.ndarray, seed: int) -> None:
        """Standardise the encoder's input by the training images' statistics."""
        self.encoder.set_input_stats(*input_stats(images, seed))

    # ------------------------------------------------------------------ inference
    def encoder_module(self) -> EncoderModule:
        """(x [n, C, H, W], raw u [n, d]) -> posterior means of z [n, m], in eval mode."""
        return EncoderModule(self.encoder, self.u_features, self.posterior).eval()

    def decoder_module(self) -> DecoderModule:
        """z [n, m] -> images [n, C, H, W] in [0, 1], in eval mode."""
        return DecoderModule(self.decoder).eval()

    @torch.no_grad()
    def posterior_means(
        self, images: np.ndarray | Cohort, u: np.ndarray, idx: np.ndarray | None = None
    ) -> np.ndarray:
        """E[z | x, u] for the rows ``idx`` (all when None), in batches: [len(idx), m]."""
        idx = np.arange(len(u)) if idx is None else idx
        enc = self.encoder_module()
        out = []
        for start in range(0, len(idx), INFERENCE_BATCH):
            x, u_raw, _ = self.batch(images, u, idx[start : start + INFERENCE_BATCH])
            out.append(enc(x, u_raw).cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, self.latent_dim))
