"""Tests of cmcl_core.simulate: the ground-truth graph, the SEM, the images, determinism."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.stats import spearmanr

from cmcl_core.render import apply_pose, cell_field, footprints
from cmcl_core.simulate import (
    GRAPH_SETTINGS,
    REALISM_PRESETS,
    Realism,
    SimulatedData,
    simulate,
    simulate_setting,
)


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


# --- realism options --------------------------------------------------------------------------


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


#: Digests of ``simulate_setting("4/10", n=200, seed=3)`` recorded before the realism options
#: existed: with every option off the simulator is the paper's, bit for bit.
_DEFAULT_DIGESTS = {
    "images": "b767c92b8e396e042f5ff7451a0953f11bf1bad0534aee059aef39ee154520cb",
    "u": "a93b51a4c479fe2669d386d09a9e4e1f474b3c57f9a0d6f1633e926c953b25cc",
    "z": "5671fb0d39f75a2ed7d417b6a48b7491ad9ccd9ce88d031bda47cdda5ef58ecd",
    "B_true": "e1b0d6e88bcd7eee0f7765d442afcca59b59e0e3682d0f4c5eabce883e3e90d2",
}


def test_options_off_reproduce_the_earlier_simulator_bit_for_bit() -> None:
    for data in (
        simulate_setting("4/10", n=200, seed=3),
        simulate_setting("4/10", n=200, seed=3, **REALISM_PRESETS["clean"].kwargs()),
    ):
        assert {f: _sha(getattr(data, f)) for f in _DEFAULT_DIGESTS} == _DEFAULT_DIGESTS
        assert data.confounded == () and data.pose is None and data.site_gain == ()


def test_presets_switch_on_one_factor_each() -> None:
    assert set(REALISM_PRESETS) == {"clean", "pose", "overlap", "correlated", "site", "all"}
    assert REALISM_PRESETS["clean"] == Realism()
    on = {name: {k for k, v in r.kwargs().items() if v} for name, r in REALISM_PRESETS.items()}
    assert on["pose"] == {"jitter"} and on["overlap"] == {"overlap"}
    assert on["correlated"] == {"latent_correlation"} and on["site"] == {"n_sites"}
    assert on["all"] == {"jitter", "overlap", "latent_correlation", "n_sites"}
    assert Realism.preset("all").n_sites == 3
    with pytest.raises(ValueError, match="unknown realism preset"):
        Realism.preset("hospital")
    data = simulate_setting("4/10", n=50, image_size=16, seed=1, **Realism.preset("all").kwargs())
    assert data.images.shape == (50, 1, 16, 16) and data.u_names[-1] == "site"
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0


def test_apply_pose_moves_rotates_and_keeps_the_identity() -> None:
    img = np.zeros((1, 1, 32, 32))
    img[0, 0, 10:14, 8:12] = 1.0  # a bright square centred on row 11.5, column 9.5

    def centroid(a: np.ndarray) -> tuple[float, float]:
        rows, cols = np.indices(a.shape)
        return float((a * rows).sum() / a.sum()), float((a * cols).sum() / a.sum())

    np.testing.assert_allclose(apply_pose(img, np.array([[0.0, 0.0, 0.0, 1.0]])), img, atol=1e-12)
    moved = apply_pose(img, np.array([[3.0, -2.0, 0.0, 1.0]]))[0, 0]  # 3 right, 2 up
    np.testing.assert_allclose(centroid(moved), (9.5, 12.5), atol=1e-6)
    # clockwise on screen: a point up-left of the centre (15.5, 15.5) goes up-right
    turned = apply_pose(img, np.array([[0.0, 0.0, 90.0, 1.0]]))[0, 0]
    np.testing.assert_allclose(centroid(turned), (9.5, 19.5), atol=1e-6)


def _best_shift(a: np.ndarray, b: np.ndarray, r: int = 4) -> tuple[int, int]:
    """The whole-pixel (dx, dy) that moves ``b`` onto ``a`` best (inner pixels compared)."""
    errs = {
        (dx, dy): float(((a - np.roll(b, (dy, dx), axis=(0, 1)))[r:-r, r:-r] ** 2).mean())
        for dx in range(-r, r + 1)
        for dy in range(-r, r + 1)
    }
    return min(errs, key=errs.__getitem__)


def test_jitter_moves_each_image_by_its_recorded_pose() -> None:
    clean = simulate_setting("4/10", n=120, seed=3)
    posed = simulate_setting("4/10", n=120, seed=3, jitter=1.0)
    # the pose has its own generator: the graph, u and z are the clean data's
    for field in ("u", "z", "B_true"):
        np.testing.assert_array_equal(getattr(posed, field), getattr(clean, field))
    assert posed.pose is not None and posed.pose.shape == (120, 4)
    dx, dy, angle, scale = posed.pose.T
    # jitter=1 at 32 px: shift sd 1.6 px (clipped at 3.2), rotation sd 5 degrees, zoom sd 5 %
    assert 1.1 < dx.std() < 2.1 and 1.1 < dy.std() < 2.1 and np.abs(dx).max() <= 3.2 + 1e-9
    assert 3.5 < angle.std() < 6.5 and np.abs(angle).max() <= 10 + 1e-9
    assert 0.03 < scale.std() < 0.07 and np.abs(scale - 1).max() <= 0.1 + 1e-9
    found = np.array([_best_shift(posed.images[i, 0], clean.images[i, 0]) for i in range(120)])
    assert np.corrcoef(found[:, 0], dx)[0, 1] > 0.85
    assert np.corrcoef(found[:, 1], dy)[0, 1] > 0.85
    assert (np.abs(found).max(axis=1) >= 1).mean() > 0.5  # most images moved a whole pixel
    still = np.array([_best_shift(clean.images[i, 0], clean.images[i, 0]) for i in range(20)])
    assert not still.any()


def test_footprints_and_field() -> None:
    cells = np.array([0, 12])  # corner (0, 0) and centre (2, 2) of a 5 x 5 matrix
    one = footprints(cells, 5, 0.0)
    np.testing.assert_array_equal(one.sum(axis=1), [1.0, 1.0])
    wide = footprints(cells, 5, 1.0)  # [2, 25]
    np.testing.assert_allclose(wide[1, [7, 11, 13, 17]], np.exp(-0.5))  # neighbours of (2, 2)
    np.testing.assert_allclose(wide[1, 6], np.exp(-1.0))  # a diagonal neighbour
    values, background = np.array([[2.0, -3.0]]), np.full(25, 0.5)
    field = cell_field(values, background, one)[0]  # [25]
    assert field[0] == 2.0 and field[12] == -3.0 and field[1] == 0.5
    shared = cell_field(values, background, wide)[0]  # [25]
    # cell (1, 1) is covered 2 exp(-1) < 1: the background fills the rest
    k = wide[:, 6]
    np.testing.assert_allclose(shared[6], k @ values[0] + (1 - k.sum()) * 0.5)
    # two adjacent latents cover each other's cells more than once: a weighted mean, no background
    near = footprints(np.array([12, 13]), 5, 1.0)  # (2, 2) and (2, 3)
    both = cell_field(values, background, near)[0]
    np.testing.assert_allclose(both[12], (2.0 - 3.0 * np.exp(-0.5)) / (1 + np.exp(-0.5)))


def test_overlap_lets_a_latent_show_in_its_neighbours_cell() -> None:
    kwargs = dict(d=3, m=8, n_edges=3, n=500, image_size=33, seed=2)
    sharp, blurred = simulate(**kwargs), simulate(**kwargs, overlap=1.0)
    np.testing.assert_array_equal(sharp.z, blurred.z)
    g = sharp.grid_size
    cells = np.array(sharp.z_cells)  # [m, 2]
    dist = np.abs(cells[:, None] - cells[None]).sum(-1) + 99 * np.eye(len(cells), dtype=int)
    j, k = np.unravel_index(np.argmin(dist), dist.shape)  # two latents in adjacent cells
    assert dist[j, k] == 1
    r, c = cells[k] * 32 // (g - 1)  # the pixel at latent k's cell

    def rho(data: SimulatedData, latent: int) -> float:
        return float(spearmanr(data.z[:, latent], data.images[:, 0, r, c]).statistic)

    assert abs(rho(sharp, j)) < 0.12  # one cell per latent: k's pixel ignores z_j
    assert rho(blurred, j) > 0.3  # overlapping footprints: z_j shows in k's cell too
    assert rho(blurred, k) > 0.4  # ... where z_k still shows most


def test_latent_correlation_confounds_the_chosen_latents_only() -> None:
    c = 1.0
    clean = simulate(5, 6, 3, n=4000, seed=9)
    data = simulate(5, 6, 3, n=4000, seed=9, latent_correlation=c)
    assert len(data.confounded) == 3 and len(set(data.confounded)) == 3
    np.testing.assert_array_equal(data.B_true, clean.B_true)  # the graph is unchanged
    corr = np.corrcoef(data.z.T)  # [m, m]
    std = data.z.std(axis=0)
    for a in range(6):
        for b in range(a + 1, 6):
            if a in data.confounded and b in data.confounded:
                # cov(z_a, z_b) = c^2 var(h): the only path between two latents runs through h
                assert abs(corr[a, b] - c**2 / (std[a] * std[b])) < 0.05, (a, b)
                assert corr[a, b] > 0.2
            else:
                assert abs(corr[a, b]) < 0.06, (a, b)
    roots = [j for j in data.confounded if data.B_true[:, 5 + j].sum() == 0]
    for j in roots:  # a confounded root is N(0, 1 + c^2)
        assert abs(data.z[:, j].std() - np.sqrt(1 + c**2)) < 0.08
    with pytest.raises(ValueError, match="m >= 2"):
        simulate(2, 1, 1, n=10, latent_correlation=0.5)


def test_sites_set_contrast_and_cause_a_free_latent() -> None:
    d, m, n = 4, 6, 1500
    clean = simulate_setting("4/10", n=n, seed=3)
    data = simulate_setting("4/10", n=n, seed=3, n_sites=3)
    assert data.u.shape == (n, d + 1) and data.B_true.shape == (d + 1 + m, d + 1 + m)
    assert data.u_names == (*clean.u_names, "site") and data.u_types[-1] == "categorical"
    np.testing.assert_array_equal(data.u[:, :d], clean.u)
    codes = data.u[:, d].astype(int)
    assert set(np.unique(data.u[:, d])) == {0.0, 1.0, 2.0}
    # the old graph is kept, and one more edge: site -> a latent on no other edge
    keep = np.r_[0:d, d + 1 : d + 1 + m]
    np.testing.assert_array_equal(data.B_true[np.ix_(keep, keep)], clean.B_true)
    assert data.B_true[:, d].sum() == 0 and data.B_true[d].sum() == 1
    j = int(np.flatnonzero(data.B_true[d])[0]) - d - 1
    assert clean.B_true[d + j].sum() == 0 and clean.B_true[:, d + j].sum() == 0
    assert ("site", f"z{j}") in data.edges
    # ... shifted by its site's mean (levels 1 sd apart); the other latents untouched
    for k in range(3):
        np.testing.assert_allclose(
            data.z[codes == k, j] - clean.z[codes == k, j], data.site_shift[k], atol=1e-12
        )
    np.testing.assert_array_equal(np.delete(data.z, j, 1), np.delete(clean.z, j, 1))
    assert sorted(data.site_shift) == [-1.0, 0.0, 1.0]
    # each site has its own contrast and brightness
    assert all(0.7 <= g <= 1.3 for g in data.site_gain)
    assert all(-0.15 <= o <= 0.15 for o in data.site_offset)
    means = np.array([data.images[codes == k].mean() for k in range(3)])
    expected = [
        np.clip(
            0.5 + data.site_gain[k] * (clean.images[codes == k] - 0.5) + data.site_offset[k], 0, 1
        ).mean()
        for k in range(3)
    ]
    np.testing.assert_allclose(means, expected, atol=0.03)
    assert np.ptp(means) > 0.1
    assert np.ptp([clean.images[codes == k].mean() for k in range(3)]) < 0.02


def test_a_site_without_a_free_latent_causes_nothing() -> None:
    data = simulate(3, 3, 3, n=60, image_size=8, seed=0, n_sites=2)
    assert data.B_true.shape == (7, 7) and data.B_true[3].sum() == 0
    assert data.site_shift == (0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"jitter": -0.1}, "jitter"),
        ({"overlap": float("nan")}, "overlap"),
        ({"latent_correlation": -1.0}, "latent_correlation"),
        ({"n_sites": 1}, "n_sites"),
        ({"n_sites": -2}, "n_sites"),
    ],
)
def test_invalid_realism_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate(2, 3, 1, n=10, **kwargs)


def test_cmcl_fits_and_scores_a_data_set_with_sites() -> None:
    from cmcl_core import CMCL
    from cmcl_core.metrics import count_accuracy, mcc

    data = simulate_setting("4/10", n=200, image_size=16, seed=1, **REALISM_PRESETS["all"].kwargs())
    model = CMCL(latent_dim=6, epochs=2, min_epochs=1, num_threads=1, seed=0, device="cpu").fit(
        data.images, data.u, u_types=data.u_types, u_names=data.u_names
    )
    W = model.weighted_adjacency_  # [(d + 1) + m, (d + 1) + m], site among u
    assert W.shape == data.B_true.shape == (11, 11)
    scores = count_accuracy(data.B_true, (W != 0).astype(int) * (1 - np.eye(11, dtype=int)))
    assert set(scores) == {"fdr", "tpr", "fpr", "shd", "nnz"}
    z = model.transform(data.images, data.u)  # [n, 6]
    assert 0.0 <= mcc(data.z, z)[0] <= 1.0
