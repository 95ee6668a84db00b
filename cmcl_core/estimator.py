"""The CMCL estimator: joint causal representation and structure learning (the paper).

``CMCL(latent_dim=m).fit(images, u, u_types, u_names)`` validates its inputs, builds a
:class:`~cmcl_core.network.CMCLNetwork`, trains it (:func:`~cmcl_core.training.fit_network`,
Algorithm 1) and keeps the result in attributes ending in ``_``, scikit-learn style.
Interventions ``do(u_i = v)`` follow Appendix B (abduction through the learned additive-noise
causal functions, then the decoder).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from cmcl_core.align import align_to_template, groupwise_align
from cmcl_core.config import CMCLConfig
from cmcl_core.device import Cohort, torch_settings
from cmcl_core.edges import (
    Edge,
    LatentRole,
    Orientation,
    Role,
    Stability,
    edge_table,
    knowledge_mask,
    latent_roles,
)
from cmcl_core.graph import bipartite_mask, edge_list, node_names, topological_order
from cmcl_core.intensity import IntensityMap
from cmcl_core.network import INFERENCE_BATCH, CMCLNetwork
from cmcl_core.structure import StructureData
from cmcl_core.training import EpochCallback, fit_network
from cmcl_core.variables import UEncoding, VariableType

_CHUNK = 4096  # rows per chunk when scanning (possibly memory-mapped) image arrays
_FORMAT = "cmcl-2"  # model files: the network's state_dict + JSON metadata
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(CMCLConfig))


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


def _check_u(u: Any, n: int, d: int | None = None) -> np.ndarray:
    """u as a finite float64 [n, d] array (a 1-D u is one column)."""
    u = np.asarray(_as_numpy(u, "u"), dtype=np.float64)
    if u.ndim == 1:
        u = u[:, None]
    if u.ndim != 2 or u.shape[1] < 1 or (d is not None and u.shape[1] != d):
        want = "[n, d] with d >= 1" if d is None else f"[n, {d}]"
        raise ValueError(f"u must be a 2-D array {want}, got shape {u.shape}")
    if u.shape[0] != n:
        raise ValueError(f"images has {n} samples but u has {u.shape[0]}: rows must match")
    if not np.all(np.isfinite(u)):
        raise ValueError("u contains NaN or inf values; impute or drop those rows")
    return u


def _role_indices(roles: Mapping[str, str] | None, names: Sequence[str]) -> dict[int, str]:
    """``{"covid": "cause"}`` -> ``{column index: role}``, naming any unknown name or role."""
    out = {}
    for name, role in (roles or {}).items():
        if name not in names:
            raise ValueError(
                f"u_roles names {name!r}, which is not one of the u variables {list(names)}; "
                "fix the name or drop it"
            )
        if role not in {r.value for r in Role}:
            raise ValueError(
                f"u_roles gives {name!r} the role {role!r}; use 'cause' (precedes imaging) or "
                "'effect' (follows imaging)"
            )
        out[list(names).index(name)] = str(role)
    return out


def _default_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class CMCL:
    """Cross-Modal Variational Causal representation and structure Learning (the paper).

    Scikit-learn style: the constructor only stores its arguments (``get_params`` /
    ``set_params`` / ``sklearn.base.clone`` work); ``fit`` (re)builds and re-seeds everything,
    so fitting twice equals fitting once on the second data.

    Args:
        latent_dim: m, the number of causal latent variables z.
        device: torch device; CUDA when available, else CPU, when None.
        seed: seed of all randomness in ``fit`` (runs are reproducible on CPU).
        Every other argument is a model setting, documented on
        :class:`~cmcl_core.config.CMCLConfig` (same name, same default).

    Attributes (after ``fit`` or ``load``):
        network_: the trained :class:`~cmcl_core.network.CMCLNetwork`.
        config_: the settings as a validated :class:`~cmcl_core.config.CMCLConfig`.
        encoding_: how u enters the model (:class:`~cmcl_core.variables.UEncoding`).
        u_names_, u_types_: names and types of the d observed variables.
        weighted_adjacency_: ``[(d+m), (d+m)]`` final graph over ``[u..., z...]``,
            ``W[i, j] != 0`` meaning ``i -> j``.
        raw_adjacency_: the jointly trained DAG's adjacency before the final solve.
        edges_: ``[(source, target, weight)]`` of the final graph, strongest first.
        z_shift_, z_scale_: statistics of the posterior means (the DAG sees standardised z).
        image_effect_: ``[m]`` how much the decoded image changes per standard deviation of
            each latent; a latent below ``edges.UNUSED_SCALE`` of the largest is ``unused`` and
            has no edge in the final graph (``latent_roles_``).
        history_: one record per training epoch.
    """

    def __init__(
        self,
        latent_dim: int = 5,
        *,
        embed_dim: int | None = None,
        base_channels: int = 16,
        max_channels: int = 64,
        min_spatial: int = 4,
        posterior_hidden: tuple[int, ...] | None = None,
        prior_hidden: tuple[int, ...] = (50, 50),
        prior_mean: bool = True,
        posterior_uses_u: bool = True,
        standardize_images: bool = True,
        align: str = "none",
        intensity: str = "none",
        intensity_group: str | None = None,
        he_init: bool = True,
        likelihood: str = "gaussian",
        gaussian_sigma: float = 0.1,
        decoder_sparsity: float = 0.0,
        sparsity_samples: int = 8,
        sparsity_dims: int = 4,
        rotate_every: int = 5,
        rotate_until: int = 40,
        rotation: str = "orthogonal",
        rotation_u_weight: float = 1.0,
        dag_hidden: tuple[int, ...] = (10,),
        cr_hidden: tuple[int, ...] = (10, 10, 10),
        use_cm: bool = True,
        use_cr: bool = True,
        allow_all_edges: bool = False,
        latent_edges: bool = False,
        beta_embed: float = 0.1,
        beta_cm: float = 0.1,
        lambda_dag: float = 1.0,
        lambda1: float = 0.05,
        lambda1_joint: float = 0.0001,
        lambda2: float = 0.01,
        lambda_cr: float = 0.1,
        embed_recon_fraction: float = 0.125,
        cr_every: int = 16,
        cr_samples: int = 16,
        lr: float | None = None,
        lr_dag: float = 0.01,
        lr_cr: float = 0.001,
        batch_size: int = 32,
        epochs: int = 60,
        min_epochs: int = 30,
        patience: int = 8,
        min_delta: float = 0.0001,
        val_fraction: float = 0.1,
        dag_warmup_epochs: int = 5,
        rho_init: float = 1.0,
        rho_mult: float = 1.5,
        rho_max: float = 100.0,
        h_shrink: float = 0.25,
        h_tol: float = 1e-06,
        acyclicity: str = "expm",
        w_threshold: float = 0.3,
        refit_dag: bool = True,
        orient_edges: bool = True,
        refit_dag_max_samples: int = 2000,
        num_threads: int | None = None,
        precision: str = "fp32",
        deterministic: bool = False,
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        params = dict(locals())
        del params["self"]
        for name, value in params.items():  # stored as given (scikit-learn's contract)
            setattr(self, name, value)

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        return ["latent_dim", *_CONFIG_FIELDS, "device", "seed"]

    @classmethod
    def from_config(
        cls, config: CMCLConfig, latent_dim: int = 5, device: str | None = None, seed: int = 0
    ) -> CMCL:
        """An estimator with the settings of ``config``."""
        settings = {name: getattr(config, name) for name in _CONFIG_FIELDS}
        return cls(latent_dim, device=device, seed=seed, **settings)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments by name (``deep`` is accepted for scikit-learn)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> CMCL:
        """Change constructor arguments; an unknown name is a ValueError."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(
                f"unknown CMCL parameter(s) {unknown}; valid: {sorted(self._param_names())}"
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = CMCL()
        changed = {k: v for k, v in self.get_params().items() if getattr(defaults, k) != v}
        return "CMCL(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    def config(self) -> CMCLConfig:
        """The model settings as a validated, frozen :class:`CMCLConfig`."""
        return CMCLConfig(**{name: getattr(self, name) for name in _CONFIG_FIELDS})

    # ------------------------------------------------------------------ training
    def fit(
        self,
        images: Any,
        u: Any,
        u_types: Sequence[str] | None = None,
        u_names: Sequence[str] | None = None,
        callback: EpochCallback | None = None,
        u_roles: Mapping[str, str] | None = None,
    ) -> CMCL:
        """Fit the model (Algorithm 1).

        Args:
            images: [n, C, H, W] floats in [0, 1] (numpy, np.memmap, or torch); read per batch.
            u: [n, d] structured variables (raw values).
            u_types: ``continuous`` / ``binary`` / ``categorical`` per column (binary when a
                column has two values, continuous otherwise, when None).
            u_names: column names (``u0..`` when None).
            callback: called as ``callback(epoch, record)`` after each epoch.
            u_roles: background knowledge, ``{name: "cause" | "effect"}``: a cause precedes
                imaging and gets no incoming edge, an effect follows it and gets no outgoing
                edge (hard constraints in the joint DAG, the final solve and the orientation).

        Returns:
            self.

        Raises:
            ValueError: on malformed input (shapes, NaNs, types, too few samples, unknown
                names or roles).
        """
        cfg = self.config()
        images = _as_numpy(images, "images")
        _check_images(images)
        u = _check_u(u, images.shape[0])
        if not isinstance(self.latent_dim, int | np.integer) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
        n = u.shape[0]
        n_val = int(round(cfg.val_fraction * n)) if cfg.val_fraction > 0 else 0
        if n - n_val < cfg.batch_size:
            raise ValueError(
                f"{n} samples ({n - n_val} for training) are fewer than one batch "
                f"(batch_size={cfg.batch_size}); lower batch_size or add samples"
            )
        m = int(self.latent_dim)
        encoding = UEncoding.fit(u, u_types, u_names, latent_dim=m)
        roles = _role_indices(u_roles, encoding.names)
        d = encoding.d
        knowledge = knowledge_mask(d, m, roles)
        intensity = _fit_intensity(cfg, images, u, encoding)
        if intensity is not None:
            images = intensity.apply(images, _groups(cfg, u, encoding))
        template = None
        if cfg.align != "none":  # after every check on the arguments: registration takes seconds
            images, _, template = groupwise_align(images)
        base = ~np.eye(d + m, dtype=bool) if cfg.allow_all_edges else bipartite_mask(d, m)
        if cfg.latent_edges:
            base[d:, d:] = ~np.eye(m, dtype=bool)  # z - z
        device = _default_device(self.device)
        image_shape = tuple(int(s) for s in images.shape[1:])
        with (
            torch_settings(device, cfg.num_threads, cfg.deterministic),
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            torch.manual_seed(self.seed)
            net = CMCLNetwork(cfg, m, image_shape, encoding, base & knowledge).to(device)
            if cfg.standardize_images:
                net.set_input_stats(images, self.seed)
            cohort = Cohort.for_device(images, device, cfg.precision)
            result = fit_network(net, cfg, cohort, u, self.seed, callback)
        self._set_fitted(net, cfg, image_shape, device)
        self.intensity_map_ = intensity
        self.align_template_ = template
        self.u_roles_ = {encoding.names[i]: role for i, role in roles.items()}
        self.knowledge_ = knowledge
        self.z_shift_, self.z_scale_ = result.z_shift, result.z_scale
        self.image_effect_ = result.image_effect
        self.raw_adjacency_ = result.raw_adjacency
        self.weighted_adjacency_ = result.weighted_adjacency
        self.structure_data_: StructureData | None = result.structure
        self.history_ = result.history
        self.edges_ = edge_list(self.weighted_adjacency_, self.node_names_)
        self.set_stability(None)
        return self

    def fit_arguments(self) -> dict[str, Any]:
        """The keyword arguments that describe ``u`` to ``fit`` (to refit on other rows)."""
        self._check_fitted()
        return {"u_types": self.u_types_, "u_names": self.u_names_, "u_roles": self.u_roles_}

    def set_stability(self, stability: Stability | None) -> CMCL:
        """Annotate the edges with resampling frequencies (``cmcl_core.stability``).

        Sets ``stability_``, ``edge_table_`` (one :class:`~cmcl_core.edges.Edge` per row:
        every edge of the final graph and every adjacency at least half the resamples have)
        ``orientation_`` (``(source, target) -> Orientation``) and ``latent_roles_``
        (``z_j -> LatentRole``: on a clinical edge, a nuisance factor, or unused).
        """
        self._check_fitted()
        p = len(self.node_names_)
        if stability is not None and stability.adjacency.shape != (p, p):
            raise ValueError(
                f"stability is over {stability.adjacency.shape[0]} nodes; this model has {p}"
            )
        self.stability_ = stability
        types = self.u_types_ + [VariableType.CONTINUOUS.value] * self.latent_dim_
        self.edge_table_: list[Edge] = edge_table(
            self.weighted_adjacency_,
            self.node_names_,
            types,
            self.knowledge_,
            stability,
            n_clinical=len(self.u_names_),
        )
        self.orientation_: dict[tuple[str, str], Orientation] = {
            (e.source, e.target): e.orientation for e in self.edge_table_
        }
        self.latent_roles_: dict[str, LatentRole] = latent_roles(
            self.edge_table_, self.node_names_[len(self.u_names_) :], self.image_effect_
        )
        return self

    def _set_fitted(
        self,
        net: CMCLNetwork,
        cfg: CMCLConfig,
        image_shape: tuple[int, ...],
        device: torch.device,
    ) -> None:
        """The attributes that describe the network and its data (fit and load)."""
        self.network_ = net
        self.config_ = cfg
        self.encoding_ = net.encoding
        self.device_ = device
        self.latent_dim_ = net.latent_dim
        self.embed_dim_ = net.embed_dim
        self.image_shape_ = tuple(image_shape)
        self.u_types_ = list(net.encoding.types)
        self.u_names_ = list(net.encoding.names)
        self.n_features_in_ = net.encoding.d
        self.node_names_ = node_names(self.u_names_, self.latent_dim_)

    # ------------------------------------------------------------------ fitted use
    def _check_fitted(self) -> None:
        if not hasattr(self, "weighted_adjacency_"):
            raise ValueError("this CMCL instance is not fitted yet; call fit() or CMCL.load()")

    def _check_inputs(self, images: Any, u: Any) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        images = _as_numpy(images, "images")
        _check_images(images, self.image_shape_)
        u = _check_u(u, images.shape[0], self.n_features_in_)
        return self.prepare_images(images, u), u

    def prepare_images(self, images: Any, u: Any) -> np.ndarray:
        """The images as the encoder expects them (``encoder_module`` does neither step):
        intensity-standardised when ``intensity`` is on (by ``u``'s group column), then
        registered to the training cohort's template when ``align`` is on."""
        self._check_fitted()
        images = _as_numpy(images, "images")
        if self.intensity_map_ is not None:
            u = np.asarray(u, np.float64)
            images = self.intensity_map_.apply(images, _groups(self.config_, u, self.encoding_))
        return self.align_images(images)

    def align_images(self, images: Any) -> np.ndarray:
        """Images registered to the training cohort's template when ``align`` is on, else
        unchanged (the second step of :meth:`prepare_images`)."""
        self._check_fitted()
        images = _as_numpy(images, "images")
        if self.align_template_ is None:
            return images
        return align_to_template(images, self.align_template_)

    def encoder_module(self) -> torch.nn.Module:
        """Exportable encoder: forward(x [n, C, H, W], raw u [n, d]) -> z means [n, m].

        Includes the u standardisation; no data-dependent control flow (ONNX-traceable).
        """
        self._check_fitted()
        return self.network_.encoder_module()

    def decoder_module(self) -> torch.nn.Module:
        """Exportable decoder: forward(z [n, m]) -> images [n, C, H, W] in [0, 1]."""
        self._check_fitted()
        return self.network_.decoder_module()

    def transform(self, images: Any, u: Any) -> np.ndarray:
        """Posterior means E[z | x, u].

        Args:
            images: [n, C, H, W] in [0, 1].
            u: raw u [n, d].

        Returns:
            [n, m] float32 array.
        """
        images, u = self._check_inputs(images, u)
        return self.network_.posterior_means(images, u)

    def _check_intervention(self, do: dict[str, float]) -> dict[int, float]:
        out = {}
        enc = self.encoding_
        for name, value in do.items():
            if name not in self.u_names_:
                raise ValueError(f"cannot intervene on {name!r}: not one of {self.u_names_}")
            i = self.u_names_.index(name)
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"intervention value for {name!r} must be finite, got {value}")
            t = self.u_types_[i]
            if t == VariableType.BINARY and value not in enc.low_high(i):
                lo, hi = enc.low_high(i)
                raise ValueError(
                    f"binary {name!r} takes the values {lo:g} or {hi:g}, got {value:g}"
                )
            if t == VariableType.CATEGORICAL and value not in set(enc.levels[i].tolist()):
                raise ValueError(
                    f"categorical {name!r} has levels {enc.levels[i].tolist()}, got {value:g}"
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
        net, d = self.network_, self.n_features_in_
        W = self.weighted_adjacency_
        order = topological_order(W != 0)
        changed = np.zeros(W.shape[0], dtype=bool)
        changed[list(do_idx)] = True
        dec = net.decoder_module()
        out_cols = net.dag.out_start
        results = []
        for start in range(0, len(u), INFERENCE_BATCH):
            idx = np.arange(start, min(start + INFERENCE_BATCH, len(u)))
            z = net.posterior_means(images, u, idx)  # [b, m]
            zs = torch.as_tensor((z - self.z_shift_) / self.z_scale_, dtype=torch.float32)
            v = torch.cat([net.dag_inputs(u[idx]).cpu(), zs], 1).to(self.device_)  # [b, d + m]
            v_cf = v.clone()
            for i, value in do_idx.items():
                row = u[:1].copy()
                row[0, i] = value
                v_cf[:, i] = net.dag_inputs(row)[0, i]
            touched = changed.copy()
            for k in order:
                if touched[k] or not (W[:, k] != 0)[touched].any():
                    continue
                if k < d and self.u_types_[k] != VariableType.CONTINUOUS:
                    continue
                f_fact = net.dag(v)[:, out_cols[k]]  # [b]
                f_cf = net.dag(v_cf)[:, out_cols[k]]  # [b]
                v_cf[:, k] = v[:, k] + f_cf - f_fact
                touched[k] = True
            delta = (v_cf[:, d:] - v[:, d:]).cpu().numpy() * self.z_scale_  # [b, m], 0 if untouched
            z_t = torch.as_tensor(z + delta, dtype=torch.float32, device=self.device_)
            results.append(dec(z_t).cpu().numpy())
        return np.concatenate(results, 0)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str) -> None:
        """Save to ``path`` with torch.save: the network's tensors plus JSON metadata.

        Args:
            path: file path (e.g. ``model.pt``).
        """
        self._check_fitted()
        state = {k: v.detach().cpu() for k, v in self.network_.state_dict().items()}
        meta = {
            "format": _FORMAT,
            "latent_dim": self.latent_dim_,
            "seed": self.seed,
            "config": self.config_.to_dict(),
            "image_shape": list(self.image_shape_),
            **self.encoding_.to_dict(),
            "z_shift": self.z_shift_.tolist(),
            "z_scale": self.z_scale_.tolist(),
            "image_effect": self.image_effect_.tolist(),
            "weighted_adjacency": self.weighted_adjacency_.tolist(),
            "raw_adjacency": self.raw_adjacency_.tolist(),
            "u_roles": self.u_roles_,
            "intensity": None if self.intensity_map_ is None else self.intensity_map_.to_dict(),
            "align_template": None
            if self.align_template_ is None
            else self.align_template_.tolist(),
            "stability": None if self.stability_ is None else _stability_dict(self.stability_),
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
            The fitted estimator (without ``structure_data_``, which is not saved).
        """
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(blob["meta"])
        state = blob["state"]
        if meta.get("format") == "cmcl-1":  # module names ended in "_" ("encoder_.conv...")
            state = {k.replace("_.", ".", 1): v for k, v in state.items()}
        elif meta.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a CMCL model file (format {meta.get('format')!r})")
        cfg = CMCLConfig.from_dict(meta["config"])
        model = cls.from_config(cfg, meta["latent_dim"], device=device, seed=meta["seed"])
        W = np.array(meta["weighted_adjacency"])
        encoding = UEncoding.from_dict(meta)
        dev = _default_device(device)
        net = CMCLNetwork(cfg, meta["latent_dim"], tuple(meta["image_shape"]), encoding, W != 0)
        net.load_state_dict(state)
        model._set_fitted(net.to(dev).eval(), cfg, meta["image_shape"], dev)
        model.z_shift_, model.z_scale_ = np.array(meta["z_shift"]), np.array(meta["z_scale"])
        # files written before the image effect was stored: the posterior means' spread
        model.image_effect_ = np.array(meta.get("image_effect", meta["z_scale"]))
        model.weighted_adjacency_ = W
        model.raw_adjacency_ = np.array(meta["raw_adjacency"])
        model.history_ = meta["history"]
        intensity = meta.get("intensity")
        model.intensity_map_ = None if intensity is None else IntensityMap.from_dict(intensity)
        template = meta.get("align_template")
        model.align_template_ = None if template is None else np.array(template, np.float32)
        model.edges_ = edge_list(W, model.node_names_)
        model.u_roles_ = dict(meta.get("u_roles") or {})
        roles = _role_indices(model.u_roles_, model.u_names_)
        model.knowledge_ = knowledge_mask(model.n_features_in_, model.latent_dim_, roles)
        model.structure_data_ = None
        stab = meta.get("stability")
        model.set_stability(None if stab is None else _stability_from_dict(stab))
        return model


def _stability_dict(s: Stability) -> dict[str, Any]:
    return {
        "adjacency": s.adjacency.tolist(),
        "forward": s.forward.tolist(),
        "weight": s.weight.tolist(),
        "resamples": s.resamples,
        "level": s.level,
    }


def _stability_from_dict(d: dict[str, Any]) -> Stability:
    arrays = {k: np.array(d[k]) for k in ("adjacency", "forward", "weight")}
    return Stability(**arrays, resamples=int(d["resamples"]), level=str(d["level"]))


def _fit_intensity(
    cfg: CMCLConfig, images: np.ndarray, u: np.ndarray, encoding: UEncoding
) -> IntensityMap | None:
    """The intensity standardisation of ``cfg.intensity`` fitted on the training images."""
    if cfg.intensity == "none":
        return None
    return IntensityMap.fit(images, cfg.intensity, _groups(cfg, u, encoding))


def _groups(cfg: CMCLConfig, u: np.ndarray, encoding: UEncoding) -> np.ndarray | None:
    """``[n]`` codes of the ``intensity_group`` column (``intensity: group``), else None.

    Raises:
        ValueError: the column is not one of ``u``'s or is not categorical.
    """
    if cfg.intensity != "group":
        return None
    name = cfg.intensity_group
    if name not in encoding.names:
        raise ValueError(
            f"intensity_group {name!r} is not a u column (u has {list(encoding.names)}); "
            "name the site or scanner column, or use intensity: image"
        )
    i = encoding.names.index(name)
    if encoding.types[i] != VariableType.CATEGORICAL:
        raise ValueError(
            f"intensity_group {name!r} is {encoding.types[i]}, not categorical; declare it "
            "categorical (one level per site or scanner) or use intensity: image"
        )
    return u[:, i]
