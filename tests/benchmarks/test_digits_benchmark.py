"""Tests of the digits benchmark's helpers (benchmarks/digits.py) with a stand-in model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from benchmarks import digits


def _data(n: int = 40) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    u = np.stack([rng.uniform(0, 10, n), np.arange(n) % 10], 1)  # [n, 2]: angle, digit
    return SimpleNamespace(
        images=rng.random((n, 1, 28, 28)).astype(np.float32),
        u=u,
        u_names=("angle", "digit"),
        transform=np.tanh(u[:, 0] - 5),
    )


class _ShiftModel:
    """Stand-in: intervening on angle brightens the image by value / 10."""

    def intervene(self, x, u, do):
        return np.clip(x * 0 + do["angle"] / 10.0, 0, 1)


def test_transform_latent_picks_the_monotone_coordinate() -> None:
    data = _data()
    z = np.stack([np.random.default_rng(1).normal(size=40), 3 * data.transform + 1], 1)
    k, rho = digits._transform_latent(z, data.transform)
    assert k == 1 and rho > 0.99


def test_edge_verdict() -> None:
    edges = [("angle", "z1", 0.8), ("z3", "digit", 0.4)]
    assert digits._edge_verdict(edges, "angle", "z1") == "correct"
    assert digits._edge_verdict(edges, "digit", "z3") == "reversed"
    assert digits._edge_verdict(edges, "angle", "z0") == "missing"


def test_intervention_grid_layout_and_png(tmp_path) -> None:
    data, values = _data(), np.linspace(0, 10, 5)
    rows, grid = digits.intervention_grid(_ShiftModel(), data, values)
    assert grid.shape == (10, 5, 1, 28, 28)
    assert (data.u[rows, 1] == np.arange(10)).all()  # one row per digit, in order
    np.testing.assert_allclose(grid[:, :, 0, 0, 0], np.tile(values / 10, (10, 1)))
    png = tmp_path / "grid.png"
    digits.save_grid_png(data, rows, grid, values, "t", png)
    assert png.stat().st_size > 1000
