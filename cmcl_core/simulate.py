"""Synthetic cross-modal data with a known causal graph (paper Appendix E.1, E.2).

The pipeline of Appendix E.1:

1. ``d`` structured variables ``u`` and ``m`` latent variables ``z``; ``n_edges`` one-to-one
   ``u``-``z`` pairs are chosen at random and each edge gets a random direction (``u -> z`` is the
   paper's "causal" case, ``z -> u`` the "anti-causal" one). There are no other edges, so the
   ``u`` are mutually independent (Assumption 2.5) and no confounder exists (Assumption 2.4).
2. Every node is simulated as ``v_i = f_i(Pa(v_i)) + eps_i`` with ``eps_i ~ N(0, 1)`` (so a root is
   standard Gaussian), ``f_i`` a random MLP as in NOTEARS' ``simulate_nonlinear_sem(..., "mlp")``
   (one hidden layer of 100 sigmoid units, weights uniform in +-[0.5, 2]; smooth, so three times
   differentiable as Assumption 2.3 asks). Binary ``u`` use a logistic link,
   ``u ~ Bernoulli(sigmoid(f(Pa)))``; a binary root is ``Bernoulli(0.5)``. An MLP draw with
   ``std(f) < min_signal_std`` (default 1, the noise level; about a quarter of NOTEARS' draws)
   is redrawn so that every true edge is detectable.
3. Images ``x = g(z) + e``: each standardised ``z_j`` goes through its own random smooth
   *monotone* warp (the integral of ``exp`` of a Gaussian-process draw with an RBF kernel, so
   ``g`` stays injective as Assumption 1, Eq. 1 requires), gets small Gaussian noise, and goes
   to its own random cell of a ``5 x 5`` matrix (``ceil(sqrt(m))`` squared when ``m > 25``;
   the other cells hold a fixed random background). A fixed sigmoid maps the cells to (0, 1),
   bilinear interpolation up-samples the matrix to ``image_size x image_size``, and pixel noise
   is added (clipped to [0, 1]). The rendering lives in :mod:`cmcl_core.render`.

Realism options (all off by default; off, the output is bit-identical to the paper's process).
Each draws from its own generator, seeded by ``(seed, factor)``, so switching one on leaves the
graph, the SEM draws and the other factors' draws as they were:

* ``jitter``: patient positioning; every image is shifted, rotated and zoomed a little
  (:func:`cmcl_core.render.draw_pose`: at ``jitter=1`` shift sd 5 % of the side, rotation sd
  5 degrees, zoom sd 5 %).
* ``overlap``: each latent's footprint is a Gaussian blob of sd ``overlap`` cells around its
  cell, so latents share pixels (:func:`cmcl_core.render.footprints`).
* ``latent_correlation``: a hidden factor ``h ~ N(0, 1)`` enters the exogenous part of
  ``max(2, m // 2)`` random latents as ``latent_correlation * h``. Latents are then dependent
  given ``u``, which the paper assumes away; ``u`` and the graph are not confounded (a latent
  that causes a ``u`` passes ``h`` on only through itself).
* ``n_sites``: a categorical ``site`` (scanner) column is appended to ``u``: it sets each
  image's gain and offset (a nuisance no latent stands for) and legitimately causes one latent
  that is on no other edge (``site -> z_j``, a mean shift of 1 sd between neighbouring levels).

:data:`REALISM_PRESETS` names combinations (``clean``, ``pose``, ``overlap``, ``correlated``,
``site``, ``all``) for benchmarks that loop over factors.

Renderers (``renderer``): ``"cells"`` (default) is the paper's cell matrix above;
``"brain"`` (:mod:`cmcl_core.render_brain`) draws the four latents (order
:data:`~cmcl_core.render_brain.BRAIN_LATENTS`: enhancement, ventricle size, tumour size, oedema)
as a stylised axial brain MR slice in which three of them share the tumour's location. Both take
the same warped, noisy latents, and pose, scanner and pixel noise are applied alike.

Named settings (:data:`GRAPH_SETTINGS`) reproduce the graphs of Figure 2 and Table 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from cmcl_core.realism import (
    REALISM_PRESETS,
    SITE_NAME,
    Realism,
    Sites,
    factor_rng,
    hidden_factor,
    validate_realism,
)
from cmcl_core.render import (
    apply_pose,
    apply_scanner,
    cell_field,
    draw_pose,
    footprints,
    monotone_gp_warps,
    standardise,
    upsample,
)
from cmcl_core.render_brain import BRAIN_LATENTS, brain_cells, brain_slices

logger = logging.getLogger(__name__)

__all__ = [
    "GRAPH_SETTINGS",
    "RENDERERS",
    "REALISM_PRESETS",
    "SITE_NAME",
    "Realism",
    "SimulatedData",
    "simulate",
    "simulate_setting",
]

#: Graph settings by the paper's name "edges/nodes": ``(d structured u, m latent z, n_edges)``.
#: Figure 2 (Appendix E.2, second dataset) and Table 1 (third dataset, built like the first
#: dataset: 10 variables = 5 u + 5 z). "8/16" and "10/20" mean the same in both.
GRAPH_SETTINGS: dict[str, tuple[int, int, int]] = {
    "1/10": (1, 9, 1),
    "3/10": (5, 5, 3),
    "4/10": (4, 6, 4),
    "5/10": (5, 5, 5),
    "6/12": (6, 6, 6),
    "8/16": (8, 8, 8),
    "10/20": (10, 10, 10),
    "12/24": (12, 12, 12),
    "20/40": (20, 20, 20),
}

_MLP_HIDDEN = 100  # as NOTEARS' simulate_nonlinear_sem

#: Image renderers of :func:`simulate`: the paper's cell matrix, or a stylised brain MR slice.
RENDERERS = ("cells", "brain")


@dataclass(frozen=True, eq=False)
class SimulatedData:
    """One simulated cross-modal data set.

    Attributes:
        images: ``[n, 1, H, W]`` float32 in [0, 1].
        u: ``[n, d]`` float64 structured variables (binary ones as 0.0 / 1.0; with sites, the
            last column is ``site`` as integer codes ``0 .. n_sites - 1``).
        z: ``[n, m]`` float64 true latents.
        u_types: ``"continuous"``, ``"binary"`` or (``site``) ``"categorical"`` per ``u`` column.
        u_names: ``("u0", ..., "u{d-1}")``, then ``"site"`` with sites.
        z_names: ``("z0", ..., "z{m-1}")``.
        B_true: ``[d + m, d + m]`` int 0/1 adjacency over ``[u..., z...]`` (``d`` counting the
            site column when there is one); ``B_true[i, j] = 1`` means ``i -> j``.
        z_cells: ``(row, col)`` of each ``z_j`` in the ``grid_size x grid_size`` matrix (brain
            renderer: the cell of the structure it draws; the tumour latents share one).
        grid_size: Side of the cell matrix (5 unless ``m > 25``).
        seed: The seed that reproduces this data set.
        setting: The :data:`GRAPH_SETTINGS` name, or ``None`` for a custom graph.
        confounded: Indices of the latents that share the hidden factor
            (``latent_correlation > 0``), else empty.
        pose: ``[n, 4]`` per-image ``(dx, dy, angle, scale)`` (``jitter > 0``), else ``None``.
        site_gain: Contrast factor of each site (``n_sites > 0``), else empty.
        site_offset: Intensity offset of each site, else empty.
        site_shift: Mean shift each site adds to the latent it causes (the ``site`` row of
            ``B_true`` names it; all zero when no latent was free), else empty.
    """

    images: np.ndarray
    u: np.ndarray
    z: np.ndarray
    u_types: tuple[str, ...]
    u_names: tuple[str, ...]
    z_names: tuple[str, ...]
    B_true: np.ndarray
    z_cells: tuple[tuple[int, int], ...]
    grid_size: int
    seed: int
    setting: str | None = None
    confounded: tuple[int, ...] = ()
    pose: np.ndarray | None = None
    site_gain: tuple[float, ...] = ()
    site_offset: tuple[float, ...] = ()
    site_shift: tuple[float, ...] = ()

    @property
    def uz(self) -> np.ndarray:
        """``[n, d + m]``: ``u`` and ``z`` side by side, the order of ``B_true``."""
        return np.hstack([self.u, self.z])

    @property
    def var_names(self) -> tuple[str, ...]:
        """Names in the order of ``B_true``."""
        return self.u_names + self.z_names

    @property
    def var_types(self) -> tuple[str, ...]:
        """Types in the order of ``B_true`` (latents are continuous)."""
        return self.u_types + ("continuous",) * len(self.z_names)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """True directed edges as ``(cause, effect)`` names."""
        names = self.var_names
        return [(names[i], names[j]) for i, j in zip(*np.nonzero(self.B_true), strict=True)]


def _random_mlp(rng: np.random.Generator, parent: np.ndarray, min_signal_std: float) -> np.ndarray:
    """A random NOTEARS-style MLP of one parent, evaluated on it: ``[n] -> [n]``.

    ``f(x) = (sigmoid(x W1) - 1/2) W2``: NOTEARS' ``sigmoid(X W1) W2`` shifted by a constant so
    that ``f(0) = 0`` (a logistic link then stays near balanced; the shift cannot change the graph).
    About a quarter of NOTEARS' draws have ``std(f) < 1`` (random signs cancel), an edge weaker
    than its N(0, 1) noise; weights are redrawn (up to 100 times) until ``std(f) >=
    min_signal_std`` on the sample, so that every edge of the ground truth is detectable.
    """
    f = np.zeros_like(parent)
    for _ in range(100):
        w1 = rng.uniform(0.5, 2.0, size=_MLP_HIDDEN) * rng.choice([-1.0, 1.0], size=_MLP_HIDDEN)
        w2 = rng.uniform(0.5, 2.0, size=_MLP_HIDDEN) * rng.choice([-1.0, 1.0], size=_MLP_HIDDEN)
        f = (expit(parent[:, None] * w1[None, :]) - 0.5) @ w2  # [n, 1] * [1, h] -> [n, h] -> [n]
        if f.std() >= min_signal_std:
            return f
    logger.warning(
        "simulate: no MLP draw reached min_signal_std=%g; keeping a weaker edge", min_signal_std
    )
    return f


def simulate(
    d: int,
    m: int,
    n_edges: int,
    n: int = 1000,
    image_size: int = 32,
    n_binary: int = 0,
    seed: int = 0,
    image_noise: float = 0.02,
    latent_noise: float = 0.1,
    gp_length_scale: float = 1.0,
    gp_amplitude: float = 0.5,
    min_signal_std: float = 1.0,
    setting: str | None = None,
    edges: Sequence[tuple[int, int, bool]] | None = None,
    jitter: float = 0.0,
    overlap: float = 0.0,
    latent_correlation: float = 0.0,
    n_sites: int = 0,
    renderer: str = "cells",
) -> SimulatedData:
    """Simulate images, structured variables and latents with a known bipartite DAG.

    See the module docstring for the generating process (paper Appendix E.1) and the realism
    options (all off by default: the paper's process, bit for bit).

    Args:
        d: Number of structured variables ``u`` (>= 1), not counting the site column.
        m: Number of latent variables ``z`` (>= 1).
        n_edges: Number of ``u``-``z`` edges, ``0 <= n_edges <= min(d, m)``.
        n: Number of samples (>= 2).
        image_size: Side ``H = W`` of the images (>= the cell matrix side).
        n_binary: How many ``u`` are binary (the first ``n_binary`` columns), ``<= d``; a share
            ``p`` of binary variables is ``n_binary=round(p * d)``.
        seed: Seed of the ``numpy.random.Generator`` of the paper's process (the realism
            options draw from generators seeded by ``(seed, factor)``).
        image_noise: Standard deviation of the pixel noise (>= 0).
        latent_noise: Standard deviation of the noise added to each warped, standardised latent
            before it is drawn (>= 0).
        gp_length_scale: RBF length scale of the GP behind each image warp, in standard
            deviations of ``z`` (> 0).
        gp_amplitude: Scale of the GP log-slope; 0 gives a linear (but still standardised) map.
        min_signal_std: Smallest standard deviation of ``f(parent)`` over the sample for each
            edge (MLP weights are redrawn until met); 0 reproduces NOTEARS' draws exactly, some of
            whose edges are weaker than the noise.
        setting: Optional name recorded on the result.
        edges: The graph instead of a random one: ``(u index, z index, causal)`` per edge,
            ``causal`` True for ``u -> z``; each node in at most one edge. ``n_edges`` must
            equal its length.
        jitter: Pose jitter (>= 0): per image a shift of sd ``0.05 * jitter * image_size``
            pixels, a rotation of sd ``5 * jitter`` degrees and a zoom of sd ``0.05 * jitter``,
            each clipped at 2 sd, applied before the pixel noise (border padding).
        overlap: Footprint width (>= 0): each latent spreads as a Gaussian blob of sd
            ``overlap`` cell pitches around its cell and overlapping latents share cells
            (:func:`cmcl_core.render.cell_field`); 1 puts 0.61 of a latent into each
            neighbouring cell.
        latent_correlation: Weight ``c`` (>= 0) of a hidden factor ``h ~ N(0, 1)`` added to
            ``max(2, m // 2)`` random latents (``z_j += c h``, in their exogenous part: before
            a latent's ``u`` children are drawn). Two such latents that are roots have
            correlation ``c^2 / (1 + c^2)``; deliberately breaks the paper's assumption that
            latents are independent given ``u``. Needs ``m >= 2``.
        n_sites: Number of scanner sites (0, or >= 2): appends a categorical ``u`` column
            ``site`` (codes drawn uniformly) that gives each image its site's gain (in
            [0.7, 1.3]) and offset (in [-0.15, 0.15]; both uniform, one draw per stratum of
            ``1 / n_sites`` of the range, so sites differ), ``x -> 0.5 + gain (x - 0.5) +
            offset`` before the pixel noise, and shifts one latent that is on no other edge by
            a per-site mean (levels ``k - (n_sites - 1) / 2`` in random order: 1 sd apart),
            with the edge ``site -> z_j`` in ``B_true``. With no free latent there is no such
            edge.
        renderer: ``"cells"`` (the paper's) or ``"brain"`` (:mod:`cmcl_core.render_brain`;
            needs ``m == 4`` and ``overlap == 0``: its latents share a location by design).

    Returns:
        A :class:`SimulatedData`.

    Raises:
        ValueError: On any invalid argument.
    """
    _validate(
        d,
        m,
        n_edges,
        n,
        image_size,
        n_binary,
        image_noise,
        latent_noise,
        gp_length_scale,
        min_signal_std,
    )
    validate_realism(m, jitter, overlap, latent_correlation, n_sites)
    _validate_renderer(renderer, m, overlap)
    rng = np.random.default_rng(seed)
    # (1) the graph: n_edges random one-to-one u-z pairs, each with a random direction
    if edges is None:
        u_idx = rng.choice(d, size=n_edges, replace=False)
        z_idx = rng.choice(m, size=n_edges, replace=False)
        causal = rng.random(n_edges) < 0.5  # True: u -> z (Assumption 2.1), False: z -> u (2.2)
    else:
        u_idx, z_idx, causal = _given_edges(edges, d, m, n_edges)
    B = np.zeros((d + m, d + m), dtype=np.int64)
    B[u_idx[causal], d + z_idx[causal]] = 1
    B[d + z_idx[~causal], u_idx[~causal]] = 1
    # (2) the SEM, roots first (every edge joins a root to a leaf)
    u_types = ("binary",) * n_binary + ("continuous",) * (d - n_binary)
    X = np.empty((n, d + m))  # [n, d + m] order u..., z...
    is_child = B.sum(axis=0) > 0  # [d + m]
    for j in np.flatnonzero(~is_child):
        binary = j < d and u_types[j] == "binary"
        X[:, j] = rng.binomial(1, 0.5, size=n) if binary else rng.standard_normal(n)
    confounded, h = hidden_factor(seed, n, m, latent_correlation)  # (k,), [n]
    roots = [d + j for j in confounded if not is_child[d + j]]
    X[:, roots] += latent_correlation * h[:, None]  # before their children are drawn
    for j in np.flatnonzero(is_child):
        parent = int(np.flatnonzero(B[:, j])[0])
        f = _random_mlp(rng, X[:, parent], min_signal_std)  # [n]
        if j < d and u_types[j] == "binary":
            X[:, j] = rng.binomial(1, expit(f))  # logistic link
        else:
            X[:, j] = f + rng.standard_normal(n)  # additive N(0, 1) noise
    children = [d + j for j in confounded if is_child[d + j]]
    X[:, children] += latent_correlation * h[:, None]
    u, z = X[:, :d].copy(), X[:, d:].copy()
    site = Sites.draw(seed, n, n_sites, free=np.flatnonzero(B[d:].sum(1) + B[:, d:].sum(0) == 0))
    if site.latent is not None:
        z[:, site.latent] += site.shift[site.codes]  # [n]
    # (3) images from z (standardised with this sample's mean and std): monotone GP warp + noise,
    # random cells (latent footprints), sigmoid, bilinear up-sampling; then pose and scanner
    grid_size = 5 if m <= 25 else math.ceil(math.sqrt(m))
    if m > 25:
        logger.info("simulate: m = %d > 25 latents, using a %d-cell square matrix", m, grid_size**2)
    warped = standardise(monotone_gp_warps(rng, standardise(z), gp_length_scale, gp_amplitude))
    cells_val = warped + latent_noise * rng.standard_normal((n, m))  # [n, m]
    if renderer == "brain":
        up, z_cells = brain_slices(cells_val, image_size), brain_cells(grid_size)  # [n, 1, H, W]
    else:
        up, z_cells = _render_cells(rng, cells_val, grid_size, image_size, overlap)
    pose = None
    if jitter > 0:
        pose = draw_pose(factor_rng(seed, "pose"), n, jitter, image_size)  # [n, 4]
        up = apply_pose(up, pose)
    if n_sites:
        up = apply_scanner(up, site.gain[site.codes], site.offset[site.codes])
    up = up + image_noise * rng.standard_normal(up.shape)
    images = np.clip(up, 0.0, 1.0).astype(np.float32)
    u_names = tuple(f"u{i}" for i in range(d))
    if n_sites:  # the site column goes last among u, before the latents
        u = np.hstack([u, site.codes[:, None].astype(np.float64)])
        u_types, u_names = u_types + ("categorical",), u_names + (SITE_NAME,)
        B = np.insert(np.insert(B, d, 0, axis=0), d, 0, axis=1)  # [d+1+m, d+1+m]
        if site.latent is not None:
            B[d, d + 1 + site.latent] = 1
    logger.debug("simulate: d=%d m=%d edges=%d n=%d seed=%d", d, m, n_edges, n, seed)
    return SimulatedData(
        images=images,
        u=u,
        z=z,
        u_types=u_types,
        u_names=u_names,
        z_names=tuple(f"z{j}" for j in range(m)),
        B_true=B,
        z_cells=z_cells,
        grid_size=grid_size,
        seed=seed,
        setting=setting,
        confounded=tuple(int(j) for j in confounded),
        pose=pose,
        site_gain=tuple(site.gain.tolist()),
        site_offset=tuple(site.offset.tolist()),
        site_shift=tuple(site.shift.tolist()),
    )


def _render_cells(
    rng: np.random.Generator, values: np.ndarray, grid_size: int, image_size: int, overlap: float
) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """The paper's renderer: ``values [n, m]`` -> (images ``[n, 1, H, W]``, cell of each latent).

    Random cells (latent footprints) and a fixed random background, sigmoid, bilinear
    up-sampling (:mod:`cmcl_core.render`).
    """
    m = values.shape[1]
    cells = rng.permutation(grid_size * grid_size)[:m]  # [m] flat cell of each z_j
    background = rng.standard_normal(grid_size * grid_size)  # fixed across samples
    field = cell_field(values, background, footprints(cells, grid_size, overlap))  # [n, g*g]
    up = upsample(field, grid_size, image_size)  # [n, 1, H, W]
    return up, tuple((int(c) // grid_size, int(c) % grid_size) for c in cells)


def _validate_renderer(renderer: str, m: int, overlap: float) -> None:
    if renderer not in RENDERERS:
        raise ValueError(f"simulate: unknown renderer {renderer!r}; use one of {RENDERERS}.")
    if renderer == "brain" and m != len(BRAIN_LATENTS):
        raise ValueError(
            f"simulate: the brain renderer draws m={len(BRAIN_LATENTS)} latents "
            f"({', '.join(BRAIN_LATENTS)}), got m={m}."
        )
    if renderer == "brain" and overlap > 0:
        raise ValueError(
            "simulate: overlap applies to the cell renderer; the brain renderer's tumour "
            "latents already share a location (use overlap=0)."
        )


def _given_edges(
    edges: Sequence[tuple[int, int, bool]], d: int, m: int, n_edges: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u indices, z indices, causal flags) of a given one-to-one bipartite graph."""
    if len(edges) != n_edges:
        raise ValueError(f"simulate: n_edges={n_edges} but {len(edges)} edges were given.")
    u_idx = np.array([int(e[0]) for e in edges], dtype=int)
    z_idx = np.array([int(e[1]) for e in edges], dtype=int)
    if len(set(u_idx.tolist())) < len(edges) or len(set(z_idx.tolist())) < len(edges):
        raise ValueError("simulate: each u and each z may be in at most one given edge.")
    if len(edges) and (u_idx.min() < 0 or u_idx.max() >= d or z_idx.min() < 0 or z_idx.max() >= m):
        raise ValueError(f"simulate: edge indices must be u in [0, {d}) and z in [0, {m}).")
    return u_idx, z_idx, np.array([bool(e[2]) for e in edges], dtype=bool)


def _validate(
    d: int,
    m: int,
    n_edges: int,
    n: int,
    image_size: int,
    n_binary: int,
    image_noise: float,
    latent_noise: float,
    gp_length_scale: float,
    min_signal_std: float,
) -> None:
    if d < 1 or m < 1:
        raise ValueError(f"simulate needs d >= 1 and m >= 1 (got d={d}, m={m}).")
    if not 0 <= n_edges <= min(d, m):
        raise ValueError(
            f"simulate: n_edges={n_edges} must be in [0, min(d, m)] = [0, {min(d, m)}]: edges "
            "join one-to-one u-z pairs; lower n_edges or add variables."
        )
    if n < 2:
        raise ValueError(f"simulate: n={n} samples; need at least 2.")
    grid = 5 if m <= 25 else math.ceil(math.sqrt(m))
    if image_size < grid:
        raise ValueError(f"simulate: image_size={image_size} is below the {grid}x{grid} cell grid.")
    if not 0 <= n_binary <= d:
        raise ValueError(f"simulate: n_binary={n_binary} must be in [0, d={d}].")
    if image_noise < 0 or latent_noise < 0:
        raise ValueError("simulate: image_noise and latent_noise must be >= 0.")
    if min_signal_std < 0:
        raise ValueError(f"simulate: min_signal_std must be >= 0, got {min_signal_std}.")
    if gp_length_scale <= 0:
        raise ValueError(f"simulate: gp_length_scale must be > 0, got {gp_length_scale}.")


def simulate_setting(
    name: str, n: int = 1000, image_size: int = 32, seed: int = 0, **kwargs: object
) -> SimulatedData:
    """Simulate one of the paper's named graphs (:data:`GRAPH_SETTINGS`).

    Args:
        name: ``"1/10"``, ``"4/10"``, ``"6/12"``, ``"8/16"``, ``"10/20"``, ``"12/24"``, ``"20/40"``
            (Figure 2) or ``"3/10"``, ``"5/10"`` (Table 1).
        n: Number of samples.
        image_size: Image side.
        seed: Random seed.
        **kwargs: Further keyword arguments of :func:`simulate` (``n_binary``, noise levels,
            the realism options, e.g. ``**REALISM_PRESETS["all"].kwargs()``).

    Returns:
        A :class:`SimulatedData` with ``setting=name``.
    """
    if name not in GRAPH_SETTINGS:
        raise ValueError(
            f"unknown graph setting {name!r}; choose one of {', '.join(GRAPH_SETTINGS)}."
        )
    d, m, n_edges = GRAPH_SETTINGS[name]
    return simulate(d, m, n_edges, n=n, image_size=image_size, seed=seed, setting=name, **kwargs)
