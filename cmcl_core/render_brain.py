"""A stylised axial brain MR slice drawn from four latents, three of them at one location.

The ``brain`` renderer of :func:`cmcl_core.simulate.simulate` (``renderer="brain"``). Where the
paper's renderer (:mod:`cmcl_core.render`) gives every latent its own cell, here the latents
are anatomy, and three of them share the tumour, as in glioma MRI:

* a head: an elliptic scalp/skull ring (bright) around brain tissue (mid grey) on a dark
  background; fixed for every patient;
* ``ventricle_size``: two lateral ventricles (dark, CSF) below the centre, both scaled by the
  latent;
* at one fixed location in the right frontal lobe (top right of the image), a tumour with a
  dark necrotic core and an enhancing rim:

  - ``tumour_size``: the radius of the tumour;
  - ``enhancement``: the brightness of the rim (contrast uptake);
  - ``oedema``: the width of a bright halo around the tumour, inside the brain (a nuisance
    latent in the ``brain`` cohort).

Each latent value (already standardised and passed through the simulator's monotone warp) is
mapped to its parameter by ``lo + (hi - lo) * sigmoid(value)``, so every parameter is bounded
and strictly increasing in its latent. Edges are soft (a logistic of the signed distance over
about half a pixel), so each pixel is a smooth function of the latents at any image size. The
geometry is in normalised coordinates (``x`` right and ``y`` down, both in [-1, 1] across the
image): the same anatomy at 32 x 32 and 64 x 64.

Hand-written: no maintained library draws a parametric phantom with these latents (the
Shepp-Logan phantoms of scikit-image have fixed ellipses and no lesion).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

__all__ = [
    "BRAIN_LATENTS",
    "TUMOUR_CENTRE",
    "TUMOUR_MAX_EXTENT",
    "VENTRICLE_BOX",
    "brain_cells",
    "brain_parameters",
    "brain_slices",
]

#: The latents of the brain renderer, in the order of its ``values`` columns.
BRAIN_LATENTS = ("enhancement", "ventricle_size", "tumour_size", "oedema")

_HEAD_AXES = (0.88, 0.96)  # outer (x, y) semi-axes of the scalp/skull ring
_BRAIN_RHO = 0.86  # brain tissue inside this fraction of the head ellipse
#: Tumour centre ``(x, y)`` in normalised coordinates (right frontal lobe).
TUMOUR_CENTRE = (0.28, -0.38)
_VENTRICLE_CENTRES = ((-0.10, 0.36), (0.10, 0.36))  # (x, y) of the two lateral ventricles
_VENTRICLE_AXES = (0.07, 0.16)  # (x, y) semi-axes at scale 1
_RIM_WIDTH = 0.07  # width of the enhancing rim, inside the tumour radius

# Latent -> parameter ranges ``(lo, hi)``: ``lo + (hi - lo) * sigmoid(value)``.
_TUMOUR_RADIUS = (0.08, 0.28)
_VENTRICLE_SCALE = (0.6, 1.6)
_RIM_BRIGHTNESS = (0.40, 0.95)
_OEDEMA_WIDTH = (0.03, 0.13)

#: Farthest any tumour, rim or oedema pixel can be from :data:`TUMOUR_CENTRE` (before the soft
#: edge): the largest radius plus the widest halo.
TUMOUR_MAX_EXTENT = _TUMOUR_RADIUS[1] + _OEDEMA_WIDTH[1]
#: ``(x_min, x_max, y_min, y_max)`` holding both ventricles at their largest.
VENTRICLE_BOX = (
    _VENTRICLE_CENTRES[0][0] - _VENTRICLE_AXES[0] * _VENTRICLE_SCALE[1],
    _VENTRICLE_CENTRES[1][0] + _VENTRICLE_AXES[0] * _VENTRICLE_SCALE[1],
    _VENTRICLE_CENTRES[0][1] - _VENTRICLE_AXES[1] * _VENTRICLE_SCALE[1],
    _VENTRICLE_CENTRES[0][1] + _VENTRICLE_AXES[1] * _VENTRICLE_SCALE[1],
)

# Intensities in [0, 1] (a stylised contrast-enhanced T1 with a FLAIR-bright halo).
_BACKGROUND = 0.03
_SKULL = 0.85
_TISSUE = 0.45
_CSF = 0.12
_CORE = 0.22
_OEDEMA = 0.70

_CHUNK = 256  # images drawn at once (bounds the memory of the [n, H, W] intermediates)


def _range(value: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """A bounded increasing map of a latent: ``lo + (hi - lo) * sigmoid(value)``."""
    lo, hi = bounds
    return lo + (hi - lo) * expit(value)


def brain_parameters(values: np.ndarray) -> dict[str, np.ndarray]:
    """The anatomy each image shows: ``values [n, 4]`` (order :data:`BRAIN_LATENTS`) ->
    ``{name: [n]}``.

    Args:
        values: warped, standardised latents, one row per image.

    Returns:
        ``rim_brightness``, ``ventricle_scale``, ``tumour_radius`` and ``oedema_width``
        (normalised units), each ``[n]``.
    """
    return {
        "rim_brightness": _range(values[:, 0], _RIM_BRIGHTNESS),
        "ventricle_scale": _range(values[:, 1], _VENTRICLE_SCALE),
        "tumour_radius": _range(values[:, 2], _TUMOUR_RADIUS),
        "oedema_width": _range(values[:, 3], _OEDEMA_WIDTH),
    }


def _coordinates(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in normalised coordinates: ``(x, y)``, each ``[H, W]``."""
    t = (np.arange(image_size) + 0.5) / image_size * 2.0 - 1.0  # [S] in (-1, 1)
    y, x = np.meshgrid(t, t, indexing="ij")  # [H, W] rows, [H, W] columns
    return x, y


def _inside(signed: np.ndarray, tau: float) -> np.ndarray:
    """Soft indicator of ``signed > 0`` (a signed distance in normalised units)."""
    return expit(signed / tau)


def _ellipse_depth(dx: np.ndarray, dy: np.ndarray, ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
    """Approximate signed distance into an ellipse with semi-axes ``(ax, ay)`` (positive
    inside), for offsets ``(dx, dy)`` from its centre (broadcast).

    The first-order estimate ``(1 - rho) / |grad rho|`` with ``rho`` the elliptic radius: exact
    on the boundary's normal direction to first order, so an edge is equally soft all round.
    """
    rho = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2)
    grad = np.sqrt((dx / ax**2) ** 2 + (dy / ay**2) ** 2)  # |grad rho| * rho
    return (1.0 - rho) * rho / np.maximum(grad, 1e-12)


def _head(x: np.ndarray, y: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """The fixed head: ``(head, brain)`` soft masks, each ``[H, W]``."""
    ax, ay = np.asarray(_HEAD_AXES[0]), np.asarray(_HEAD_AXES[1])
    head = _inside(_ellipse_depth(x, y, ax, ay), tau)  # [H, W]
    brain = _inside(_ellipse_depth(x, y, _BRAIN_RHO * ax, _BRAIN_RHO * ay), tau)  # [H, W]
    return head, brain


def _ventricles(x: np.ndarray, y: np.ndarray, scale: np.ndarray, tau: float) -> np.ndarray:
    """Soft mask of both ventricles: ``scale [n]`` -> ``[n, H, W]``."""
    mask = np.zeros((len(scale), *x.shape))  # [n, H, W]
    ax = _VENTRICLE_AXES[0] * scale[:, None, None]  # [n, 1, 1]
    ay = _VENTRICLE_AXES[1] * scale[:, None, None]  # [n, 1, 1]
    for cx, cy in _VENTRICLE_CENTRES:
        mask = np.maximum(mask, _inside(_ellipse_depth(x - cx, y - cy, ax, ay), tau))
    return mask


def _draw(params: dict[str, np.ndarray], image_size: int) -> np.ndarray:
    """Noise-free slices of one chunk: ``{name: [n]}`` -> ``[n, H, W]`` in [0, 1]."""
    tau = 0.5 / image_size  # soft edge: about a quarter of a pixel pitch (2 / image_size)
    x, y = _coordinates(image_size)  # [H, W] each
    head, brain = _head(x, y, tau)  # [H, W] each
    img = _BACKGROUND + (_SKULL - _BACKGROUND) * head + (_TISSUE - _SKULL) * brain  # [H, W]
    img = np.broadcast_to(img, (len(params["tumour_radius"]), *img.shape)).copy()  # [n, H, W]
    vent = _ventricles(x, y, params["ventricle_scale"], tau)  # [n, H, W]
    img += (_CSF - _TISSUE) * vent * brain
    dist = np.hypot(x - TUMOUR_CENTRE[0], y - TUMOUR_CENTRE[1])  # [H, W]
    r = params["tumour_radius"][:, None, None]  # [n, 1, 1]
    tumour = _inside(r - dist, tau) * brain  # [n, H, W]
    core = _inside(r - _RIM_WIDTH - dist, tau) * brain  # [n, H, W]
    halo_edge = r + params["oedema_width"][:, None, None]  # [n, 1, 1]
    halo = _inside(halo_edge - dist, tau) * brain - tumour  # [n, H, W] annulus outside the rim
    rim = params["rim_brightness"][:, None, None]  # [n, 1, 1]
    img += (_OEDEMA - _TISSUE) * halo + (rim - _TISSUE) * (tumour - core) + (_CORE - _TISSUE) * core
    return img


def brain_slices(values: np.ndarray, image_size: int) -> np.ndarray:
    """Noise-free stylised axial brain slices: ``values [n, 4]`` -> ``[n, 1, H, W]`` in [0, 1].

    Args:
        values: one row per image, columns in the order of :data:`BRAIN_LATENTS` (enhancement,
            ventricle size, tumour size, oedema), each a warped, standardised latent.
        image_size: side ``H = W`` in pixels (the anatomy is the same at every size).

    Returns:
        ``[n, 1, H, W]`` float64 (the simulator adds pose, scanner and pixel noise).

    Raises:
        ValueError: ``values`` is not ``[n, 4]`` or ``image_size < 8``.
    """
    if values.ndim != 2 or values.shape[1] != len(BRAIN_LATENTS):
        raise ValueError(
            f"brain renderer: values must be [n, {len(BRAIN_LATENTS)}] "
            f"({', '.join(BRAIN_LATENTS)}), got shape {values.shape}."
        )
    if image_size < 8:
        raise ValueError(f"brain renderer: image_size={image_size}; use at least 8 pixels.")
    params = brain_parameters(values)  # {name: [n]}
    out = np.empty((values.shape[0], 1, image_size, image_size))  # [n, 1, H, W]
    for start in range(0, values.shape[0], _CHUNK):
        part = {k: v[start : start + _CHUNK] for k, v in params.items()}
        out[start : start + _CHUNK, 0] = _draw(part, image_size)  # [chunk, H, W]
    return np.clip(out, 0.0, 1.0)


def _cell(x: float, y: float, grid_size: int) -> tuple[int, int]:
    """``(row, col)`` of the cell of a ``grid_size x grid_size`` matrix holding point ``(x, y)``."""
    row, col = (int(np.clip((t + 1.0) / 2.0 * grid_size, 0, grid_size - 1)) for t in (y, x))
    return row, col


def brain_cells(grid_size: int) -> tuple[tuple[int, int], ...]:
    """Where each latent shows, as ``(row, col)`` of a ``grid_size x grid_size`` matrix laid
    over the image (order :data:`BRAIN_LATENTS`): the three tumour latents share the tumour's
    cell, the ventricles sit in the cell of their midpoint."""
    tumour = _cell(*TUMOUR_CENTRE, grid_size)
    vx = 0.5 * (_VENTRICLE_CENTRES[0][0] + _VENTRICLE_CENTRES[1][0])
    return tumour, _cell(vx, _VENTRICLE_CENTRES[0][1], grid_size), tumour, tumour
