"""Time and SHD of ``learn_dag`` versus published NOTEARS-MLP / DAGMA implementations.

Data: ``cmcl_core.simulate.simulate`` bipartite graphs (paper Appendix E.1) with ``d/2`` u and
``d/2`` z, ``d/2`` one-to-one u-z edges of random direction, nonlinear MLP structural equations,
N(0, 1) noise, ``n = 1000``; all variables continuous (the baselines have no link functions).
Every method sees the same standardised ``[u, z]`` matrix.

Methods:
  expm        learn_dag, NOTEARS tr(exp) acyclicity, bipartite ``allowed`` mask (paper setting)
  logdet      learn_dag, DAGMA log-det acyclicity, bipartite mask
  expm-nomask learn_dag, tr(exp), no mask (same search space as the baselines)
  dagma       dagma.nonlinear.DagmaNonlinear, its defaults (DagmaMLP dims [d, 10, 1])
  gcastle     castle NotearsNonlinear, its defaults (hidden_layers (10, 1))

The baselines are benchmark-only dependencies (``pip install -e .[bench]``) and slow (minutes
per graph): ``--baselines-max-d`` limits them. Results are appended to ``--out``.json after every
run (a killed run keeps what it measured) and rendered as ``--out``.md.

Usage:
  python benchmarks/dag_scaling.py --sizes 10 20 40 80 --seeds 0 --baselines-max-d 0
  nice -n 10 python benchmarks/dag_scaling.py --sizes 10 --methods dagma gcastle --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cmcl_core.dag import learn_dag
from cmcl_core.graph import bipartite_mask
from cmcl_core.metrics import count_accuracy
from cmcl_core.simulate import simulate

ALL_METHODS = ("expm", "logdet", "expm-nomask", "dagma", "gcastle")
BASELINES = ("dagma", "gcastle")


def make_data(d: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardised ``[u, z]`` data ``[n, d]`` and the true adjacency ``[d, d]``."""
    half = d // 2
    sim = simulate(half, d - half, half, n=n, image_size=8, seed=seed)
    X = sim.uz
    X = (X - X.mean(0)) / X.std(0)
    return X, sim.B_true


def run_method(method: str, X: np.ndarray, seed: int, dagma_iter_scale: float = 1.0) -> np.ndarray:
    """Fit one method; returns the estimated weighted adjacency (non-zero = edge)."""
    d = X.shape[1]
    if method == "expm":
        return learn_dag(X, allowed=bipartite_mask(d // 2, d - d // 2), seed=seed)
    if method == "logdet":
        mask = bipartite_mask(d // 2, d - d // 2)
        return learn_dag(X, allowed=mask, seed=seed, acyclicity="logdet")
    if method == "expm-nomask":
        return learn_dag(X, seed=seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    try:
        if method == "dagma":
            from dagma.nonlinear import DagmaMLP, DagmaNonlinear

            eq = DagmaMLP(dims=[d, 10, 1], bias=True, dtype=torch.double)
            iters = {
                "warm_iter": int(5e4 * dagma_iter_scale),
                "max_iter": int(8e4 * dagma_iter_scale),
            }
            return DagmaNonlinear(eq, dtype=torch.double).fit(
                X, lambda1=0.02, lambda2=0.005, **iters
            )
        if method == "gcastle":
            from castle.algorithms import NotearsNonlinear

            learner = NotearsNonlinear()
            learner.learn(X)
            return np.asarray(learner.causal_matrix)
    finally:
        torch.set_default_dtype(torch.float32)  # DagmaMLP sets a global default dtype
    raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")


def render_markdown(rows: list[dict]) -> str:
    """A table: one line per (d, method), mean over seeds."""
    loads = [r.get("loadavg_1min", float("nan")) for r in rows]
    lines = [
        "# learn_dag scaling (benchmarks/dag_scaling.py)",
        "",
        "Bipartite graphs from cmcl_core.simulate: d/2 u + d/2 z, d/2 one-to-one edges, n = 1000,",
        "all continuous, same standardised data for every method. CPU s = process CPU seconds",
        "with 1 torch thread (robust to the shared machine's load, unlike wall s); 1-minute load",
        f"average during the runs: {np.nanmin(loads):.0f}-{np.nanmax(loads):.0f} on 2 cores.",
        "dagma-xF = DagmaNonlinear with F times its default warm_iter/max_iter (the full default",
        "run takes too long for this shared 2-core machine). expm/logdet use the bipartite mask;",
        "expm-nomask and the baselines search all DAGs.",
        "",
        "| d | method | seeds | CPU s | wall s | SHD (mean) | SHD per seed | TPR | FDR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["d"], r["method"]) for r in rows})
    for d, method in keys:
        rs = [r for r in rows if r["d"] == d and r["method"] == method]
        lines.append(
            f"| {d} | {method} | {len(rs)} | {np.mean([r['cpu_s'] for r in rs]):.1f} | "
            f"{np.mean([r['time_s'] for r in rs]):.1f} | "
            f"{np.mean([r['shd'] for r in rs]):.2f} | {' '.join(str(r['shd']) for r in rs)} | "
            f"{np.mean([r['tpr'] for r in rs]):.2f} | {np.mean([r['fdr'] for r in rs]):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    ap.add_argument("--baselines-max-d", type=int, default=10, help="skip baselines above this d")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: fair CPU-time comparison)"
    )
    ap.add_argument(
        "--dagma-iter-scale",
        type=float,
        default=1.0,
        help="scale DagmaNonlinear's warm_iter/max_iter (1.0 = its published defaults)",
    )
    ap.add_argument("--out", default="benchmarks/results/dag_scaling", help="path without suffix")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    machine = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    for d in args.sizes:
        for seed in args.seeds:
            X, B = make_data(d, args.n, seed)
            for method in args.methods:
                if method in BASELINES and d > args.baselines_max_d:
                    continue
                t0, c0 = time.perf_counter(), time.process_time()
                W = run_method(method, X, seed, args.dagma_iter_scale)
                elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
                acc = count_accuracy(B, (np.asarray(W) != 0).astype(int))
                name = method
                if method == "dagma" and args.dagma_iter_scale != 1.0:
                    name = f"dagma-x{args.dagma_iter_scale:g}"
                row = {"d": d, "n": args.n, "seed": seed, "method": name, "time_s": elapsed}
                row["cpu_s"] = cpu
                row["loadavg_1min"] = os.getloadavg()[0]
                row.update({k: acc[k] for k in ("shd", "tpr", "fdr", "nnz")})
                row["shd"] = int(row["shd"])
                print(json.dumps(row), flush=True)
                row["machine"] = machine
                # Re-read before writing: another run (e.g. the baselines) may share the file.
                doc = json.loads(json_path.read_text()) if json_path.exists() else {"runs": []}
                doc["runs"] = [
                    r
                    for r in doc["runs"]
                    if (r["d"], r["seed"], r["method"], r["n"]) != (d, seed, method, args.n)
                ] + [row]
                json_path.write_text(json.dumps(doc, indent=1) + "\n")
                md_path.write_text(render_markdown(doc["runs"]))


if __name__ == "__main__":
    main()
