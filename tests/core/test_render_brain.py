"""Tests of cmcl_core.render_brain and simulate(renderer="brain"): each latent moves its pixels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from cmcl_core.render_brain import (
    BRAIN_LATENTS,
    TUMOUR_CENTRE,
    TUMOUR_MAX_EXTENT,
    VENTRICLE_BOX,
    brain_parameters,
    brain_slices,
)
from cmcl_core.simulate import simulate

TUMOUR_LATENTS = ("enhancement", "tumour_size", "oedema")


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # [S] pixel centres, normalised
    y, x = np.meshgrid(t, t, indexing="ij")  # [S, S] each
    return x, y


def _moved(latent: str, size: int, low: float = -1.5, high: float = 1.5) -> np.ndarray:
    """``[S, S]`` change of the noise-free slice when one latent goes from low to high."""
    values = np.zeros((2, len(BRAIN_LATENTS)))  # [2, 4]
    values[:, BRAIN_LATENTS.index(latent)] = (low, high)
    img = brain_slices(values, size)  # [2, 1, S, S]
    return img[1, 0] - img[0, 0]


def _regions(size: int, margin_px: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tumour region, ventricle region, distance to the tumour centre), each ``[S, S]``."""
    x, y = _coords(size)
    margin = margin_px * 2.0 / size  # pixels -> normalised units
    dist = np.hypot(x - TUMOUR_CENTRE[0], y - TUMOUR_CENTRE[1])  # [S, S]
    tumour = dist <= TUMOUR_MAX_EXTENT + margin
    x0, x1, y0, y1 = VENTRICLE_BOX
    ventricles = (x >= x0 - margin) & (x <= x1 + margin) & (y >= y0 - margin) & (y <= y1 + margin)
    return tumour, ventricles, dist


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("latent", BRAIN_LATENTS)
def test_each_latent_moves_only_its_own_structure(latent: str, size: int) -> None:
    diff = _moved(latent, size)  # [S, S]
    moved = np.abs(diff) > 0.01  # half the simulator's pixel noise
    assert np.abs(diff).max() > 0.15, "the effect must be visible at this size"
    tumour, ventricles, _ = _regions(size)  # with a margin of one pixel for the soft edges
    tumour_core, ventricles_core, _ = _regions(size, margin_px=0.0)
    assert not (tumour_core & ventricles_core).any()
    own, other = (
        (tumour, ventricles_core) if latent in TUMOUR_LATENTS else (ventricles, tumour_core)
    )
    assert moved.any() and not (moved & ~own).any() and not (moved & other).any()


def test_tumour_latents_share_one_location_but_differ_in_where_they_act() -> None:
    size = 64
    _, _, dist = _regions(size)
    r0 = brain_parameters(np.zeros((1, 4)))["tumour_radius"][0]
    px = 2.0 / size
    enh, siz, oed = (_moved(name, size) for name in TUMOUR_LATENTS)  # [S, S] each
    # enhancement brightens the rim only: nothing beyond the tumour radius moves
    assert enh.sum() > 0 and not (np.abs(enh) > 1e-3)[dist > r0 + 2 * px].any()
    # oedema widens the halo outside the tumour: nothing inside the rim moves
    assert oed.sum() > 0 and not (np.abs(oed) > 1e-3)[dist < r0 - 2 * px].any()
    # tumour size moves the core and the rim: a bright rim pixel becomes dark necrotic core
    ring = np.unravel_index(np.argmin(np.abs(dist - 0.1)), dist.shape)
    assert siz[ring] < -0.1
    # all three act at the tumour: their changed pixels overlap
    moved = [np.abs(a) > 1e-3 for a in (enh, siz, oed)]
    assert (moved[0] & moved[1]).any() and (moved[1] & moved[2]).any()


def test_parameters_are_bounded_and_increasing() -> None:
    grid = np.linspace(-6, 6, 50)  # [50]
    values = np.repeat(grid[:, None], 4, axis=1)  # [50, 4]
    for name, p in brain_parameters(values).items():
        assert np.all(np.diff(p) > 0), name
        assert np.all(np.isfinite(p)) and p.min() > 0, name


def test_shapes_range_and_errors() -> None:
    rng = np.random.default_rng(0)
    img = brain_slices(rng.standard_normal((300, 4)) * 3, 32)  # [300, 1, 32, 32]
    assert img.shape == (300, 1, 32, 32) and 0.0 <= img.min() and img.max() <= 1.0
    with pytest.raises(ValueError, match=r"\[n, 4\]"):
        brain_slices(np.zeros((3, 5)), 32)
    with pytest.raises(ValueError, match="at least 8"):
        brain_slices(np.zeros((3, 4)), 4)


def _box_mean(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return images[:, 0][:, mask].mean(axis=1)  # [n, 1, S, S] -> [n]


def test_simulate_brain_renderer_draws_each_latent_monotonically() -> None:
    data = simulate(
        3, 4, 3, n=400, image_size=32, n_binary=1, seed=2, renderer="brain",
        edges=((0, 0, True), (1, 1, True), (2, 2, False)),
    )  # fmt: skip
    assert data.images.shape == (400, 1, 32, 32) and data.images.dtype == np.float32
    tumour_cell = data.z_cells[0]
    assert data.z_cells[2] == data.z_cells[3] == tumour_cell != data.z_cells[1]
    _, ventricles, dist = _regions(32, margin_px=0.0)
    r0 = brain_parameters(np.zeros((1, 4)))["tumour_radius"][0]
    # bigger ventricles: darker ventricle box; bigger tumour: darker centre (necrotic core)
    vent = _box_mean(data.images, ventricles)  # [n]
    core = _box_mean(data.images, dist < 0.5 * r0)  # [n]
    assert spearmanr(data.z[:, 1], vent)[0] < -0.8
    assert spearmanr(data.z[:, 2], core)[0] < -0.5


def test_simulate_renderer_errors_and_the_default_is_the_cell_renderer() -> None:
    with pytest.raises(ValueError, match="m=4"):
        simulate(2, 3, 1, n=10, renderer="brain")
    with pytest.raises(ValueError, match="overlap"):
        simulate(2, 4, 1, n=10, renderer="brain", overlap=1.0)
    with pytest.raises(ValueError, match="unknown renderer"):
        simulate(2, 4, 1, n=10, renderer="ct")
    a = simulate(2, 4, 2, n=30, image_size=16, seed=5)
    b = simulate(2, 4, 2, n=30, image_size=16, seed=5, renderer="cells")
    np.testing.assert_array_equal(a.images, b.images)
    brain = simulate(2, 4, 2, n=30, image_size=16, seed=5, renderer="brain")
    np.testing.assert_array_equal(a.z, brain.z)  # the renderer changes the images only
    np.testing.assert_array_equal(a.B_true, brain.B_true)
    posed = simulate(2, 4, 2, n=30, image_size=16, seed=5, renderer="brain", jitter=1.0)
    assert posed.pose is not None and not np.array_equal(posed.images, brain.images)
