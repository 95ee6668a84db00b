"""Evaluation metrics for recovered graphs and representations.

* :func:`count_accuracy`: SHD, TPR, FPR, FDR and NNZ of an estimated graph, with the definitions of
  the NOTEARS reference (``notears/utils.py``, Zheng et al. 2018, 2020) used by the paper's
  Figure 2 and Table 2.
* :func:`mcc`: mean correlation coefficient after Hungarian matching, the identifiability metric
  of iVAE (Khemakhem et al. 2020).
* :func:`mic`: the maximal information coefficient (Reshef et al. 2011, "Detecting novel
  associations in large data sets", Science 334:1518; algorithm in its SOM, Algorithms 1-5),
  which the paper's Table 1 reports. Written by hand because the maintained implementation
  (minepy) does not build on Python 3.11 / numpy 2.
* :func:`mic_matched`: the Table 1 protocol (Section 4.1): each true latent is matched to the
  estimated coordinate with the highest MIC, each estimated coordinate used at most once.
"""

from __future__ import annotations

import bisect
import logging
import math
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import xlogy
from scipy.stats import rankdata

from cmcl_core.graph import is_dag

logger = logging.getLogger(__name__)

__all__ = ["count_accuracy", "mcc", "mic", "mic_matched"]


# --------------------------------------------------------------------------------------------
# Graph metrics
# --------------------------------------------------------------------------------------------


def count_accuracy(B_true: np.ndarray, B_est: np.ndarray, cpdag: bool = False) -> dict[str, float]:
    """Structural accuracy of an estimated graph, as defined by the NOTEARS reference.

    A predicted edge ``i -> j`` is a true positive when ``i -> j`` is in the truth, *reversed*
    when ``j -> i`` is, and a false positive otherwise. Then

    * ``tpr = true positives / true edges`` (a reversed edge is not a true positive),
    * ``fdr = (reversed + false positives) / predicted edges``,
    * ``fpr = (reversed + false positives) / (d (d - 1) / 2 - true edges)``,
    * ``shd = extra + missing + reversed`` on the skeleton (a reversed edge counts 1),
    * ``nnz`` = number of predicted edges.

    Unlike the reference, a weighted ``B_est`` is accepted (any nonzero entry is an edge) and a
    cyclic ``B_est`` is scored with a warning instead of rejected (a 2-cycle ``i <-> j`` over a
    true ``i -> j`` counts one true positive and one reversed edge).

    Args:
        B_true: ``[d, d]`` ground truth, nonzero ``B_true[i, j]`` means ``i -> j``.
        B_est: ``[d, d]`` estimate, nonzero means an edge; with ``cpdag=True`` the values must
            be in ``{0, 1, -1}`` where ``-1`` marks an undirected edge of a CPDAG (stored once),
            scored favourably (as correctly oriented when the skeleton edge exists), as in the
            reference and the paper's treatment of GS-GES (Section 4.1).
        cpdag: Interpret ``-1`` entries as undirected edges.

    Returns:
        ``{"fdr", "tpr", "fpr", "shd", "nnz"}`` as floats (``shd`` and ``nnz`` are whole numbers).

    Raises:
        ValueError: On mismatched or non-square shapes, a nonzero diagonal, or invalid CPDAG values.
    """
    B_true = np.asarray(B_true)
    B_est = np.asarray(B_est)
    if B_true.ndim != 2 or B_true.shape[0] != B_true.shape[1] or B_est.shape != B_true.shape:
        raise ValueError(
            f"count_accuracy needs two square matrices of the same shape; got {B_true.shape} "
            f"and {B_est.shape}. Pass [d, d] adjacency matrices over the same variables."
        )
    if np.any(np.diag(B_true) != 0) or np.any(np.diag(B_est) != 0):
        raise ValueError("count_accuracy: self-loops on the diagonal; zero the diagonal first.")
    truth = (B_true != 0).astype(np.int64)
    if cpdag:
        if not np.isin(B_est, (-1, 0, 1)).all():
            raise ValueError("count_accuracy(cpdag=True) needs B_est values in {0, 1, -1}.")
        if ((B_est == -1) & (B_est.T == -1)).any():
            raise ValueError(
                "count_accuracy(cpdag=True): an undirected edge (-1) must be stored only once."
            )
        directed = (B_est == 1).astype(np.int64)
        undirected = (B_est == -1).astype(np.int64)
    else:
        directed = (B_est != 0).astype(np.int64)
        undirected = np.zeros_like(directed)
        if not is_dag(directed):
            logger.warning("count_accuracy: the estimated graph has a directed cycle.")
    d = truth.shape[0]
    # linear indices of nonzeros, as in the reference
    pred_und = np.flatnonzero(undirected)
    pred = np.flatnonzero(directed)
    cond = np.flatnonzero(truth)
    cond_reversed = np.flatnonzero(truth.T)
    cond_skeleton = np.union1d(cond, cond_reversed)
    true_pos = np.intersect1d(pred, cond)
    true_pos_und = np.intersect1d(pred_und, cond_skeleton)
    false_pos = np.setdiff1d(pred, cond_skeleton)
    false_pos_und = np.setdiff1d(pred_und, cond_skeleton)
    extra = np.setdiff1d(pred, cond)
    reverse = np.intersect1d(extra, cond_reversed)
    pred_size = len(pred) + len(pred_und)
    cond_neg_size = 0.5 * d * (d - 1) - len(cond)
    n_wrong = len(reverse) + len(false_pos) + len(false_pos_und)
    fdr = n_wrong / max(pred_size, 1)
    tpr = (len(true_pos) + len(true_pos_und)) / max(len(cond), 1)
    fpr = n_wrong / max(cond_neg_size, 1)
    # structural Hamming distance on the skeleton (lower triangle), plus reversals
    skel_est = np.tril((directed + undirected + (directed + undirected).T) != 0, k=-1)
    skel_true = np.tril((truth + truth.T) != 0, k=-1)
    extra_lower = int(np.sum(skel_est & ~skel_true))
    missing_lower = int(np.sum(skel_true & ~skel_est))
    shd = extra_lower + missing_lower + len(reverse)
    return {
        "fdr": float(fdr),
        "tpr": float(tpr),
        "fpr": float(fpr),
        "shd": float(shd),
        "nnz": float(pred_size),
    }


# --------------------------------------------------------------------------------------------
# Representation metrics
# --------------------------------------------------------------------------------------------


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be [n] or [n, k]; got shape {a.shape}.")
    return a


def _check_pair(z_true: np.ndarray, z_est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z_true = _as_2d(z_true, "z_true")
    z_est = _as_2d(z_est, "z_est")
    if z_true.shape[0] != z_est.shape[0]:
        raise ValueError(
            f"z_true has {z_true.shape[0]} rows and z_est {z_est.shape[0]}; pass the same samples."
        )
    if z_true.shape[0] < 3:
        raise ValueError("need at least 3 samples to compare representations.")
    if not (np.isfinite(z_true).all() and np.isfinite(z_est).all()):
        raise ValueError("z_true and z_est must be finite (no NaN or inf).")
    return z_true, z_est


def _hungarian(score: np.ndarray) -> tuple[float, np.ndarray]:
    """Maximum-weight matching of rows (true) to columns (estimated) of ``score`` [m1, m2].

    Returns the mean score over the ``m1`` rows (an unmatched row, when ``m2 < m1``, scores 0)
    and ``matching`` [m1] with the matched column, or -1.
    """
    rows, cols = linear_sum_assignment(score, maximize=True)
    matching = np.full(score.shape[0], -1, dtype=np.int64)
    matching[rows] = cols
    return float(score[rows, cols].sum() / score.shape[0]), matching


def _abs_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson correlation| between the columns of a [n, m1] and b [n, m2]; 0 for constants."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    na = np.linalg.norm(a, axis=0)  # [m1]
    nb = np.linalg.norm(b, axis=0)  # [m2]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (a.T @ b) / np.outer(na, nb)  # [m1, m2]
    return np.nan_to_num(np.abs(c), nan=0.0, posinf=0.0, neginf=0.0)


def mcc(
    z_true: np.ndarray, z_est: np.ndarray, method: str = "spearman"
) -> tuple[float, np.ndarray]:
    """Mean correlation coefficient after Hungarian matching (iVAE's identifiability metric).

    Args:
        z_true: ``[n, m1]`` true latents.
        z_est: ``[n, m2]`` estimated latents; ``m2`` may differ from ``m1``.
        method: ``"spearman"`` (rank correlation; invariant to monotone transforms) or
            ``"pearson"``.

    Returns:
        ``(score, matching)``: ``score`` is the mean over the ``m1`` true latents of
        ``|corr(z_true[:, i], z_est[:, matching[i]])|`` (in [0, 1]; a true latent left unmatched
        because ``m2 < m1`` counts 0), ``matching[i]`` the matched column of ``z_est`` or -1.
    """
    return _hungarian(correlation_matrix(z_true, z_est, method))


def correlation_matrix(
    z_true: np.ndarray, z_est: np.ndarray, method: str = "spearman"
) -> np.ndarray:
    """``[m1, m2]`` |correlation| of every true latent with every estimated one (what
    :func:`mcc` matches; a row's entries off the matched column show how mixed it is)."""
    z_true, z_est = _check_pair(z_true, z_est)
    if method == "spearman":
        z_true, z_est = rankdata(z_true, axis=0), rankdata(z_est, axis=0)
    elif method != "pearson":
        raise ValueError(f"mcc: method must be 'spearman' or 'pearson', got {method!r}.")
    return _abs_corr(z_true, z_est)


# --------------------------------------------------------------------------------------------
# Maximal information coefficient (Reshef et al. 2011, SOM Algorithms 1-5: ApproxMaxMI)
# --------------------------------------------------------------------------------------------


def _equipartition(sorted_values: np.ndarray, k: int) -> np.ndarray:
    """EquipartitionYAxis (Reshef SOM Algorithm 3): bins of near-equal size, ties kept together.

    The greedy rule closes the current bin (holding ``h`` points) before a tie group of ``s``
    points when ``|h + s - D| >= |h - D|``, i.e. ``h + s / 2 >= D``, where ``D`` is the desired
    size, re-set to ``remaining / bins left`` at every new bin. Since ``h + s / 2`` grows along the
    groups, each bin's end is one bisection (a loop over bins, not points).

    Args:
        sorted_values: ``[n]`` values in non-decreasing order.
        k: Desired number of bins.

    Returns:
        ``[n]`` bin index (0-based, non-decreasing) of each position; at most ``k`` bins.
    """
    n = sorted_values.shape[0]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    cum = np.r_[starts, n]  # [G + 1] points before each tie group
    mid = (0.5 * (cum[:-1] + cum[1:])).tolist()  # [G] points before group g plus half of it
    cum_list = cum.tolist()
    n_groups = len(mid)
    ends = []  # first group of the next bin, per bin
    g0, row = 0, 0
    while g0 < n_groups:  # plain Python: bisect on a list is much cheaper than np.searchsorted
        desired = (n - cum_list[g0]) / (k - row) if k > row else math.inf
        # first group after g0 that does not fit: cum[g] - cum[g0] + s_g / 2 >= desired
        g1 = bisect.bisect_left(mid, cum_list[g0] + desired, lo=g0 + 1)
        ends.append(g1)
        g0, row = g1, row + 1
    sizes = np.diff(np.r_[0, cum[ends]])  # [bins] points per bin
    return np.repeat(np.arange(len(ends)), sizes)


def _superclumps(x_sorted: np.ndarray, q_sorted: np.ndarray, k_hat: int) -> np.ndarray:
    """GetClumpsPartition + GetSuperclumpsPartition (Reshef SOM Algorithms 4-5).

    Clumps are maximal runs of x-sorted points in the same row of ``Q``; points with equal x
    stay together (a tie block that spans several rows becomes its own clump). When there are
    more than ``k_hat`` clumps they are merged into ``k_hat`` superclumps by equipartition.

    Args:
        x_sorted: ``[n]`` x values, sorted.
        q_sorted: ``[n]`` row of each point (same order).
        k_hat: Maximum number of (super)clumps.

    Returns:
        ``[n]`` non-decreasing clump index per position.
    """
    new_block = np.r_[True, x_sorted[1:] != x_sorted[:-1]]
    block = np.cumsum(new_block) - 1  # [n] tie-block id
    n_blocks = int(block[-1]) + 1
    qmin = np.full(n_blocks, np.iinfo(np.int64).max)
    qmax = np.full(n_blocks, -1)
    np.minimum.at(qmin, block, q_sorted)
    np.maximum.at(qmax, block, q_sorted)
    mixed = (qmin != qmax)[block]  # [n] point lies in a tie block spanning several rows
    label = np.where(mixed, -1 - block, q_sorted)  # mixed blocks get a unique negative label
    clump = np.cumsum(np.r_[False, label[1:] != label[:-1]])  # [n]
    if clump[-1] + 1 > k_hat:
        clump = _equipartition(clump.astype(np.float64), k_hat)
    return clump


def _optimize_x_axis(
    clump: np.ndarray, q_sorted: np.ndarray, n_rows: int, x_max: int
) -> np.ndarray:
    """OptimizeXAxis (Reshef SOM Algorithm 2): best MI over column partitions, rows fixed.

    Exact dynamic programme over contiguous groups of (super)clumps: with the rows ``Q`` fixed,
    ``I(P; Q) = H(Q) - H(Q | P)`` and ``n H(Q | P) = sum_col sum_row -n_rc log(n_rc / n_c)`` is
    additive over columns, so ``G[l, t] = min_s G[l-1, s] + cost(s, t)`` over the first ``t``
    clumps (``s = t`` allows an empty column, so ``G[l]`` is the best with at most ``l`` columns).

    Args:
        clump: ``[n]`` clump index of each x-sorted point (non-decreasing).
        q_sorted: ``[n]`` row index of each point (same order).
        n_rows: Number of rows in ``Q``.
        x_max: Largest number of columns.

    Returns:
        ``[x_max - 1]``: the best mutual information (nats) with at most 2, ..., x_max columns.
    """
    n = q_sorted.shape[0]
    k = int(clump[-1]) + 1
    counts = np.zeros((k, n_rows), dtype=np.intp)
    np.add.at(counts, (clump, q_sorted), 1)  # [k, q]
    p_rows = counts.sum(axis=0) / n
    p_rows = p_rows[p_rows > 0]
    h_q = float(-(p_rows * np.log(p_rows)).sum())
    xlogx = xlogy(np.arange(n + 1), np.arange(n + 1))  # [n + 1] lookup table of v log v
    cum = np.vstack([np.zeros((1, n_rows), dtype=np.intp), np.cumsum(counts, axis=0)])  # [k+1, q]
    # cost[s, t] = n_col H(Q | col) for the column of clumps s..t-1
    #            = n_col log n_col - sum_r n_rc log n_rc, from differences of cumulative counts
    tot = cum.sum(axis=1)  # [k+1]
    cost = np.take(xlogx, np.abs(tot[None, :] - tot[:, None]))  # [k+1, k+1]
    for r in range(n_rows):  # q <= B / 2 rows; each step is one [k+1, k+1] table look-up
        cost -= np.take(xlogx, np.abs(cum[None, :, r] - cum[:, None, r]))
    steps = np.arange(k + 1)
    cost[steps[:, None] > steps[None, :]] = np.inf  # s > t is not a column
    g = cost[0].copy()  # [k+1]: best with 1 column over the first t clumps
    best = np.empty(x_max - 1)
    for ell in range(2, x_max + 1):
        g = np.min(g[:, None] + cost, axis=0)  # [k+1, k+1] -> [k+1]
        best[ell - 2] = h_q - g[k] / n
    return np.maximum(best, 0.0)


class _Axis(NamedTuple):
    """One variable prepared for MIC: its sort order and its equipartitions (reused by pairs)."""

    order: np.ndarray  # [n] argsort
    sorted: np.ndarray  # [n] sorted values
    rows: dict[int, np.ndarray]  # y -> [n] row of each sample (sample order) in y equipartitions


def _grid_bound(n: int, alpha: float) -> int:
    """``B``: grids with ``x y <= B`` are searched (minepy's rule)."""
    return int(max(n**alpha, 4)) if alpha <= 1 else int(min(alpha, n))


def _prepare_axis(v: np.ndarray, B: int) -> _Axis:
    order = np.argsort(v, kind="stable")
    v_sorted = v[order]
    rows = {}
    for y in range(2, B // 2 + 1):
        q = np.empty(v.shape[0], dtype=np.intp)
        q[order] = _equipartition(v_sorted, y)  # [n] row of each sample
        rows[y] = q
    return _Axis(order, v_sorted, rows)


def _mi_table(a: _Axis, b: _Axis, B: int, c: float) -> np.ndarray:
    """``I[x, y]``: ApproxMaxMI with ``y`` equipartitioned rows on ``b`` and ``x`` optimised
    columns on ``a``, for all ``x, y >= 2`` with ``x y <= B`` (zero elsewhere)."""
    table = np.zeros((B // 2 + 1, B // 2 + 1))
    for y in range(2, B // 2 + 1):
        x_max = B // y
        if x_max < 2:
            break
        q = b.rows[y]  # [n] row of each sample
        q_a = q[a.order]  # rows in x order
        clump = _superclumps(a.sorted, q_a, max(int(c * x_max), 1))
        table[2 : x_max + 1, y] = _optimize_x_axis(clump, q_a, int(q.max()) + 1, x_max)
    return table


def _characteristic_from_axes(ax: _Axis, ay: _Axis, B: int, c: float) -> np.ndarray:
    i_xy = _mi_table(ax, ay, B, c)  # [x cols, y rows]
    i_yx = _mi_table(ay, ax, B, c).T  # same indexing: equipartition on x, optimise y
    mi = np.maximum(i_xy, i_yx)
    idx = np.arange(mi.shape[0])
    norm = np.log(np.maximum(np.minimum.outer(idx, idx), 2))
    return mi / norm


def _characteristic_matrix(x: np.ndarray, y: np.ndarray, alpha: float, c: float) -> np.ndarray:
    """The approximate characteristic matrix ``M[i, j]`` (i columns on x, j rows on y)."""
    B = _grid_bound(x.shape[0], alpha)
    return _characteristic_from_axes(_prepare_axis(x, B), _prepare_axis(y, B), B, c)


def _check_mic_args(alpha: float, c: float) -> None:
    if not (0 < alpha <= 1 or alpha >= 4):
        raise ValueError(f"mic: alpha must be in (0, 1] or >= 4, got {alpha}.")
    if c <= 0:
        raise ValueError(f"mic: c must be > 0, got {c}.")


def mic(x: np.ndarray, y: np.ndarray, alpha: float = 0.6, c: float = 15) -> float:
    """Maximal information coefficient (Reshef et al. 2011), the ApproxMaxMI estimator.

    For every grid with ``x`` columns and ``y`` rows, ``x y <= B = max(n^alpha, 4)``, the mutual
    information is maximised with one axis equipartitioned and the other axis optimised by
    dynamic programming over at most ``c * x`` (super)clumps, in both orientations; MIC is the
    largest ``I / log min(x, y)``. Matches minepy's ``MINE(alpha, c, est="mic_approx")``
    (checked against its published example values in ``tests/core/test_metrics.py``).

    Args:
        x: ``[n]`` first variable.
        y: ``[n]`` second variable.
        alpha: Grid-size exponent in (0, 1]; values >= 4 give ``B`` directly (as minepy).
        c: Clump factor: at most ``c * x`` clumps when drawing ``x`` columns.

    Returns:
        MIC in [0, 1]; 0 when either variable is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"mic: x and y must have the same length; got {x.size} and {y.size}.")
    if x.size < 4:
        raise ValueError("mic: need at least 4 samples.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("mic: x and y must be finite (no NaN or inf).")
    _check_mic_args(alpha, c)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(min(_characteristic_matrix(x, y, alpha, c).max(), 1.0))


def mic_matched(
    z_true: np.ndarray, z_est: np.ndarray, alpha: float = 0.6, c: float = 15
) -> tuple[float, np.ndarray]:
    """The paper's Table 1 protocol: match each true latent to its highest-MIC estimated one.

    Computes the ``[m1, m2]`` MIC matrix (each column's sort and equipartitions are prepared
    once and shared by its pairs) and solves the assignment (Hungarian,
    ``scipy.optimize.linear_sum_assignment``) so that each estimated coordinate is used once.

    Args:
        z_true: ``[n, m1]`` true latents.
        z_est: ``[n, m2]`` estimated latents.
        alpha: MIC grid-size exponent (see :func:`mic`).
        c: MIC clump factor (see :func:`mic`).

    Returns:
        ``(score, matching)``: mean matched MIC over the ``m1`` true latents (an unmatched one,
        when ``m2 < m1``, counts 0) and ``matching[i]``, the column of ``z_est`` matched to
        ``z_true[:, i]`` or -1.
    """
    z_true, z_est = _check_pair(z_true, z_est)
    _check_mic_args(alpha, c)
    if z_true.shape[0] < 4:
        raise ValueError("mic_matched: need at least 4 samples.")
    B = _grid_bound(z_true.shape[0], alpha)
    true_axes = [_prepare_axis(z_true[:, i], B) for i in range(z_true.shape[1])]
    est_axes = [_prepare_axis(z_est[:, j], B) for j in range(z_est.shape[1])]
    const_true = np.ptp(z_true, axis=0) == 0  # [m1]
    const_est = np.ptp(z_est, axis=0) == 0  # [m2]
    scores = np.zeros((z_true.shape[1], z_est.shape[1]))  # [m1, m2]
    for i, ax in enumerate(true_axes):
        for j, ay in enumerate(est_axes):
            if not (const_true[i] or const_est[j]):
                scores[i, j] = min(_characteristic_from_axes(ax, ay, B, c).max(), 1.0)
    return _hungarian(scores)
