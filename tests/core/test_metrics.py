"""Tests of cmcl_core.metrics: hand-worked graph metrics, MCC, MIC against minepy's values."""

from __future__ import annotations

import numpy as np
import pytest

from cmcl_core.metrics import (
    _characteristic_matrix,
    _equipartition,
    count_accuracy,
    mcc,
    mic,
    mic_matched,
)

# Truth on 4 nodes: 0 -> 1 -> 2, node 3 isolated. Condition negatives: 4*3/2 - 2 = 4.
B_TRUE = np.zeros((4, 4), dtype=int)
B_TRUE[0, 1] = B_TRUE[1, 2] = 1


def _graph(*edges: tuple[int, int]) -> np.ndarray:
    B = np.zeros((4, 4), dtype=int)
    for i, j in edges:
        B[i, j] = 1
    return B


@pytest.mark.parametrize(
    ("est", "expected"),
    [
        # perfect
        (_graph((0, 1), (1, 2)), {"shd": 0, "tpr": 1.0, "fdr": 0.0, "fpr": 0.0, "nnz": 2}),
        # 0 -> 1 reversed: not a TP, counts 1 in SHD, FDR 1/2, FPR 1/4
        (_graph((1, 0), (1, 2)), {"shd": 1, "tpr": 0.5, "fdr": 0.5, "fpr": 0.25, "nnz": 2}),
        # an extra edge 0 -> 3
        (
            _graph((0, 1), (1, 2), (0, 3)),
            {"shd": 1, "tpr": 1.0, "fdr": 1 / 3, "fpr": 0.25, "nnz": 3},
        ),
        # 1 -> 2 missing
        (_graph((0, 1)), {"shd": 1, "tpr": 0.5, "fdr": 0.0, "fpr": 0.0, "nnz": 1}),
        # empty prediction
        (_graph(), {"shd": 2, "tpr": 0.0, "fdr": 0.0, "fpr": 0.0, "nnz": 0}),
        # reversed 0 - 1, extra 2 -> 3, missing 1 -> 2
        (_graph((1, 0), (2, 3)), {"shd": 3, "tpr": 0.0, "fdr": 1.0, "fpr": 0.5, "nnz": 2}),
    ],
    ids=["perfect", "reversed", "extra", "missing", "empty", "mixed"],
)
def test_count_accuracy_hand_worked(est: np.ndarray, expected: dict[str, float]) -> None:
    got = count_accuracy(B_TRUE, est)
    assert set(got) == {"shd", "tpr", "fpr", "fdr", "nnz"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_count_accuracy_accepts_weighted_estimates() -> None:
    W = np.zeros((4, 4))
    W[0, 1], W[2, 1], W[0, 3] = 0.7, -1.3, 1e-3  # 2 -> 1 is the reversal of 1 -> 2
    got = count_accuracy(B_TRUE, W)
    assert got == count_accuracy(B_TRUE, _graph((0, 1), (2, 1), (0, 3)))
    assert got["shd"] == 2 and got["nnz"] == 3 and got["tpr"] == 0.5


def test_count_accuracy_cpdag_undirected_scored_favourably() -> None:
    est = np.zeros((4, 4), dtype=int)
    est[1, 0] = -1  # undirected 0 - 1: counts as the true 0 -> 1
    est[1, 2] = 1
    est[3, 2] = -1  # undirected 2 - 3: not in the skeleton, a false positive
    got = count_accuracy(B_TRUE, est, cpdag=True)
    assert got["tpr"] == 1.0
    assert got["nnz"] == 3
    assert got["fdr"] == pytest.approx(1 / 3)
    assert got["shd"] == 1
    with pytest.raises(ValueError, match="only once"):
        count_accuracy(B_TRUE, -(B_TRUE + B_TRUE.T), cpdag=True)


def test_count_accuracy_two_cycle_and_errors() -> None:
    got = count_accuracy(B_TRUE, _graph((0, 1), (1, 0), (1, 2)))
    assert got["tpr"] == 1.0 and got["shd"] == 1 and got["fdr"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same shape"):
        count_accuracy(B_TRUE, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="self-loops"):
        count_accuracy(B_TRUE, np.eye(4))


def test_count_accuracy_random_graphs_against_definitions() -> None:
    rng = np.random.default_rng(0)
    d = 8
    for _ in range(20):
        B_true = np.triu(rng.random((d, d)) < 0.3, k=1).astype(int)
        B_est = np.triu(rng.random((d, d)) < 0.3, k=1).astype(int)
        flip = rng.random((d, d)) < 0.5
        B_est = np.where(flip, 0, B_est) + np.where(flip, B_est, 0).T  # some reversed edges
        got = count_accuracy(B_true, B_est)
        pairs = [(i, j) for i in range(d) for j in range(d) if B_est[i, j]]
        tp = sum(B_true[i, j] for i, j in pairs)
        rev = sum(B_true[j, i] for i, j in pairs)
        skel_t = {frozenset(p) for p in zip(*np.nonzero(B_true), strict=True)}
        skel_e = {frozenset(p) for p in pairs}
        assert got["tpr"] == pytest.approx(tp / max(B_true.sum(), 1))
        assert got["fdr"] == pytest.approx((len(pairs) - tp) / max(len(pairs), 1))
        assert got["shd"] == len(skel_t ^ skel_e) + rev


def test_mcc_permuted_monotone_copy_is_one() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((500, 4))
    perm = np.array([2, 0, 3, 1])
    z_est = np.column_stack([np.exp(z[:, 2]), -(z[:, 0] ** 3), np.tanh(z[:, 3]), 5 * z[:, 1] + 2])
    score, matching = mcc(z, z_est)
    assert score == pytest.approx(1.0)
    np.testing.assert_array_equal(matching, np.argsort(perm))
    assert mcc(z, z_est, method="pearson")[0] < 0.99  # Pearson is not rank invariant


def test_mcc_unequal_dimensions_and_independent() -> None:
    rng = np.random.default_rng(2)
    z = rng.standard_normal((400, 3))
    noise = rng.standard_normal((400, 2))
    score, matching = mcc(z, np.column_stack([noise[:, 0], z[:, 1], z[:, 0], z[:, 2], noise[:, 1]]))
    assert score == pytest.approx(1.0)
    np.testing.assert_array_equal(matching, [2, 1, 3])
    score, matching = mcc(z, z[:, [1]])  # fewer estimated than true: the others count 0
    assert score == pytest.approx(1 / 3)
    assert sorted(matching.tolist()) == [-1, -1, 0]
    assert mcc(z, rng.standard_normal((400, 3)))[0] < 0.15
    with pytest.raises(ValueError, match="method"):
        mcc(z, z, method="kendall")


def test_equipartition_bins_and_ties() -> None:
    np.testing.assert_array_equal(
        _equipartition(np.arange(10.0), 3), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    )
    tied = np.array([0.0, 0, 0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(_equipartition(tied, 2), [0, 0, 0, 0, 1, 1, 1, 1])
    assert _equipartition(np.zeros(7), 3).tolist() == [0] * 7  # ties never split


def test_mic_matches_minepy_published_example() -> None:
    # minepy's documented example (docs "Python API", examples/python_example.py):
    # noiseless MIC 1.0, MAS 0.726071574374; with noise MIC 0.505716693417, MAS 0.365399904262.
    x = np.linspace(0, 1, 1000)
    y = np.sin(10 * np.pi * x) + x
    M = _characteristic_matrix(x, y, 0.6, 15)
    assert M.max() == pytest.approx(1.0)
    assert np.abs(M - M.T).max() == pytest.approx(0.726071574374, abs=1e-9)
    y_noisy = y + np.random.RandomState(0).uniform(-1, 1, x.shape[0])
    assert mic(x, y_noisy) == pytest.approx(0.505716693417, abs=1e-9)
    M = _characteristic_matrix(x, y_noisy, 0.6, 15)
    assert np.abs(M - M.T).max() == pytest.approx(0.365399904262, abs=1e-9)


def test_mic_functional_relations_near_one_independent_low() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 500)
    for y in (2 * x + 1, x**2, np.sin(3 * np.pi * x)):
        assert mic(x, y) >= 0.9
    a, b = rng.uniform(size=(2, 1000))
    assert mic(a, b) < 0.2
    a, b = a[:200], b[:200]
    assert mic(a, b) == pytest.approx(mic(b, a))  # symmetric
    assert mic(a, b) == pytest.approx(mic(np.exp(3 * a), b))  # rank based
    assert mic(a, np.ones(200)) == 0.0
    with pytest.raises(ValueError, match="same length"):
        mic(a, b[:10])


def test_mic_matched_recovers_permutation() -> None:
    rng = np.random.default_rng(4)
    z = rng.uniform(-1, 1, (200, 3))
    z_est = np.column_stack([z[:, 2] ** 2, np.cos(2 * z[:, 0]), rng.uniform(size=200), z[:, 1]])
    score, matching = mic_matched(z, z_est)
    np.testing.assert_array_equal(matching, [1, 3, 0])
    assert score >= 0.9
    direct = np.mean([mic(z[:, i], z_est[:, j]) for i, j in enumerate(matching)])
    assert score == pytest.approx(direct)  # the shared-preparation path equals mic()
    assert mic_matched(z[:, :2], rng.uniform(size=(200, 2)))[0] < 0.35
