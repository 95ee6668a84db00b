"""Images from latents for :mod:`cmcl_core.simulate` (paper Appendix E.1), plus optional realism.

The paper's renderer: each standardised latent goes through a random smooth monotone warp
(:func:`monotone_gp_warps`) and fills its own cell of a ``g x g`` matrix whose other cells hold a
fixed background; a sigmoid maps the matrix to (0, 1) and bilinear interpolation up-samples it
(:func:`upsample`). The optional steps make the images look more like a hospital's:

* :func:`footprints` with ``overlap > 0``: a latent spreads into the cells around its own, so
  latents share pixels (an opacity lying over the heart shadow);
* :func:`draw_pose` / :func:`apply_pose`: the patient is positioned a little differently in
  every image (shift, rotation, scale);
* :func:`apply_scanner`: a scanner's gain and offset change global contrast and brightness.

Every function is pure: randomness comes in as a ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit

__all__ = [
    "POSE_ROTATION_SD",
    "POSE_SCALE_SD",
    "POSE_SHIFT_SD",
    "apply_pose",
    "apply_scanner",
    "cell_field",
    "draw_pose",
    "footprints",
    "monotone_gp_warps",
    "standardise",
    "upsample",
]

_GP_GRID = 256  # points of the grid on which each GP log-slope is drawn
_GP_FEATURES = 200  # random Fourier features per GP draw
_GP_RANGE = 5.0  # the grid spans [-5, 5] standard deviations; linear beyond

#: Pose jitter per unit of ``jitter``: shift sd as a fraction of the image side, rotation sd in
#: degrees, scale sd (relative). Each draw is clipped at 2 sd. At ``jitter=1`` and 32 x 32
#: pixels: shifts of 1.6 px sd (at most 3.2 px), rotations of 5 degrees sd (at most 10), zoom of
#: 5 % sd: the positioning variation of chest radiographs taken by different technicians.
POSE_SHIFT_SD = 0.05
POSE_ROTATION_SD = 5.0
POSE_SCALE_SD = 0.05
_POSE_CLIP = 2.0


def standardise(a: np.ndarray) -> np.ndarray:
    """Columns to mean 0 and sd 1 (a constant column is only centred): ``[n, k] -> [n, k]``."""
    std = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)


def monotone_gp_warps(
    rng: np.random.Generator, s: np.ndarray, length_scale: float, amplitude: float
) -> np.ndarray:
    """Random smooth increasing functions of each column: ``[n, m] -> [n, m]``.

    For column ``j``, ``h_j(t) = int_0^t exp(amplitude * g_j(r)) dr`` with ``g_j`` a draw of a
    zero-mean GP with kernel ``exp(-(r - r')^2 / (2 length_scale^2))`` (by random Fourier
    features) on a grid over [-5, 5]; evaluated by linear interpolation, and continued linearly
    (with the end slopes) outside the grid, so every ``h_j`` is strictly increasing.
    """
    n_lat = s.shape[1]
    grid = np.linspace(-_GP_RANGE, _GP_RANGE, _GP_GRID)  # [G]
    # GP draws by random Fourier features (Rahimi & Recht 2007): with omega ~ N(0, 1 / l^2),
    # b ~ U(0, 2 pi), a ~ N(0, 1), sqrt(2 / K) sum_k a_k cos(omega_k r + b_k) has the RBF kernel
    # as K -> infinity; no Cholesky factorisation needed.
    omega = rng.standard_normal((_GP_FEATURES, n_lat)) / length_scale  # [K, m]
    phase = rng.uniform(0.0, 2 * np.pi, size=(_GP_FEATURES, n_lat))  # [K, m]
    weight = rng.standard_normal((_GP_FEATURES, n_lat))  # [K, m]
    feats = np.cos(grid[:, None, None] * omega[None] + phase[None])  # [G, K, m]
    g = np.sqrt(2.0 / _GP_FEATURES) * np.einsum("gkm,km->gm", feats, weight)  # [G, m]
    slope = np.exp(amplitude * g)  # [G, m] > 0
    step = grid[1] - grid[0]
    h = np.vstack([np.zeros((1, n_lat)), np.cumsum(0.5 * (slope[1:] + slope[:-1]) * step, 0)])
    out = np.empty_like(s)
    for j in range(n_lat):  # a loop over latents, not samples
        t = np.clip(s[:, j], -_GP_RANGE, _GP_RANGE)
        out[:, j] = (
            np.interp(t, grid, h[:, j])
            + slope[0, j] * np.minimum(s[:, j] - t, 0.0)
            + slope[-1, j] * np.maximum(s[:, j] - t, 0.0)
        )
    return out


def footprints(cells: np.ndarray, grid_size: int, overlap: float) -> np.ndarray:
    """How much each latent shows in each cell: ``[m] flat cells -> [m, g*g]``.

    ``K_j(c) = exp(-|c - c_j|^2 / (2 overlap^2))``, distances in cell pitches, so a footprint is
    a Gaussian blob with standard deviation ``overlap`` cells centred on the latent's own cell
    ``c_j`` (where it is 1). ``overlap = 0`` is the paper's one cell per latent (``K_j`` the
    indicator of ``c_j``); at ``overlap = 1`` a neighbouring cell holds 0.61 of the latent, a
    diagonal one 0.37, a cell two steps away 0.14.
    """
    m = len(cells)
    K = np.zeros((m, grid_size * grid_size))  # [m, g*g]
    if overlap == 0:
        K[np.arange(m), cells] = 1.0
        return K
    flat = np.arange(grid_size * grid_size)
    rows, cols = flat // grid_size, flat % grid_size  # [g*g]
    d2 = (rows[None] - (cells // grid_size)[:, None]) ** 2 + (
        cols[None] - (cells % grid_size)[:, None]
    ) ** 2  # [m, g*g]
    return np.exp(-d2 / (2.0 * overlap**2))


def cell_field(values: np.ndarray, background: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The pre-sigmoid cell matrix: ``values [n, m]``, ``background [g*g]``, ``K [m, g*g]`` ->
    ``[n, g*g]``.

    With ``S(c) = sum_j K_j(c)`` the coverage of cell ``c``, a cell holds the convex mixture
    ``field(c) = sum_j K_j(c) / max(1, S(c)) * values_j + max(0, 1 - S(c)) * background(c)``:
    where latents overlap they share the cell in proportion to their footprints (so the field
    keeps the scale of one latent), and the background fills what they leave. With one-cell
    footprints (``overlap = 0``) each latent's cell holds its value exactly and the other cells
    the background, as in the paper.
    """
    n = values.shape[0]
    coverage = K.sum(axis=0)  # [g*g]
    if np.all((K == 0) | (K == 1)) and coverage.max(initial=0) <= 1:  # one cell per latent
        field = np.tile(background, (n, 1))  # [n, g*g]
        owner, cell = np.nonzero(K)
        field[:, cell] = values[:, owner]
        return field
    share = K / np.maximum(1.0, coverage)  # [m, g*g]
    return values @ share + np.maximum(0.0, 1.0 - coverage) * background  # [n, g*g]


def upsample(field: np.ndarray, grid_size: int, image_size: int) -> np.ndarray:
    """Sigmoid of the cell matrix, bilinearly up-sampled: ``[n, g*g] -> [n, 1, H, W]`` in (0, 1).

    Bilinear with aligned corners, so cell ``(r, c)`` lands exactly on pixel
    ``(r (H - 1) / (g - 1), c (W - 1) / (g - 1))`` when that is a whole number.
    """
    mat = expit(field).reshape(-1, 1, grid_size, grid_size)  # [n, 1, g, g]
    with torch.no_grad():
        return F.interpolate(
            torch.from_numpy(mat),
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=True,
        ).numpy()  # [n, 1, g, g] -> [n, 1, H, W]


def draw_pose(rng: np.random.Generator, n: int, jitter: float, image_size: int) -> np.ndarray:
    """Random positioning of each image: ``[n, 4]`` columns ``(dx, dy, angle, scale)``.

    ``dx``, ``dy``: shift of the content in pixels (right, down), sd ``POSE_SHIFT_SD * jitter *
    image_size``; ``angle``: rotation in degrees (clockwise on screen), sd ``POSE_ROTATION_SD *
    jitter``; ``scale``: zoom about the centre, ``1 + N(0, (POSE_SCALE_SD * jitter)^2)``. Every
    normal draw is clipped at 2 sd. ``jitter = 0`` gives the identity pose.
    """
    shift = POSE_SHIFT_SD * image_size
    sd = np.array([shift, shift, POSE_ROTATION_SD, POSE_SCALE_SD])  # [4]
    draw = np.clip(rng.standard_normal((n, 4)), -_POSE_CLIP, _POSE_CLIP)  # [n, 4]
    pose = jitter * sd[None] * draw  # [n, 4]
    pose[:, 3] += 1.0
    return pose


def apply_pose(images: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Move each image's content by its pose: ``[n, 1, H, W], [n, 4] -> [n, 1, H, W]``.

    Content at ``p`` (pixels from the image centre) moves to ``scale * R(angle) p + (dx, dy)``;
    sampled bilinearly with ``torch.nn.functional.affine_grid`` / ``grid_sample``, and pixels
    that come from outside the image repeat the border (the body continues past the film).
    """
    n, _, h, w = images.shape
    a = np.deg2rad(pose[:, 2])  # [n]
    cos, sin, s = np.cos(a), np.sin(a), pose[:, 3]
    # grid_sample asks, for each output location, where to read the input: the inverse map
    # p_in = R(-angle) (p_out - t) / scale, in normalised coordinates ([-1, 1] across the image).
    inv = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1) / s[:, None, None]
    t = np.stack([2.0 * pose[:, 0] / w, 2.0 * pose[:, 1] / h], 1)  # [n, 2] normalised shift
    theta = np.concatenate([inv, -(inv @ t[:, :, None])], axis=2)  # [n, 2, 3]
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images))
        grid = F.affine_grid(
            torch.from_numpy(theta).to(x.dtype), list(x.shape), align_corners=False
        )
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.numpy()  # [n, 1, H, W]


def apply_scanner(images: np.ndarray, gain: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """A scanner's contrast and brightness: ``0.5 + gain (x - 0.5) + offset`` per image.

    Args:
        images: ``[n, 1, H, W]``.
        gain: ``[n]`` contrast factor about mid-grey.
        offset: ``[n]`` intensity shift.

    Returns:
        ``[n, 1, H, W]``, not clipped (the caller adds pixel noise, then clips).
    """
    return 0.5 + gain[:, None, None, None] * (images - 0.5) + offset[:, None, None, None]
