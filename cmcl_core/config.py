"""Settings of the CMCL estimator: one frozen, validated, JSON-able dataclass.

The pipeline passes the YAML ``model:`` mapping through :meth:`CMCLConfig.from_dict`, which
rejects unknown keys, so a typo in a config file is an error rather than a silent default.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

_TUPLE_FIELDS = ("posterior_hidden", "prior_hidden", "dag_hidden", "cr_hidden")


def _widths(value: Any) -> tuple[int, ...] | None:
    """A sequence of integers >= 1 as a tuple (empty: no hidden layer), else None."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return None
    try:
        widths = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return widths if all(w >= 1 for w in widths) else None


@dataclass(frozen=True)
class CMCLConfig:
    """Settings of :class:`cmcl_core.estimator.CMCL` (Eq. 14, Algorithm 1).

    Each default is explained, with the figures that chose it, in ``docs/method.md``
    ("Why the defaults").

    Attributes:
        embed_dim: size of the embedding ``z0`` (Eq. 5-6); None means ``max(16, 2 m)``. Set to
            m when ``use_cm`` is off.
        base_channels: channels of the first conv stage, doubling per down-sampling stage
            (Appendix D.3: 16/32/64).
        max_channels: cap on the channels of any stage.
        min_spatial: down-sample (stride 2) until the feature map is this many pixels wide.
        posterior_hidden: hidden widths of the posterior MLP q(z | z0, u); None means three
            layers of ``max(50, 6 m)`` (Appendix D.3's 3 x 50 up to m = 8, wider above).
        prior_hidden: hidden widths of the conditional prior network p(z | u) (Eq. 18).
        prior_mean: the prior's mean depends on u as well as its variance (Eq. 18); False gives
            iVAE's zero-mean reference prior (``nets.ConditionalPrior``).
        posterior_uses_u: feed u to the posterior, q(z | z0, u) (Eq. 17); False gives q(z | z0).
        standardize_images: the encoder subtracts the mean training image and divides by the
            global pixel std (kept as buffers of the encoder).
        align: ``"none"`` or ``"similarity"``: register every image to the cohort's template
            (shift, rotation, scale; ``cmcl_core.align``) before the encoder sees it, in ``fit``
            and in every later use; for images whose positioning varies (radiographs).
        intensity: ``"none"``, ``"image"`` or ``"group"``: map every image's brightness and
            contrast onto the cohort's (``cmcl_core.intensity``) before registration and the
            encoder, in ``fit`` and in every later use; ``group`` uses one map per level of
            the categorical ``u`` column ``intensity_group`` (site, scanner), ``image`` each
            image's own statistics. For cohorts from several scanners. Like ``align``, it
            holds the prepared training images in memory (a memmap input is copied).
        intensity_group: the categorical ``u`` column whose levels ``group`` standardises.
        he_init: He-normal init of the conv encoder/decoder (PyTorch's default init let the
            posterior of z0 collapse).
        likelihood: ``"gaussian"`` (fixed pixel std ``gaussian_sigma``) or ``"bernoulli"``
            (cross-entropy, Appendix D.3) reconstruction term of both ELBOs.
        gaussian_sigma: pixel standard deviation of the Gaussian likelihood.
        decoder_sparsity: weight of an optional per-step L1 penalty on the decoder's Jacobian
            (``losses.decoder_jacobian_l1``); 0 (off), as the rotations minimise the same norm.
        sparsity_samples: batch rows at which each step estimates that penalty.
        sparsity_dims: random latent directions per step for that penalty.
        rotate_every: every this many epochs (up to ``rotate_until``) rotate z to the basis in
            which the decoder's Jacobian is sparsest (``cmcl_core.rotation``); 0 turns it off.
            Needs the CM module.
        rotate_until: last epoch (1-based) after which a scheduled rotation may happen. With
            ``refit_dag`` one more rotation comes right before the final DAG solve.
        rotation: ``"orthogonal"`` (whitened latents, the sparsest rotation) or ``"oblique"``
            (unit-variance latents that may correlate, the sparsest unit-row map;
            ``rotation.sparsest_oblique``), for latents that share a cause the clinical
            table does not hold (body habitus moving several structures together).
        rotation_u_weight: weight of a second term of the rotation's criterion: the L1 norm of
            the correlations between the clinical variables (``UFeatures``) and the latents,
            relative to its value before the rotation (the Jacobian's L1 norm likewise), so a
            basis in which each clinical variable correlates with few latents is preferred;
            for latents that share pixels, where the Jacobian alone prefers a mixed basis
            (``benchmarks/rotation_overlap.py``). 0: the Jacobian alone.
        dag_hidden: hidden widths of each NOTEARS-MLP (the NOTEARS reference's one layer of 10;
            Appendix D.3 says 3 x 10).
        cr_hidden: hidden widths of the CR classifier D (Appendix D.3: 3 x 10).
        use_cm: train the causal representation module (Eq. 7); off (an ablation): z = z0.
        use_cr: train the counterfactual contrastive regulariser (Eq. 13).
        allow_all_edges: allow u-u and z-z edges; the default is the paper's bipartite graph.
        latent_edges: allow z-z edges as well as u-z ones: latents that co-vary beyond ``u``
            (a shared cause no clinical variable records, e.g. body habitus) are then linked to
            each other instead of through a clinical variable. Their rows are always
            ``undetermined`` and they make no latent ``clinical``.
        beta_embed: weight of the KL term of the embedding ELBO (Eq. 6).
        beta_cm: weight of the KL term of the causal representation ELBO (Eq. 19).
        lambda_dag: weight of L_DAG (Eq. 10) in the joint objective (Eq. 14).
        lambda1: L1 weight of the first NOTEARS layer (Eq. 10, alpha_1) in the final DAG solve.
        lambda1_joint: the same weight during joint Adam training (much smaller: Adam
            normalises gradients, so a larger L1 shrinks every edge before it forms).
        lambda2: L2 weight on all NOTEARS layers.
        lambda_cr: weight of the CR loss (Eq. 13) in the joint objective (Eq. 14).
        embed_recon_fraction: fraction of each batch on which the embedding's reconstruction
            term is computed (keeps an epoch's cost near a plain VAE's).
        cr_every: run the CR step every this many optimiser steps.
        cr_samples: samples of the batch used by each CR step.
        lr: Adam learning rate of the encoder, decoder, posterior and prior; None means
            ``min(3e-3, 0.014 / m)`` (:meth:`learning_rate`).
        lr_dag: Adam learning rate of the NOTEARS-MLP.
        lr_cr: Adam learning rate of the classifier D.
        batch_size: minibatch size.
        epochs: maximum number of epochs.
        min_epochs: no early stopping before this epoch.
        patience: stop after this many epochs without improvement of the validation loss.
        min_delta: relative improvement of the monitored loss that resets the patience.
        val_fraction: held-out fraction for early stopping (0 disables early stopping).
        dag_warmup_epochs: epochs of representation learning before the DAG loss reaches z.
        rho_init: initial augmented-Lagrangian penalty.
        rho_mult: factor on rho (once per epoch) when h(W) did not shrink enough; mild and
            capped, since one Adam epoch does not solve the inner problem as L-BFGS does.
        rho_max: cap on rho.
        h_shrink: rho grows when ``h_new > h_shrink * h_old`` (NOTEARS: 0.25).
        h_tol: h(W) below which the joint graph counts as acyclic.
        acyclicity: ``"expm"`` (NOTEARS trace-exponential) or ``"logdet"`` (DAGMA).
        w_threshold: edges with |W| below this are dropped (NOTEARS: 0.3).
        refit_dag: after joint training, re-solve the DAG on [u, posterior means of z] to
            convergence (``cmcl_core.structure``) and report that graph.
        orient_edges: after that solve, reverse the edges whose reversal raises the
            likelihood (``cmcl_core.orientation``). Needs ``refit_dag``.
        refit_dag_max_samples: subsample for that solve (it is super-linear in n).
        num_threads: torch CPU threads during fit (None: torch's default).
        precision: ``"fp32"``, or mixed precision ``"bf16"`` / ``"fp16"`` (autocast on the
            representation modules; a gradient scaler for fp16); the DAG, the final structure
            solve and the orientation stay in float32 (``cmcl_core.device``).
        deterministic: on CUDA, ask for deterministic kernels at a cost in speed (CPU training
            is deterministic anyway); GPU runs are seeded either way.
    """

    embed_dim: int | None = None
    base_channels: int = 16
    max_channels: int = 64
    min_spatial: int = 4
    posterior_hidden: tuple[int, ...] | None = None
    prior_hidden: tuple[int, ...] = (50, 50)
    prior_mean: bool = True
    posterior_uses_u: bool = True
    standardize_images: bool = True
    align: str = "none"
    intensity: str = "none"
    intensity_group: str | None = None
    he_init: bool = True
    likelihood: str = "gaussian"
    gaussian_sigma: float = 0.1
    decoder_sparsity: float = 0.0
    sparsity_samples: int = 8
    sparsity_dims: int = 4
    rotate_every: int = 5
    rotate_until: int = 40
    rotation: str = "orthogonal"
    rotation_u_weight: float = 1.0
    dag_hidden: tuple[int, ...] = (10,)
    cr_hidden: tuple[int, ...] = (10, 10, 10)
    use_cm: bool = True
    use_cr: bool = True
    allow_all_edges: bool = False
    latent_edges: bool = False
    beta_embed: float = 0.1
    beta_cm: float = 0.1
    lambda_dag: float = 1.0
    lambda1: float = 0.05
    lambda1_joint: float = 1e-4
    lambda2: float = 0.01
    lambda_cr: float = 0.1
    embed_recon_fraction: float = 0.125
    cr_every: int = 16
    cr_samples: int = 16
    lr: float | None = None
    lr_dag: float = 1e-2
    lr_cr: float = 1e-3
    batch_size: int = 32
    epochs: int = 60
    min_epochs: int = 30
    patience: int = 8
    min_delta: float = 1e-4
    val_fraction: float = 0.1
    dag_warmup_epochs: int = 5
    rho_init: float = 1.0
    rho_mult: float = 1.5
    rho_max: float = 100.0
    h_shrink: float = 0.25
    h_tol: float = 1e-6
    acyclicity: str = "expm"
    w_threshold: float = 0.3
    refit_dag: bool = True
    orient_edges: bool = True
    refit_dag_max_samples: int = 2000
    num_threads: int | None = None
    precision: str = "fp32"
    deterministic: bool = False

    def __post_init__(self) -> None:
        problems = self._type_problems()
        if problems:  # range checks below would fail on the wrong type with a bare TypeError
            raise ValueError("Invalid CMCLConfig: " + "; ".join(problems) + ".")
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if value is None and name == "posterior_hidden":  # width from latent_dim at fit
                continue
            widths = _widths(value)
            if widths is None:
                problems.append(f"{name} must be a list of layer widths >= 1, got {value!r}")
            else:
                object.__setattr__(self, name, widths)
        if self.embed_dim is not None and self.embed_dim < 1:
            problems.append("embed_dim must be >= 1")
        if self.batch_size < 2:
            problems.append("batch_size must be >= 2")
        if self.epochs < 1:
            problems.append("epochs must be >= 1")
        if not 0.0 <= self.val_fraction < 0.5:
            problems.append("val_fraction must be in [0, 0.5)")
        if not 0.0 < self.embed_recon_fraction <= 1.0:
            problems.append("embed_recon_fraction must be in (0, 1]")
        if self.acyclicity not in ("expm", "logdet"):
            problems.append("acyclicity must be 'expm' or 'logdet'")
        if self.cr_every < 1 or self.cr_samples < 2:
            problems.append("cr_every must be >= 1 and cr_samples >= 2")
        if min(1.0 if self.lr is None else self.lr, self.lr_dag, self.lr_cr) <= 0:
            problems.append("learning rates must be > 0")
        if self.likelihood not in ("bernoulli", "gaussian"):
            problems.append("likelihood must be 'bernoulli' or 'gaussian'")
        if self.align not in ("none", "similarity"):
            problems.append(f"align must be 'none' or 'similarity', got {self.align!r}")
        if self.intensity not in ("none", "image", "group"):
            problems.append(f"intensity must be 'none', 'image' or 'group', got {self.intensity!r}")
        if (self.intensity == "group") != (self.intensity_group is not None):
            problems.append(
                "intensity_group names the categorical u column (e.g. site) exactly when "
                "intensity is 'group'"
            )
        if self.gaussian_sigma <= 0:
            problems.append("gaussian_sigma must be > 0")
        if self.rotation not in ("orthogonal", "oblique"):
            problems.append(f"rotation must be 'orthogonal' or 'oblique', got {self.rotation!r}")
        if not (self.rotation_u_weight >= 0 and math.isfinite(self.rotation_u_weight)):
            problems.append(f"rotation_u_weight must be >= 0, got {self.rotation_u_weight!r}")
        if self.rotate_every < 0 or self.rotate_until < 0:
            problems.append("rotate_every and rotate_until must be >= 0")
        if self.decoder_sparsity < 0 or self.sparsity_samples < 1 or self.sparsity_dims < 1:
            problems.append("decoder_sparsity must be >= 0, sparsity_samples/dims >= 1")
        if self.w_threshold < 0:
            problems.append("w_threshold must be >= 0")
        if self.precision not in ("fp32", "bf16", "fp16"):
            problems.append(f"precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if self.num_threads is not None and self.num_threads < 1:
            problems.append("num_threads must be >= 1 or null")
        if problems:
            raise ValueError("Invalid CMCLConfig: " + "; ".join(problems) + ".")

    def _type_problems(self) -> list[str]:
        """Fields of the wrong type (a YAML ``"1e-3"`` string, a ``1`` for a flag), each named,
        judged by the field's annotation; the layer-width tuples are checked separately."""
        checks = {
            "float": ("a number", lambda v: isinstance(v, numbers.Real)),
            "int": ("an integer", lambda v: isinstance(v, numbers.Integral)),
            "bool": ("true or false", lambda v: isinstance(v, bool)),
            "str": ("a string", lambda v: isinstance(v, str)),
        }
        problems = []
        for f in dataclasses.fields(self):
            kind, optional, _ = str(f.type).partition(" | None")
            value = getattr(self, f.name)
            if kind not in checks or (optional and value is None):
                continue
            want, ok = checks[kind]
            if isinstance(value, bool) and kind != "bool" or not ok(value):
                problems.append(
                    f"{f.name} must be {want}{' or null' * bool(optional)}, got {value!r}"
                )
        return problems

    def learning_rate(self, latent_dim: int) -> float:
        """The representation modules' Adam rate for ``latent_dim`` latents (``lr``)."""
        return self.lr if self.lr is not None else min(3e-3, 0.014 / latent_dim)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the user-settable fields."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CMCLConfig:
        """Build a config from a mapping (e.g. the YAML ``model:`` section).

        Args:
            d: field name -> value; ``None`` or empty gives the defaults.

        Returns:
            The validated config.

        Raises:
            ValueError: a key is not a CMCLConfig field (the message names it and lists the
                valid ones) or a value is out of range.
        """
        d = dict(d or {})
        known = set(cls.field_names())
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"Unknown model setting(s) {unknown}; valid keys are {sorted(known)}. "
                "Fix the spelling in the config's `model:` section."
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able mapping of the user-settable fields (tuples become lists)."""
        out = {}
        for name in self.field_names():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> CMCLConfig:
        """Copy with some fields changed (unknown names raise ValueError)."""
        return CMCLConfig.from_dict({**self.to_dict(), **changes})
