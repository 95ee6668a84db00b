"""Can the edges be trusted? Orientation status, wrong claims and stability on simulated graphs.

For every (graph setting, seed) one data set is simulated with a share of binary ``u``
(``cmcl_core.simulate``), and CMCL is fitted twice: without background knowledge, and with
every ``u`` given its true role (a ``u`` with a latent child, or with no edge, is a *cause*; a
``u`` with a latent parent an *effect*). Each fit's edges are resampled
(``cmcl_core.stability.assess_stability``, ``dag`` level) and the latents matched to the true
ones (Hungarian assignment on |Spearman|) before scoring:

* ``shd``: the plain SHD of the reported graph (every row's direction taken at face value);
* ``shd_cpdag``: the SHD with ``undetermined`` rows counted as undirected edges (scored as
  correct when the adjacency is true, as for a CPDAG in ``count_accuracy``);
* ``claims`` / ``wrong_claims``: rows whose orientation is ``data`` or ``knowledge``, and those
  of them whose adjacency is absent from the truth or whose direction is reversed;
* ``undetermined``: rows left undirected;
* precision by stability bin: of the rows with stability in [0.8, 1], [0.5, 0.8), [0, 0.5),
  how many have a true adjacency.

Example::

    python -m benchmarks.trust --settings 4/10 8/16 10/20 --seeds 0 1 2 --threads 1 \\
        --out benchmarks/results/trust
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cmcl_core import CMCL, count_accuracy, mcc
from cmcl_core.edges import Edge, Orientation
from cmcl_core.simulate import GRAPH_SETTINGS, SimulatedData, simulate_setting
from cmcl_core.stability import assess_stability

logger = logging.getLogger("benchmarks.trust")
BINS = ((0.8, 1.01), (0.5, 0.8), (0.0, 0.5))


def true_roles(data: SimulatedData) -> dict[str, str]:
    """The role each ``u`` has in the true graph (an isolated ``u`` precedes imaging)."""
    d = data.u.shape[1]
    B = np.asarray(data.B_true)
    return {name: ("effect" if B[d:, i].any() else "cause") for i, name in enumerate(data.u_names)}


def matched_graph(
    data: SimulatedData, z_hat: np.ndarray
) -> tuple[float, dict[str, int], np.ndarray]:
    """The latents matched to the truth, as the scorers index the estimated graph.

    Every estimated latent ``z{j}`` gets the index of its matched true latent (Hungarian
    assignment on |Spearman|). A fit with more latents than the truth (``latent_dim`` above
    the true ``m``) leaves some unmatched: they get the indices after the true ones, and the
    truth is padded with isolated nodes for them, so any edge of theirs counts as absent.

    Returns:
        ``(mcc, index, truth)``: the MCC, ``{u name or estimated latent name: index}`` and the
        true adjacency ``[(d + m_hat), (d + m_hat)]`` as booleans (``m_hat >= m``).
    """
    d, m = data.u.shape[1], data.z.shape[1]
    m_hat = z_hat.shape[1]
    if m_hat < m:
        raise ValueError(f"scoring needs at least the true {m} latents, got {m_hat}")
    mcc_score, match = mcc(np.asarray(data.z), z_hat)  # match[i]: column of z_hat for true z_i
    extra = [j for j in range(m_hat) if j not in set(match.tolist())]
    index = {name: i for i, name in enumerate(data.u_names)}
    index |= {f"z{int(c)}": d + i for i, c in enumerate(match)}  # estimated name -> true index
    index |= {f"z{j}": d + m + k for k, j in enumerate(extra)}  # unmatched: isolated nodes
    truth = np.zeros((d + m_hat, d + m_hat), bool)
    truth[: d + m, : d + m] = np.asarray(data.B_true) != 0
    return mcc_score, index, truth


def score(data: SimulatedData, z_hat: np.ndarray, rows: list[Edge]) -> dict:
    """The metrics above for one fit's edge table (latents matched to the truth; see
    :func:`matched_graph` for a fit with more latents than the truth)."""
    mcc_score, index, truth = matched_graph(data, z_hat)
    p = len(truth)
    plain, cpdag = np.zeros((p, p), int), np.zeros((p, p), int)
    out = {"mcc": mcc_score, "rows": len(rows), "claims": 0, "wrong_claims": 0}
    out["undetermined"] = 0
    by_bin = {f"{lo:.1f}-{min(hi, 1.0):.1f}": [0, 0] for lo, hi in BINS}
    for e in rows:
        i, j = index[e.source], index[e.target]
        adjacent = bool(truth[i, j] or truth[j, i])
        plain[i, j] = 1
        if e.orientation is Orientation.UNDETERMINED:
            out["undetermined"] += 1
            cpdag[min(i, j), max(i, j)] = -1
        else:
            out["claims"] += 1
            out["wrong_claims"] += int(not truth[i, j])
            cpdag[i, j] = 1
        for (lo, hi), key in zip(BINS, by_bin, strict=True):
            if lo <= (e.stability or 0.0) < hi:
                by_bin[key][0] += 1
                by_bin[key][1] += int(adjacent)
    out["shd"] = count_accuracy(truth, plain)["shd"]
    out["shd_cpdag"] = count_accuracy(truth, cpdag, cpdag=True)["shd"]
    out["stability_bins"] = by_bin  # bin -> [rows, rows with a true adjacency]
    out["true_adjacency_stability"] = [
        float(e.stability or 0.0)
        for e in rows
        if truth[index[e.source], index[e.target]] or truth[index[e.target], index[e.source]]
    ]
    return out


def run_cell(setting: str, seed: int, args: argparse.Namespace) -> list[dict]:
    d = GRAPH_SETTINGS[setting][0]
    n_binary = math.ceil(args.binary_share * d)
    data = simulate_setting(setting, n=args.n, image_size=args.image_size, seed=seed,
                            n_binary=n_binary)  # fmt: skip
    records = []
    for knowledge in ("none", "roles"):
        t0 = time.perf_counter()
        model = CMCL(latent_dim=data.z.shape[1], seed=seed, epochs=args.epochs)
        roles = true_roles(data) if knowledge == "roles" else None
        model.fit(data.images, data.u, list(data.u_types), list(data.u_names), u_roles=roles)
        fit_s = time.perf_counter() - t0
        model.set_stability(assess_stability(model, data.images, data.u, resamples=args.resamples))
        rec = score(data, model.transform(data.images, data.u), model.edge_table_)
        rec.update(
            setting=setting, seed=seed, knowledge=knowledge, n_binary=n_binary,
            fit_s=fit_s, stability_s=time.perf_counter() - t0 - fit_s,
        )  # fmt: skip
        shown = {k: rec[k] for k in ("shd", "shd_cpdag", "claims", "wrong_claims")}
        logger.info("%s seed %d %s: %s", setting, seed, knowledge, shown)
        records.append(rec)
    return records


def report(results: dict) -> str:
    """A markdown table per knowledge condition (mean over seeds) and the stability bins."""
    recs = results["records"]
    lines = ["# Trustworthy edges: orientation status, wrong claims and stability", ""]
    lines += [f"Command: `{c}`" for c in results["meta"]["commands"]] + [""]
    lines += [
        "| setting | knowledge | seeds | MCC | SHD | SHD (undetermined as undirected) | claims | "
        "wrong claims | undetermined |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["setting"], r["knowledge"]) for r in recs}, key=lambda k: (k[0], k[1]))
    for setting, knowledge in keys:
        rs = [r for r in recs if r["setting"] == setting and r["knowledge"] == knowledge]
        mean = {k: np.mean([r[k] for r in rs]) for k in
                ("mcc", "shd", "shd_cpdag", "claims", "wrong_claims", "undetermined")}  # fmt: skip
        per = "/".join(str(int(r["wrong_claims"])) for r in rs)
        lines.append(
            f"| {setting} | {knowledge} | {len(rs)} | {mean['mcc']:.3f} | {mean['shd']:.1f} | "
            f"{mean['shd_cpdag']:.1f} | {mean['claims']:.1f} | {mean['wrong_claims']:.1f} "
            f"({per}) | {mean['undetermined']:.1f} |"
        )
    lines += ["", "Precision by stability bin (rows with a true adjacency / rows), all cells:", ""]
    lines += ["| knowledge | " + " | ".join(recs[0]["stability_bins"]) + " |", "|---|---|---|---|"]
    for knowledge in ("none", "roles"):
        rs = [r for r in recs if r["knowledge"] == knowledge]
        cells = []
        for key in recs[0]["stability_bins"]:
            n = sum(r["stability_bins"][key][0] for r in rs)
            t = sum(r["stability_bins"][key][1] for r in rs)
            cells.append(f"{t}/{n}" + (f" ({t / n:.2f})" if n else ""))
        lines.append(f"| {knowledge} | " + " | ".join(cells) + " |")
    true_stab = [s for r in recs for s in r["true_adjacency_stability"]]
    if true_stab:
        lines += [
            "",
            f"Stability of rows with a true adjacency: median {np.median(true_stab):.2f}, "
            f"min {min(true_stab):.2f} ({len(true_stab)} rows).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", nargs="+", default=["4/10", "8/16", "10/20"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--resamples", type=int, default=20)
    p.add_argument("--binary-share", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/trust"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"meta": {"commands": []},
                                                                  "records": []}  # fmt: skip
    command = "python -m benchmarks.trust " + shlex.join(sys.argv[1:] if argv is None else argv)
    if not args.report_only:
        results["meta"]["commands"].append(command)
        done = {(r["setting"], r["seed"]) for r in results["records"]}
        for setting in args.settings:
            for seed in args.seeds:
                if (setting, seed) in done:
                    continue
                results["records"] += run_cell(setting, seed, args)
                path.write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(report(results))
    print(f"results: {path} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
