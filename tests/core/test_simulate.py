"""Tests of cmcl_core.simulate: the ground-truth graph, the SEM, the images, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from cmcl_core.simulate import GRAPH_SETTINGS, SimulatedData, simulate, simulate_setting


def _is_dag(B: np.ndarray) -> bool:
    reach = B.astype(bool)
    for _ in range(B.shape[0]):  # transitive closure by repeated squaring-free expansion
        reach = reach | (reach.astype(int) @ B.astype(int) > 0)
    return not np.diag(reach).any()


def _check_graph(data: SimulatedData, d: int, m: int, n_edges: int) -> None:
    B = data.B_true
    assert B.shape == (d + m, d + m)
    assert set(np.unique(B)) <= {0, 1}
    assert B.sum() == n_edges
    assert _is_dag(B)
    # only u-z edges, one-to-one: no u-u or z-z edges, each node on at most one edge
    assert B[:d, :d].sum() == 0 and B[d:, d:].sum() == 0
    degree = B.sum(axis=0) + B.sum(axis=1)
    assert degree.max(initial=0) <= 1
    assert len(data.edges) == n_edges
    for src, tgt in data.edges:
        assert {src[0], tgt[0]} == {"u", "z"}


@pytest.mark.parametrize("name", sorted(GRAPH_SETTINGS))
def test_every_setting_small(name: str) -> None:
    d, m, n_edges = GRAPH_SETTINGS[name]
    data = simulate_setting(name, n=40, image_size=16, seed=3)
    assert data.setting == name
    assert data.u.shape == (40, d) and data.z.shape == (40, m)
    assert data.u_names == tuple(f"u{i}" for i in range(d))
    assert data.z_names == tuple(f"z{j}" for j in range(m))
    assert data.u_types == ("continuous",) * d
    assert data.images.shape == (40, 1, 16, 16)
    assert len(set(data.z_cells)) == m  # distinct cells
    _check_graph(data, d, m, n_edges)
    # the edge count of the name "edges/nodes" matches
    edges, nodes = (int(v) for v in name.split("/"))
    assert (n_edges, d + m) == (edges, nodes)


def test_both_directions_occur_and_random_pairs() -> None:
    directions = set()
    pairs = set()
    for seed in range(6):
        data = simulate(6, 6, 3, n=20, image_size=8, seed=seed)
        _check_graph(data, 6, 6, 3)
        for src, tgt in data.edges:
            directions.add(src[0] + tgt[0])
            pairs.add(frozenset((src, tgt)))
    assert directions == {"uz", "zu"}
    assert len(pairs) > 6


def test_images_shape_range_and_determinism() -> None:
    a = simulate(4, 6, 4, n=300, image_size=32, seed=7, n_binary=1)
    b = simulate(4, 6, 4, n=300, image_size=32, seed=7, n_binary=1)
    c = simulate(4, 6, 4, n=300, image_size=32, seed=8, n_binary=1)
    assert a.images.shape == (300, 1, 32, 32) and a.images.dtype == np.float32
    assert a.images.min() >= 0.0 and a.images.max() <= 1.0
    assert a.images.std() > 0.05  # not a constant picture
    for field in ("images", "u", "z", "B_true"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.z_cells == b.z_cells
    assert not np.array_equal(a.z, c.z)
    assert a.u.dtype == np.float64 and a.z.dtype == np.float64
    assert a.uz.shape == (300, 10) and a.var_names == a.u_names + a.z_names


def test_each_latent_is_visible_in_its_cell() -> None:
    data = simulate(3, 8, 3, n=500, image_size=33, seed=2)
    g, size = data.grid_size, 33
    for j, (r, c) in enumerate(data.z_cells):
        # bilinear up-sampling with aligned corners puts cell (r, c) exactly on this pixel
        pixel = data.images[:, 0, r * (size - 1) // (g - 1), c * (size - 1) // (g - 1)]
        assert spearmanr(data.z[:, j], pixel).statistic > 0.8, j  # monotone warp, small noise


def test_structured_variables_are_independent_roots() -> None:
    data = simulate(5, 5, 5, n=3000, seed=4)
    d = 5
    # no u has a u parent; a u with a parent has a root z parent
    for i in range(d):
        parents = np.flatnonzero(data.B_true[:, i])
        assert all(p >= d and data.B_true[:, p].sum() == 0 for p in parents)
    rho = spearmanr(data.u).statistic  # [d, d]
    off = np.abs(rho[~np.eye(d, dtype=bool)])
    assert off.max() < 0.08


def test_edges_carry_signal_and_noise_is_standard() -> None:
    data = simulate(6, 6, 6, n=2000, seed=5)
    X = data.uz
    for j in np.flatnonzero(data.B_true.sum(axis=0)):
        # child = f(parent) + N(0, 1) with std(f) >= 1: var(child) >= 2
        assert X[:, j].std() > np.sqrt(2) - 0.1
    roots = np.flatnonzero(data.B_true.sum(axis=0) == 0)
    assert np.allclose(X[:, roots].std(axis=0), 1.0, atol=0.1)  # N(0, 1) roots


def test_binary_structured_variables() -> None:
    data = simulate(4, 4, 4, n=2000, n_binary=3, seed=6)
    assert data.u_types == ("binary", "binary", "binary", "continuous")
    for i in range(3):
        assert set(np.unique(data.u[:, i])) == {0.0, 1.0}
        assert 0.15 < data.u[:, i].mean() < 0.85
    assert len(np.unique(data.u[:, 3])) > 100
    assert data.var_types == data.u_types + ("continuous",) * 4


def test_binary_child_depends_on_its_parent() -> None:
    for seed in range(20):
        data = simulate(1, 1, 1, n=2000, n_binary=1, seed=seed)
        if data.B_true[1, 0]:  # z0 -> u0 through the logistic link
            break
    else:
        pytest.fail("no z -> u draw in 20 seeds")
    z, u = data.z[:, 0], data.u[:, 0]
    # P(u = 1 | z) = sigmoid(f(z)) varies with z: compare the rate across deciles of z
    deciles = np.digitize(z, np.quantile(z, np.linspace(0.1, 0.9, 9)))
    rates = np.array([u[deciles == k].mean() for k in range(10)])
    assert rates.max() - rates.min() > 0.3


def test_more_than_25_latents_use_a_larger_grid() -> None:
    data = simulate(2, 30, 2, n=10, image_size=12, seed=0)
    assert data.grid_size == 6 and len(set(data.z_cells)) == 30


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d": 2, "m": 3, "n_edges": 3}, "n_edges"),
        ({"d": 0, "m": 3, "n_edges": 0}, "d >= 1"),
        ({"d": 2, "m": 3, "n_edges": 1, "n_binary": 3}, "n_binary"),
        ({"d": 2, "m": 3, "n_edges": 1, "image_size": 4}, "image_size"),
        ({"d": 2, "m": 3, "n_edges": 1, "n": 1}, "samples"),
        ({"d": 2, "m": 3, "n_edges": 1, "image_noise": -1.0}, "noise"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate(**kwargs)


def test_unknown_setting() -> None:
    with pytest.raises(ValueError, match="unknown graph setting"):
        simulate_setting("7/7")


def test_digits_rotation_and_shift() -> None:
    pytest.importorskip("sklearn")  # benchmarks/digits_data.py uses scikit-learn's 8x8 digits
    from scipy.ndimage import rotate

    from benchmarks.digits_data import make_rotation_digits, make_shift_digits

    rot = make_rotation_digits(n=60, seed=1)
    shf = make_shift_digits(n=60, seed=1)
    for data, name in ((rot, "angle"), (shf, "v")):
        assert data.images.shape == (60, 1, 28, 28) and data.images.dtype == np.float32
        assert data.images.min() >= 0.0 and data.images.max() <= 1.0
        assert data.u.shape == (60, 2) and data.u_names == (name, "digit")
        assert data.u_types == ("continuous", "categorical")
        assert set(np.unique(data.u[:, 1])) <= set(range(10))
        assert data.true_edges == ((name, data.transform_name),)
        assert spearmanr(data.u[:, 0], data.transform).statistic > 0.9  # f is increasing
    assert rot.u[:, 0].min() >= 0 and rot.u[:, 0].max() <= 10
    assert shf.u[:, 0].min() >= -5 and shf.u[:, 0].max() <= 5
    # each image is its base digit rotated by `transform` degrees (as scipy.ndimage.rotate)
    for i in range(3):
        ref = rotate(rot.base_images[int(rot.u[i, 1])], rot.transform[i], reshape=False, order=1)
        assert np.corrcoef(ref.ravel(), rot.images[i, 0].ravel())[0, 1] > 0.99
    # ... or shifted down by `transform` pixels: the row centre of mass moves by that much
    rows = np.arange(28.0)
    mass = shf.images[:, 0].sum(axis=2)  # [n, 28]
    base = shf.base_images[shf.u[:, 1].astype(int)].sum(axis=2)  # [n, 28]
    moved = mass @ rows / mass.sum(1) - base @ rows / base.sum(1)
    np.testing.assert_allclose(moved, shf.transform, atol=0.3)
    again = make_shift_digits(n=60, seed=1)
    np.testing.assert_array_equal(again.images, shf.images)


def test_a_given_graph_is_simulated_as_given() -> None:
    edges = [(0, 0, True), (1, 3, False), (3, 1, True)]
    data = simulate(4, 4, 3, n=200, n_binary=2, seed=1, edges=edges)
    expected = np.zeros((8, 8), dtype=int)
    expected[0, 4] = expected[7, 1] = expected[3, 5] = 1
    np.testing.assert_array_equal(data.B_true, expected)
    assert set(np.unique(data.u[:, 1])) == {0.0, 1.0}  # a binary effect of z3
    # the random draw is unchanged when no graph is given
    np.testing.assert_array_equal(
        simulate(4, 4, 3, n=50, seed=1).B_true, simulate(4, 4, 3, n=50, seed=1).B_true
    )
    for bad, match in (
        ([(0, 0, True), (0, 1, True), (2, 2, True)], "at most one"),
        ([(0, 0, True), (1, 9, True), (2, 2, True)], "indices"),
        ([(0, 0, True)], "n_edges=3"),
    ):
        with pytest.raises(ValueError, match=match):
            simulate(4, 4, 3, n=50, edges=bad)
