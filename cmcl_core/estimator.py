"""The CMCL estimator: joint causal representation and structure learning (Algorithm 1).

``CMCL(latent_dim=m).fit(images, u, u_types, u_names)`` trains, in one Adam loop,

* the latent embedding module, a conv VAE ``q(z0 | x)`` / ``p(x | z0)`` (Eq. 5-6);
* the causal representation module, ``q(z | z0, u)``, the conditional prior ``p(z | u)`` and
  the decoder ``p(x | z)`` (Eq. 7, 17-19);
* the causal DAG, a NOTEARS-MLP over ``V = [u, z]`` with an augmented Lagrangian on ``h(W)``
  (Eq. 10), whose link loss also shapes ``z``;
* the counterfactual contrastive regulariser (Eq. 11-13, Algorithm 1 step d);

minimising Eq. 14. Interventions ``do(u_i = v)`` follow Appendix B (abduction through the
learned additive-noise causal functions, then the decoder).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from cmcl_core.config import CMCLConfig
from cmcl_core.dag import NotearsMLP, bipartite_mask
from cmcl_core.nets import (
    ConditionalPrior,
    ConvDecoder,
    ConvEncoder,
    DecoderModule,
    EncoderModule,
    Posterior,
    UFeatures,
    mlp,
)
from cmcl_core.training import posterior_means, train

logger = logging.getLogger(__name__)

U_TYPES = ("continuous", "binary", "categorical")
_CHUNK = 4096  # rows per chunk when scanning (possibly memory-mapped) image arrays


def _as_numpy(a: Any, name: str) -> np.ndarray:
    if torch.is_tensor(a):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):  # includes np.memmap: never copied here
        return a
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array, got {type(a).__name__}") from err


def _check_images(images: np.ndarray, shape: tuple[int, ...] | None = None) -> None:
    """Shape, finiteness and [0, 1] range, scanned in chunks (memmaps are not loaded whole)."""
    if images.ndim != 4:
        raise ValueError(
            f"images must be a 4-D array [n, C, H, W], got shape {tuple(images.shape)}; "
            "add a channel axis for grey-scale images (images[:, None])"
        )
    if not np.issubdtype(images.dtype, np.number):
        raise ValueError(f"images must be numeric, got dtype {images.dtype}")
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(
            f"images have shape [C, H, W] = {tuple(images.shape[1:])} but the model was fitted "
            f"on {tuple(shape)}; resize them as during fit"
        )
    for start in range(0, images.shape[0], _CHUNK):
        chunk = np.asarray(images[start : start + _CHUNK])
        if not np.all(np.isfinite(chunk)):
            raise ValueError("images contain NaN or inf values; drop or repair those images")
        if chunk.size and (chunk.min() < 0.0 or chunk.max() > 1.0):
            raise ValueError(
                f"images must be scaled to [0, 1], found values in [{chunk.min():.3g}, "
                f"{chunk.max():.3g}]; rescale them (e.g. divide by the maximum intensity)"
            )


class CMCL:
    """Cross-Modal Variational Causal representation and structure Learning (the paper).

    Scikit-learn style: the constructor only stores its arguments; ``fit`` (re)builds and
    re-seeds everything, so fitting twice equals fitting once on the second data.

    Args:
        latent_dim: m, the number of causal latent variables z.
        config: hyperparameters (defaults when None).
        device: torch device; CUDA when available, else CPU, when None.
        seed: seed of all randomness in ``fit`` (runs are reproducible on CPU).
        **overrides: individual ``CMCLConfig`` fields, applied on top of ``config``.
    """

    def __init__(
        self,
        latent_dim: int = 5,
        config: CMCLConfig | None = None,
        device: str | None = None,
        seed: int = 0,
        **overrides: Any,
    ) -> None:
        self.latent_dim = latent_dim
        self.config = config
        self.device = device
        self.seed = seed
        self.overrides = overrides

    # ------------------------------------------------------------------ set-up helpers
    def _resolved_config(self) -> CMCLConfig:
        base = self.config if self.config is not None else CMCLConfig()
        return base.replace(**self.overrides) if self.overrides else base

    def _prepare_u(
        self, u: np.ndarray, u_types: Sequence[str] | None, u_names: Sequence[str] | None
    ) -> None:
        """Validate u and its metadata; set u_types_, u_names_ and the encodings."""
        n, d = u.shape
        u_types = list(u_types) if u_types is not None else None
        if u_types is None:
            u_types = ["binary" if len(np.unique(u[:, i])) == 2 else "continuous" for i in range(d)]
        if len(u_types) != d:
            raise ValueError(f"u_types has {len(u_types)} entries but u has {d} columns")
        bad = sorted({t for t in u_types if t not in U_TYPES})
        if bad:
            raise ValueError(f"unknown u_types {bad}: use one of {U_TYPES}")
        u_names = [str(s) for s in u_names] if u_names is not None else [f"u{i}" for i in range(d)]
        if len(u_names) != d:
            raise ValueError(f"u_names has {len(u_names)} entries but u has {d} columns")
        if len(set(u_names)) != d:
            raise ValueError(f"u_names must be unique, got {u_names}")
        z_names = {f"z{j}" for j in range(self.latent_dim_)}
        clash = sorted(z_names & set(u_names))
        if clash:
            raise ValueError(f"u_names {clash} clash with latent names z0..z{{m-1}}; rename them")
        shift, scale, levels = np.zeros(d), np.ones(d), {}
        for i, (t, name) in enumerate(zip(u_types, u_names, strict=True)):
            values = np.unique(u[:, i])
            if t == "binary":
                if len(values) != 2:
                    raise ValueError(
                        f"u variable {name!r} is declared binary but has {len(values)} distinct "
                        "values; declare it continuous or categorical, or recode it to 0/1"
                    )
                shift[i], scale[i] = values[0], values[1] - values[0]
            elif t == "categorical":
                if len(values) < 2 or np.any(values != np.round(values)):
                    raise ValueError(
                        f"u variable {name!r} is declared categorical but has "
                        f"{len(values)} level(s) or non-integer codes; recode it to integers"
                    )
                levels[i] = values
            else:
                sd = u[:, i].std()
                if not sd > 0:
                    raise ValueError(f"continuous u variable {name!r} is constant; drop it")
                shift[i], scale[i] = u[:, i].mean(), sd
        self.u_types_, self.u_names_ = u_types, u_names
        self.u_shift_, self.u_scale_, self.u_levels_ = shift, scale, levels

    def _u_dag(self, u: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw u -> DAG inputs: continuous standardised, binary 0/1, categorical codes."""
        u_t = torch.as_tensor(np.asarray(u, dtype=np.float32), device=self.device_)  # [n, d]
        shift = torch.as_tensor(self.u_shift_, dtype=torch.float32, device=self.device_)
        scale = torch.as_tensor(self.u_scale_, dtype=torch.float32, device=self.device_)
        out = (u_t - shift) / scale  # [n, d]
        for i, lv in self.u_levels_.items():
            lv_t = torch.as_tensor(lv, dtype=torch.float32, device=self.device_)
            out[:, i] = (u_t[:, i : i + 1] == lv_t).float().argmax(1).float()
        return out

    def _build(self, cfg: CMCLConfig, image_shape: tuple[int, int, int]) -> None:
        """Create all modules (called by fit and load)."""
        c, h, w = image_shape
        m, d = self.latent_dim_, len(self.u_types_)
        e = self.embed_dim_
        net_kw = dict(
            base_channels=cfg.base_channels,
            max_channels=cfg.max_channels,
            min_spatial=cfg.min_spatial,
            he=cfg.he_init,
        )
        self.u_features_ = UFeatures(
            torch.as_tensor(self.u_shift_),
            torch.as_tensor(self.u_scale_),
            {i: torch.as_tensor(lv) for i, lv in self.u_levels_.items()},
        )
        self.encoder_ = ConvEncoder(c, (h, w), e, **net_kw)
        if cfg.use_cm:
            self.embed_decoder_ = ConvDecoder(e, c, (h, w), **net_kw)
            self.posterior_ = Posterior(
                e, self.u_features_.out_dim, m, _posterior_hidden(cfg, m), cfg.posterior_uses_u
            )
            self.prior_ = ConditionalPrior(
                self.u_features_.out_dim, m, cfg.prior_hidden, cfg.prior_mean
            )
        else:
            self.embed_decoder_ = self.posterior_ = self.prior_ = None
        self.decoder_ = ConvDecoder(m, c, (h, w), **net_kw)
        allowed = None if cfg.allow_all_edges else bipartite_mask(d, m)
        n_levels = [len(self.u_levels_.get(i, ())) or 1 for i in range(d)] + [1] * m
        self.dag_ = NotearsMLP(
            self.u_types_ + ["continuous"] * m, cfg.dag_hidden, allowed, n_levels
        )
        self.classifier_ = mlp(m, cfg.cr_hidden, 1)
        for name in self._module_names():
            mod = getattr(self, name)
            if mod is not None:
                mod.to(self.device_)

    @staticmethod
    def _module_names() -> list[str]:
        return [
            "u_features_",
            "encoder_",
            "embed_decoder_",
            "posterior_",
            "prior_",
            "decoder_",
            "dag_",
            "classifier_",
        ]

    def _batch(self, images: np.ndarray, u: np.ndarray, idx: np.ndarray) -> tuple:
        idx = np.sort(idx)  # sorted reads are sequential on a memmap
        x = torch.as_tensor(np.asarray(images[idx], dtype=np.float32), device=self.device_)
        u_raw = torch.as_tensor(np.asarray(u[idx], dtype=np.float32), device=self.device_)
        return x, u_raw, self._u_dag(u_raw.cpu().numpy())

    def _z_std(self, z: torch.Tensor, batch_stats: bool) -> torch.Tensor:
        """Standardise z for the DAG: batch statistics in training (no collapse of the scale
        can lower the link loss), the fitted statistics afterwards."""
        if batch_stats:
            return (z - z.mean(0)) / (z.std(0) + 1e-4)  # [n, m]
        shift = torch.as_tensor(self.z_shift_, dtype=z.dtype, device=z.device)
        scale = torch.as_tensor(self.z_scale_, dtype=z.dtype, device=z.device)
        return (z - shift) / scale  # [n, m]

    # ------------------------------------------------------------------ training
    def fit(
        self,
        images: Any,
        u: Any,
        u_types: Sequence[str] | None = None,
        u_names: Sequence[str] | None = None,
        callback: Callable[[int, dict], None] | None = None,
    ) -> CMCL:
        """Fit the model (Algorithm 1).

        Args:
            images: [n, C, H, W] floats in [0, 1] (numpy, np.memmap, or torch); read per batch.
            u: [n, d] structured variables (raw values).
            u_types: ``continuous`` / ``binary`` / ``categorical`` per column (binary when a
                column has two values, continuous otherwise, when None).
            u_names: column names (``u0..`` when None).
            callback: called as ``callback(epoch, record)`` after each epoch.

        Returns:
            self.

        Raises:
            ValueError: on malformed input (shapes, NaNs, types, too few samples).
        """
        cfg = self._resolved_config()
        images = _as_numpy(images, "images")
        u = np.asarray(_as_numpy(u, "u"), dtype=np.float64)
        if u.ndim == 1:
            u = u[:, None]
        if u.ndim != 2 or u.shape[1] < 1:
            raise ValueError(f"u must be a 2-D array [n, d] with d >= 1, got shape {u.shape}")
        _check_images(images)
        if images.shape[0] != u.shape[0]:
            raise ValueError(
                f"images has {images.shape[0]} samples but u has {u.shape[0]}: rows must match"
            )
        if not np.all(np.isfinite(u)):
            raise ValueError("u contains NaN or inf values; impute or drop those rows")
        if not isinstance(self.latent_dim, int | np.integer) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
        n = u.shape[0]
        n_val = int(round(cfg.val_fraction * n)) if cfg.val_fraction > 0 else 0
        if n - n_val < cfg.batch_size:
            raise ValueError(
                f"{n} samples ({n - n_val} for training) are fewer than one batch "
                f"(batch_size={cfg.batch_size}); lower batch_size or add samples"
            )
        self.device_ = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.latent_dim_ = int(self.latent_dim)
        self.embed_dim_ = (
            (cfg.embed_dim or max(16, 2 * self.latent_dim_)) if cfg.use_cm else self.latent_dim_
        )
        self._prepare_u(u, u_types, u_names)
        self.config_ = cfg
        self.image_shape_ = tuple(int(s) for s in images.shape[1:])
        self.n_features_in_ = len(self.u_types_)
        threads = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        devices = [self.device_] if self.device_.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                self._build(cfg, self.image_shape_)
                if cfg.standardize_images:
                    self._set_input_stats(images)
                train(self, cfg, images, u, n_val, callback)
        finally:
            torch.set_num_threads(threads)
        return self

    def _set_input_stats(self, images: np.ndarray, max_rows: int = 2000) -> None:
        """Per-pixel mean and global std of the images (a fixed subsample when large)."""
        n = images.shape[0]
        rows = np.arange(n)
        if n > max_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, max_rows, replace=False))
        x = np.asarray(images[rows], dtype=np.float64)  # [r, C, H, W]
        shift = x.mean(0)
        scale = float((x - shift).std()) or 1.0
        self.encoder_.set_input_stats(torch.as_tensor(shift, dtype=torch.float32), scale)

    # ------------------------------------------------------------------ fitted use
    def _check_fitted(self) -> None:
        if not hasattr(self, "weighted_adjacency_"):
            raise ValueError("this CMCL instance is not fitted yet; call fit() or CMCL.load()")

    def _check_inputs(self, images: Any, u: Any) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        images = _as_numpy(images, "images")
        u = np.asarray(_as_numpy(u, "u"), dtype=np.float64)
        if u.ndim == 1:
            u = u[:, None]
        _check_images(images, self.image_shape_)
        if u.ndim != 2 or u.shape[1] != self.n_features_in_:
            raise ValueError(
                f"u must have shape [n, {self.n_features_in_}] (columns {self.u_names_}), "
                f"got {u.shape}"
            )
        if images.shape[0] != u.shape[0]:
            raise ValueError(f"images has {images.shape[0]} samples but u has {u.shape[0]}")
        if not np.all(np.isfinite(u)):
            raise ValueError("u contains NaN or inf values; impute or drop those rows")
        return images, u

    def encoder_module(self) -> torch.nn.Module:
        """Exportable encoder: forward(x [n, C, H, W], raw u [n, d]) -> z means [n, m].

        Includes the u standardisation; no data-dependent control flow (ONNX-traceable).
        """
        self._check_fitted()
        return self._encoder()

    def _encoder(self) -> EncoderModule:
        return EncoderModule(self.encoder_, self.u_features_, self.posterior_).eval()

    def decoder_module(self) -> torch.nn.Module:
        """Exportable decoder: forward(z [n, m]) -> images [n, C, H, W] in [0, 1]."""
        self._check_fitted()
        return DecoderModule(self.decoder_).eval()

    def transform(self, images: Any, u: Any) -> np.ndarray:
        """Posterior means E[z | x, u].

        Args:
            images: [n, C, H, W] in [0, 1].
            u: raw u [n, d].

        Returns:
            [n, m] float32 array.
        """
        images, u = self._check_inputs(images, u)
        return posterior_means(self, images, u)

    def _check_intervention(self, do: dict[str, float]) -> dict[int, float]:
        out = {}
        for name, value in do.items():
            if name not in self.u_names_:
                raise ValueError(f"cannot intervene on {name!r}: not one of {self.u_names_}")
            i = self.u_names_.index(name)
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"intervention value for {name!r} must be finite, got {value}")
            t = self.u_types_[i]
            if t == "binary" and value not in (
                self.u_shift_[i],
                self.u_shift_[i] + self.u_scale_[i],
            ):
                lo, hi = self.u_shift_[i], self.u_shift_[i] + self.u_scale_[i]
                raise ValueError(
                    f"binary {name!r} takes the values {lo:g} or {hi:g}, got {value:g}"
                )
            if t == "categorical" and value not in set(self.u_levels_[i].tolist()):
                raise ValueError(
                    f"categorical {name!r} has levels {self.u_levels_[i].tolist()}, got {value:g}"
                )
            out[i] = value
        return out

    @torch.no_grad()
    def intervene(self, images: Any, u: Any, do: dict[str, float]) -> np.ndarray:
        """Counterfactual images under do(u_i = value) (Appendix B, Eq. 15-16).

        Abduction-action-prediction with the additive-noise causal functions: z = E[z | x, u]
        of the factual sample; every descendant v of an intervened u (in topological order of
        the fitted DAG) becomes v' = v + f_v(V') - f_v(V); the image is decode(z'). A u with
        no z descendant (anti-causal or isolated) leaves z, hence the image, exactly as the
        decoding of the factual z (Eq. 16). Discrete u descendants keep their values (their
        noise cannot be abducted from a link function).

        Args:
            images: [n, C, H, W] in [0, 1].
            u: raw u [n, d] (factual values).
            do: {u_name: raw value}; binary and categorical values must be observed levels.

        Returns:
            [n, C, H, W] float32 images in [0, 1].
        """
        images, u = self._check_inputs(images, u)
        do_idx = self._check_intervention(do)
        d = self.n_features_in_
        W = self.weighted_adjacency_
        order = _topological_order(W != 0)
        changed = np.zeros(W.shape[0], dtype=bool)
        for i in do_idx:
            changed[i] = True
        dec = self.decoder_module()
        out_cols = self.dag_.out_start
        results = []
        for start in range(0, len(u), 256):
            idx = np.arange(start, min(start + 256, len(u)))
            z = posterior_means(self, images, u, idx)  # [b, m]
            zs = torch.as_tensor((z - self.z_shift_) / self.z_scale_, dtype=torch.float32)
            v = torch.cat([self._u_dag(u[idx]).cpu(), zs], 1).to(self.device_)  # [b, d + m]
            v_cf = v.clone()
            for i, value in do_idx.items():
                row = u[:1].copy()
                row[0, i] = value
                v_cf[:, i] = self._u_dag(row)[0, i]
            touched = changed.copy()
            for k in order:
                if touched[k] or not (W[:, k] != 0)[touched].any():
                    continue
                if k < d and self.u_types_[k] != "continuous":
                    continue
                f_fact = self.dag_(v)[:, out_cols[k]]  # [b]
                f_cf = self.dag_(v_cf)[:, out_cols[k]]  # [b]
                v_cf[:, k] = v[:, k] + f_cf - f_fact
                touched[k] = True
            delta = (v_cf[:, d:] - v[:, d:]).cpu().numpy() * self.z_scale_  # [b, m], 0 if untouched
            z_t = torch.as_tensor(z + delta, dtype=torch.float32, device=self.device_)
            results.append(dec(z_t).cpu().numpy())
        return np.concatenate(results, 0)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str) -> None:
        """Save to ``path`` with torch.save: a dict of tensors plus JSON metadata.

        Args:
            path: file path (e.g. ``model.pt``).
        """
        self._check_fitted()
        state = {}
        for name in self._module_names():
            mod = getattr(self, name)
            if mod is not None:
                for key, value in mod.state_dict().items():
                    state[f"{name}.{key}"] = value.detach().cpu()
        meta = {
            "format": "cmcl-1",
            "latent_dim": self.latent_dim_,
            "embed_dim": self.embed_dim_,
            "seed": self.seed,
            "config": self.config_.to_dict(),
            "image_shape": list(self.image_shape_),
            "u_types": self.u_types_,
            "u_names": self.u_names_,
            "u_shift": self.u_shift_.tolist(),
            "u_scale": self.u_scale_.tolist(),
            "u_levels": {str(i): lv.tolist() for i, lv in self.u_levels_.items()},
            "z_shift": self.z_shift_.tolist(),
            "z_scale": self.z_scale_.tolist(),
            "weighted_adjacency": self.weighted_adjacency_.tolist(),
            "raw_adjacency": self.raw_adjacency_.tolist(),
            "history": self.history_,
        }
        torch.save({"state": state, "meta": json.dumps(meta)}, path)

    @classmethod
    def load(cls, path: str, device: str | None = None) -> CMCL:
        """Load a model saved by :meth:`save` (``torch.load(weights_only=True)``).

        Args:
            path: file written by ``save``.
            device: torch device (CUDA when available, else CPU, when None).

        Returns:
            The fitted estimator.
        """
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(blob["meta"])
        if meta.get("format") != "cmcl-1":
            raise ValueError(f"{path} is not a CMCL model file (format {meta.get('format')!r})")
        cfg = CMCLConfig.from_dict(meta["config"])
        model = cls(latent_dim=meta["latent_dim"], config=cfg, device=device, seed=meta["seed"])
        model.device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.latent_dim_, model.embed_dim_ = meta["latent_dim"], meta["embed_dim"]
        model.config_ = cfg
        model.image_shape_ = tuple(meta["image_shape"])
        model.u_types_, model.u_names_ = meta["u_types"], meta["u_names"]
        model.n_features_in_ = len(model.u_types_)
        model.u_shift_ = np.array(meta["u_shift"])
        model.u_scale_ = np.array(meta["u_scale"])
        model.u_levels_ = {int(i): np.array(lv) for i, lv in meta["u_levels"].items()}
        model._build(cfg, model.image_shape_)
        W = np.array(meta["weighted_adjacency"])
        d = model.n_features_in_
        n_levels = [len(model.u_levels_.get(i, ())) or 1 for i in range(d)]
        n_levels += [1] * model.latent_dim_
        model.dag_ = NotearsMLP(
            model.u_types_ + ["continuous"] * model.latent_dim_, cfg.dag_hidden, W != 0, n_levels
        ).to(model.device_)
        state = blob["state"]
        for name in model._module_names():
            mod = getattr(model, name)
            if mod is not None:
                sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
                mod.load_state_dict(sub)
                mod.eval()
        model.z_shift_, model.z_scale_ = np.array(meta["z_shift"]), np.array(meta["z_scale"])
        model.weighted_adjacency_ = W
        model.raw_adjacency_ = np.array(meta["raw_adjacency"])
        model.history_ = meta["history"]
        model.edges_ = _edges(W, model.u_names_, model.latent_dim_)
        return model


def _edges(W: np.ndarray, u_names: list[str], m: int) -> list[tuple[str, str, float]]:
    """[(source, target, weight)] of the non-zero entries of W, strongest first."""
    names = list(u_names) + [f"z{j}" for j in range(m)]
    src, dst = np.nonzero(W)
    edges = [(names[i], names[j], float(W[i, j])) for i, j in zip(src, dst, strict=True)]
    return sorted(edges, key=lambda e: -abs(e[2]))


def _topological_order(B: np.ndarray) -> list[int]:
    """Kahn's algorithm on an acyclic adjacency (B[i, j] means i -> j)."""
    indeg = B.sum(0).astype(int)
    ready = [k for k in range(B.shape[0]) if indeg[k] == 0]
    order = []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for j in np.flatnonzero(B[k]):
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(int(j))
    return order


def _posterior_hidden(cfg: CMCLConfig, m: int) -> tuple[int, ...]:
    """Posterior MLP widths: ``CMCLConfig.posterior_hidden``, or 3 x max(50, 6 m) when None."""
    return cfg.posterior_hidden or (max(50, 6 * m),) * 3
