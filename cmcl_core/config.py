"""Hyperparameters of the CMCL estimator (one frozen dataclass, JSON-able).

The pipeline passes the YAML ``model:`` mapping through :meth:`CMCLConfig.from_dict`, which
rejects unknown keys, so a typo in a config file is an error rather than a silent default.
"""

from __future__ import annotations

import dataclasses
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
    """Configuration of :class:`cmcl_core.estimator.CMCL` (Eq. 14, Algorithm 1).

    Attributes:
        embed_dim: size of the latent embedding ``z0`` (Eq. 5-6); ``None`` means
            ``max(16, 2 * latent_dim)``. Ignored (set to ``latent_dim``) when ``use_cm`` is off.
        base_channels: channels of the first encoder stage; Appendix D.3 uses 16/32/64 for the
            synthetic images, doubling per down-sampling stage (capped at ``max_channels``).
        max_channels: cap on the channel width of any stage.
        min_spatial: down-sample (stride 2) until the feature map is this many pixels wide.
        posterior_hidden: hidden widths of the posterior MLP q(z | z0, u). ``None`` means three
            layers of ``max(50, 6 m)``: Appendix D.3's 3 x 50 up to m = 8, wider above, where
            50 units became the bottleneck of the causal representation (20/40, seed 1, 40
            epochs: 3 x 128 gave MCC 0.76 against 0.65, the CM decoder's reconstruction error
            102 against 120; the embedding z0 held the information all along).
        prior_hidden: hidden widths of the conditional prior network p(z | u) (Eq. 18).
        prior_mean: the prior mean depends on u as well as its variance (Eq. 18, default);
            False gives iVAE's reference zero-mean prior (see ``nets.ConditionalPrior``).
        posterior_uses_u: feed u to the posterior, q(z | z0, u) (Eq. 17). False gives
            q(z | z0) (x determines z; u still enters through the conditional prior p(z | u),
            iVAE-style); the exported encoder keeps its (x, u) signature and ignores u.
        likelihood: ``"bernoulli"`` (cross-entropy, Appendix D.3) or ``"gaussian"`` (fixed
            pixel std ``gaussian_sigma``) reconstruction term of both ELBOs.
        gaussian_sigma: pixel standard deviation of the Gaussian likelihood.
            Defaults changed (gaussian, beta_embed = beta_cm = 0.1; were bernoulli, 1, 1): the
            synthetic images vary by ~0.1 around a grey level, so the cross-entropy term is
            too weak against a unit-weight KL and q(z0 | x) collapsed onto the prior even with
            He init. On simulate_setting("4/10", n=1000, 32x32), 15 epochs, seeds 0/1: latent
            MCC 0.44/0.50 -> 0.58/0.65, SHD 17/19 -> 17/13, TPR 0.25/0.25 -> 0.5/1.0 (the
            graph still has many false edges; PCA reaches MCC 0.91/0.78 on the same data).
        standardize_images: the encoder subtracts the per-pixel mean training image and
            divides by the global pixel std (stored as buffers of the encoder).
        he_init: He-normal init (zero biases) of the conv encoder/decoder. PyTorch's default
            init shrank the encoder's output spread across images to ~7e-4 at init, and the KL
            term then collapsed q(z0 | x) onto the prior for good: on simulate_setting("4/10")
            every posterior mean of z0 was constant after training, so E[z | x, u] was a
            function of u alone (MCC 0.44-0.50, SHD 17-19 at 15 epochs).
        decoder_sparsity: weight of an optional structural-sparsity term on the decoder
            p(x | z): the L1 norm of its Jacobian d x / d z, each column scaled by the spread of
            its latent (``losses.decoder_jacobian_l1``), estimated every step. Default 0 (off):
            the rotations (``rotate_every``) minimise the same norm over the latent basis
            exactly, and the per-step term added nothing on top of them. Measured with the
            rotations on (40 epochs, seeds 0-2), 0.03 -> 0: 10/20 SHD 3/6/3 -> 2/2/2, MCC
            0.98/0.90/0.97 -> 0.98/0.97/0.98; 20/40 SHD 13/11/14 -> 14/9/14, MCC
            0.80/0.80/0.74 -> 0.80/0.81/0.79; and it cost 40 extra decoder rows per step
            (a CMCL epoch 2.7x a VAE epoch with it). History: before the rotations existed
            this term was what lined the latents up (the conditional prior alone left them
            rotated: MCC 0.61 on 4/10; 0.1 -> MCC 0.93-0.98 after 40-70 epochs); 0.3 dropped a
            weakly visible latent and 0.1 with the rotations made the decoder give up weak
            latents at m = 20.
        rotate_every: every this many epochs (up to ``rotate_until``) re-parametrise z by the
            whitening + rotation that makes the decoder's Jacobian sparsest
            (``cmcl_core.rotation``: varimax-like, function-preserving for the decoded means;
            the DAG restarts). This is how the latents line up with the true ones: when
            latents drive separate image regions the Jacobian's L1 norm is smallest in the
            basis where each coordinate drives one region (structural sparsity, Zheng, Ng and
            Zhang 2022). Gradient steps on ``decoder_sparsity`` alone took ~65 epochs to line
            the latents up on 4/10 (MCC 0.98); with a rotation every 5 epochs MCC was 0.98 at
            epoch 10 and 0.99 / SHD 0 at epoch 40. 0 turns it off (with ``decoder_sparsity``
            0 as well, that is the paper's model as written). Needs the CM module.
        rotate_until: last epoch (1-based) after which a scheduled rotation may happen. With
            ``refit_dag`` one more rotation comes after the last epoch (unless that epoch just
            had one), right before the final DAG solve: it hands the solve whitened latents in
            the sparsest basis (20/40, seeds 0/1: SHD 15/22 with it, 30/40 without).
        sparsity_samples: batch rows at which each step estimates that term.
        sparsity_dims: latent directions per step (random; the term is rescaled to all m);
            the cost is ``sparsity_samples * (sparsity_dims + 1)`` extra decoder passes.
        dag_hidden: hidden widths of each NOTEARS-MLP. Appendix D.3 says 3 x 10; one layer of
            10 (the NOTEARS reference and ``learn_dag``'s default) recovers graphs more reliably.
        cr_hidden: hidden widths of the CR classifier D (Appendix D.3: 3 x 10).
        use_cm: train the causal representation module (Eq. 7); off = ablation, z = z0.
        use_cr: train the counterfactual contrastive regulariser (Eq. 13).
        allow_all_edges: allow u-u and z-z edges; default is the paper's bipartite graph.
        beta_embed: weight of the KL term of the embedding ELBO (Eq. 6).
        beta_cm: weight of the KL term of the causal representation ELBO (Eq. 19).
        lambda_dag: weight of the DAG link loss (Eq. 10) in the joint objective (Eq. 14).
        lambda1: L1 weight on the first NOTEARS layer (Eq. 10, alpha_1) in the final DAG solve.
            0.05 (was 0.01): with the defaults above at 4/10 (15 epochs, seeds 0/1) it gives
            SHD 9/11 instead of 17/13 at equal TPR (0.5/1.0) and the same latents.
        lambda1_joint: the same weight during joint Adam training. Adam normalises gradient
            scale, so an L1 term that dominates the weak early link gradients shrinks every edge
            at rate ``lr_dag`` whatever its weight; a much smaller value lets edges form.
        lambda2: L2 weight on all NOTEARS layers.
        lambda_cr: weight of the CR loss (Eq. 13) in the joint objective (Eq. 14).
        embed_recon_fraction: fraction of each batch on which the embedding module's
            reconstruction term is computed (keeps the epoch cost near a plain VAE's). 1/8
            (was 1/4) with ``cr_every`` 16 (was 8): together they took the epoch cost from
            1.60x to 1.42x a plain VAE's (``benchmarks/epoch_cost.py``; the CR step was 0.13 of
            the ratio, the second decoder 0.11) with the same results (20/40, 40 epochs, seeds
            0/1: SHD 3/9 -> 4/7, MCC 0.96/0.94 -> 0.93/0.94; the two-latent test passes on
            seeds 0-3); CR made no measurable difference to the graph at 20/40 (Table 2).
        cr_every: run the CR step every this many optimiser steps (see above).
        cr_samples: samples of the batch used by each CR step.
        lr: Adam learning rate of the encoder/decoder/posterior/prior; ``None`` (default) means
            ``min(3e-3, 0.014 / m)`` for m latents (:meth:`learning_rate`). The latents emerge
            one at a time during training (the weakly visible ones last); with many of them a
            smaller step makes them emerge sooner, with few a larger one is needed to untangle
            them. 20/40 (m = 20), 40 epochs, seeds 0/1, latent MCC (SHD): 3e-3 0.82/0.85
            (11/13), 1.5e-3 0.89/0.88 (7/12), 1e-3 0.88/0.89 (7/10), 7e-4 0.94/0.91 (3/7),
            4e-4 seed 1 0.90 (9), 6e-3 seed 1 0.55 (25); a cosine decay from 3e-3 to 3e-4
            0.87/0.81. The two-latent test problem (``tests/core/test_estimator.py``, n = 300)
            the other way round: at 7e-4 seeds 2/3 stayed tangled (MCC 0.77/0.60, even after
            150 epochs), at 3e-3 all four seeds pass. 4/10 and 10/20 gave the same SHD at 7e-4
            as at 3e-3 (seeds 0-2: 0/0/0; 2/2/2 against 1/2/2).
        lr_dag: Adam learning rate of the NOTEARS-MLP.
        lr_cr: Adam learning rate of the classifier D.
        batch_size: minibatch size.
        epochs: maximum number of epochs.
        min_epochs: no early stopping before this epoch.
        patience: stop after this many epochs without improvement of the validation loss
            (and with h(W) below ``h_tol``).
        min_delta: relative improvement of the monitored loss that resets the patience.
        val_fraction: held-out fraction for early stopping (0 disables early stopping).
        dag_warmup_epochs: epochs of representation learning before the DAG loss reaches z.
        rho_init: initial augmented-Lagrangian penalty.
        rho_mult: factor applied to rho (once per epoch) when h(W) did not shrink enough. One
            Adam epoch does not solve the inner problem as NOTEARS' L-BFGS does, so the
            growth is mild and capped; the final ``refit_dag`` solve enforces acyclicity.
        rho_max: cap on rho.
        h_shrink: rho grows when h_new > h_shrink * h_old (NOTEARS uses 0.25).
        h_tol: h(W) below which the graph counts as acyclic.
        acyclicity: ``"expm"`` (NOTEARS trace-exponential) or ``"logdet"`` (DAGMA).
        w_threshold: edges with |W| below this are dropped (NOTEARS uses 0.3).
        refit_dag: after joint training, re-solve the DAG on [u, posterior means of z] with
            ``cmcl_core.dag.learn_dag`` (full augmented Lagrangian to convergence) and keep it.
        orient_edges: after that solve, reverse the edges whose reversal raises the
            likelihood (``cmcl_core.orientation.orient_edges``: the additive-noise score of
            CAM, each end point's regression refitted). NOTEARS' squared-error solve often
            settles on the wrong side of a near-tie: with the true latents it fixed SHD 4/10
            0.8 -> 0.0, 10/20 1.8 -> 0.2, 20/40 4.4 -> 0.8. Edges between two continuous
            variables only (see ``orient_edges``). Needs ``refit_dag``.
        refit_dag_max_samples: subsample for the refit (it is super-linear in n).
        num_threads: torch CPU threads during fit (None: torch default).
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
    he_init: bool = True
    likelihood: str = "gaussian"
    gaussian_sigma: float = 0.1
    decoder_sparsity: float = 0.0
    sparsity_samples: int = 8
    sparsity_dims: int = 4
    rotate_every: int = 5
    rotate_until: int = 40
    dag_hidden: tuple[int, ...] = (10,)
    cr_hidden: tuple[int, ...] = (10, 10, 10)
    use_cm: bool = True
    use_cr: bool = True
    allow_all_edges: bool = False
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
        if self.gaussian_sigma <= 0:
            problems.append("gaussian_sigma must be > 0")
        if self.rotate_every < 0 or self.rotate_until < 0:
            problems.append("rotate_every and rotate_until must be >= 0")
        if self.decoder_sparsity < 0 or self.sparsity_samples < 1 or self.sparsity_dims < 1:
            problems.append("decoder_sparsity must be >= 0, sparsity_samples/dims >= 1")
        if self.w_threshold < 0:
            problems.append("w_threshold must be >= 0")
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
