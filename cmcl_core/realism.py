"""Realism options of :func:`cmcl_core.simulate.simulate`: what makes the images a hospital's.

The paper's simulator (Appendix E.1) draws clean, perfectly aligned images whose latents are
independent given ``u`` and each own a cell of the image. Four factors, each off by default,
move it towards real radiographs: pose ``jitter``, latent ``overlap`` (both rendered by
:mod:`cmcl_core.render`), ``latent_correlation`` through a hidden factor, and scanner sites
(``n_sites``). :class:`Realism` bundles them and :data:`REALISM_PRESETS` names combinations.

Each factor draws from its own generator, ``numpy.random.default_rng([seed, tag])``, so that
switching one on leaves the paper's draws and the other factors' draws unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "REALISM_PRESETS",
    "SITE_NAME",
    "Realism",
    "Sites",
    "factor_rng",
    "hidden_factor",
    "validate_realism",
]

#: Name of the categorical scanner column appended to ``u`` when ``n_sites > 0``.
SITE_NAME = "site"
_SITE_GAIN = (0.7, 1.3)  # per-site contrast factor, uniform
_SITE_OFFSET = (-0.15, 0.15)  # per-site intensity shift, uniform
#: Tags of the per-factor generators, ``numpy.random.default_rng([seed, tag])``.
_FACTOR_TAGS = {"pose": 1, "confounder": 2, "site": 3}


@dataclass(frozen=True)
class Realism:
    """The realism options of :func:`cmcl_core.simulate.simulate` in one value (all off).

    Attributes:
        jitter: Scale of the per-image pose jitter (1: a radiograph's positioning variation).
        overlap: Footprint sd of each latent, in cells (0: one cell per latent).
        latent_correlation: Weight of the hidden factor shared by half of the latents.
        n_sites: Number of scanner sites (0: none; else >= 2).
    """

    jitter: float = 0.0
    overlap: float = 0.0
    latent_correlation: float = 0.0
    n_sites: int = 0

    def kwargs(self) -> dict[str, float | int]:
        """The keyword arguments of ``simulate``: ``simulate(..., **r.kwargs())``."""
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str) -> Realism:
        """The named preset of :data:`REALISM_PRESETS`.

        Raises:
            ValueError: An unknown name (the message lists the known ones).
        """
        if name not in REALISM_PRESETS:
            raise ValueError(
                f"unknown realism preset {name!r}; choose one of {', '.join(REALISM_PRESETS)}."
            )
        return REALISM_PRESETS[name]


#: One factor at a time at its realistic strength, then all four together.
REALISM_PRESETS: dict[str, Realism] = {
    "clean": Realism(),
    "pose": Realism(jitter=1.0),
    "overlap": Realism(overlap=1.0),
    "correlated": Realism(latent_correlation=1.0),
    "site": Realism(n_sites=3),
    "all": Realism(jitter=1.0, overlap=1.0, latent_correlation=1.0, n_sites=3),
}


def factor_rng(seed: int, factor: str) -> np.random.Generator:
    """The generator of one realism factor, independent of the main one and of the others."""
    return np.random.default_rng([seed, _FACTOR_TAGS[factor]])


def hidden_factor(seed: int, n: int, m: int, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Which latents share the hidden factor (sorted, ``max(2, m // 2)`` of them) and its draw
    ``h ~ N(0, 1)`` ``[n]``; none and zeros when ``weight == 0``."""
    if weight == 0:
        return np.zeros(0, dtype=int), np.zeros(n)
    frng = factor_rng(seed, "confounder")
    confounded = np.sort(frng.choice(m, size=max(2, m // 2), replace=False))
    return confounded, frng.standard_normal(n)


@dataclass(frozen=True)
class Sites:
    """The scanner sites of one data set (empty arrays when there are none).

    Attributes:
        codes: ``[n]`` site of each sample, integer codes.
        gain: ``[K]`` contrast factor per site, stratified uniform draws on [0.7, 1.3].
        offset: ``[K]`` intensity offset per site, stratified uniform draws on [-0.15, 0.15].
        shift: ``[K]`` mean shift of the caused latent per site.
        latent: index of the latent the site causes, or ``None``.
    """

    codes: np.ndarray
    gain: np.ndarray
    offset: np.ndarray
    shift: np.ndarray
    latent: int | None

    @classmethod
    def draw(cls, seed: int, n: int, n_sites: int, free: np.ndarray) -> Sites:
        """Draw ``n_sites`` sites for ``n`` samples; the caused latent is one of ``free``."""
        if n_sites == 0:
            empty = np.zeros(0)
            return cls(np.zeros(n, dtype=int), empty, empty, empty, None)
        srng = factor_rng(seed, "site")
        codes = srng.integers(n_sites, size=n)  # [n]
        gain = _stratified(srng, *_SITE_GAIN, n_sites)  # [K]
        offset = _stratified(srng, *_SITE_OFFSET, n_sites)  # [K]
        shift = srng.permutation(np.arange(n_sites) - (n_sites - 1) / 2)  # [K], 1 sd apart
        latent = int(srng.choice(free)) if len(free) else None
        if latent is None:
            logger.info("simulate: every latent is on an edge; the site causes no latent")
            shift = np.zeros(n_sites)
        return cls(codes, gain, offset, shift, latent)


def _stratified(rng: np.random.Generator, low: float, high: float, k: int) -> np.ndarray:
    """``k`` uniform draws on [low, high], one in each of ``k`` equal strata, in random order:
    random values that never all fall close together (two sites always look different)."""
    return low + (high - low) * (rng.permutation(k) + rng.random(k)) / k  # [k]


def validate_realism(
    m: int, jitter: float, overlap: float, latent_correlation: float, n_sites: int
) -> None:
    """Check the realism options of a simulation with ``m`` latents.

    Raises:
        ValueError: A negative or non-finite strength, a correlation with fewer than two
            latents, or ``n_sites`` not 0 and not a whole number >= 2.
    """
    for name, value in (
        ("jitter", jitter),
        ("overlap", overlap),
        ("latent_correlation", latent_correlation),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"simulate: {name} must be a finite number >= 0, got {value}.")
    if latent_correlation > 0 and m < 2:
        raise ValueError("simulate: latent_correlation needs m >= 2 latents to correlate.")
    if n_sites < 0 or n_sites == 1 or int(n_sites) != n_sites:
        raise ValueError(
            f"simulate: n_sites={n_sites}; use 0 (no site column) or a whole number >= 2."
        )
