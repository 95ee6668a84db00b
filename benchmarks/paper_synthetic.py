"""The paper's synthetic benchmark (Section 4.1, Appendix E.2): CMCL vs two-stage baselines.

For every (graph setting, seed) one dataset is simulated (``cmcl_core.simulate``) and every
method is fitted on it:

* ``cmcl``: the joint estimator; ``cmcl_nocm`` / ``cmcl_nocr`` / ``cmcl_neither`` are the
  ablations of Table 2 (without the causal representation module, without the counterfactual
  regulariser, without both). The ablations run only at the ablation setting (20/40).
* ``vae``, ``betavae``, ``ivae``, ``tcvae``, ``factorvae``: two-stage pipelines, a
  representation learner (``benchmarks/baselines.py``) and then ``cmcl_core.dag.learn_dag`` on
  ``[u, z_hat]`` with the same bipartite mask.
* references, not methods of the paper and not in the default method list: ``oracle``
  (``learn_dag`` on ``[u, z_true]``, the best any two-stage pipeline can do with this DAG
  learner) and ``pca`` (the top-m principal components of the pixels, a linear two-stage
  pipeline: the simulated images are close to linear in z, see Appendix E.1).

Estimated latents (all methods, CMCL included) are matched to the true ones by MIC with the
Hungarian assignment (the paper's protocol, Section 4.1) and the latent block of the estimated
adjacency is permuted by that matching before SHD / TPR / FPR / FDR are computed against the
true graph (Figure 2, Table 2). The matched MIC and the MCC are reported as Table 1.

Outputs in ``--out``: ``results.json`` (one record per cell, rewritten after each cell so a crash
loses at most one cell; ``--resume`` skips finished cells), ``results.md`` (mean +- std next to
the paper's numbers, with the commands that produced them) and ``figure2.png``.

Examples::

    python -m benchmarks.paper_synthetic --quick
    nice -n 10 python -m benchmarks.paper_synthetic --settings 4/10 10/20 20/40 --seeds 0 1 2 \\
        --methods cmcl cmcl_nocm cmcl_nocr cmcl_neither ivae --resume
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.baselines import BASELINES, BaselineConfig, TwoStageLearner
from benchmarks.synthetic_report import write_report
from cmcl_core.dag import learn_dag
from cmcl_core.graph import bipartite_mask
from cmcl_core.metrics import count_accuracy, mcc, mic, mic_matched
from cmcl_core.orientation import orient_edges

logger = logging.getLogger("benchmarks.paper_synthetic")

FIG2_SETTINGS = ("1/10", "4/10", "6/12", "8/16", "10/20", "12/24", "20/40")
TABLE1_SETTINGS = ("3/10", "5/10", "8/16", "10/20")
ALL_SETTINGS = tuple(dict.fromkeys(FIG2_SETTINGS + TABLE1_SETTINGS))
ABLATION_SETTING = "20/40"
# Table 2 ablations: method -> (use_cm, use_cr)
CMCL_VARIANTS = {
    "cmcl": (True, True),
    "cmcl_nocr": (True, False),
    "cmcl_nocm": (False, True),
    "cmcl_neither": (False, False),
}
REFERENCES = ("pca", "oracle")  # not methods of the paper; not in the default method list
ALL_METHODS = tuple(CMCL_VARIANTS) + BASELINES + REFERENCES


def _applies(method: str, setting: str) -> bool:
    """Ablation variants run only at the ablation setting (Table 2); the rest everywhere."""
    return method in ("cmcl", *BASELINES, *REFERENCES) or setting == ABLATION_SETTING


def _permuted(W: np.ndarray, d: int, matching: np.ndarray) -> np.ndarray:
    """Reorder the latent block of ``W`` [(d+m), (d+m)] so latent i is the one matched to z_i.

    Args:
        W: estimated adjacency, order u..., z_hat...
        d: number of structured variables.
        matching: ``matching[i]`` = column of z_hat matched to true z_i (a permutation).

    Returns:
        The adjacency in the true order u..., z...
    """
    idx = np.concatenate([np.arange(d), d + np.asarray(matching)])  # [(d+m)]
    return W[np.ix_(idx, idx)]


def _score(data, z_hat: np.ndarray, W_est: np.ndarray, mic_max_latents: int) -> dict:
    """MIC / MCC of matched latents and the graph metrics after matching.

    The matching is the paper's MIC assignment when there are at most ``mic_max_latents``
    latents (all Table 1 settings). Above that the full m x m MIC matrix costs minutes per cell
    on a CPU (about 0.3 s per pair at n = 1000), so latents are matched by |Spearman| (the MCC
    assignment) and the MIC is computed on the matched pairs only; ``matching`` records which.
    """
    d = data.u.shape[1]
    z_true = np.asarray(data.z)
    mcc_score, mcc_match = mcc(z_true, z_hat)
    if z_true.shape[1] <= mic_max_latents:
        mic_score, matching = mic_matched(z_true, z_hat)  # [m] column of z_hat per true z
        how = "mic"
    else:
        matching, how = mcc_match, "mcc"
        mic_score = float(np.mean([mic(z_true[:, i], z_hat[:, j]) for i, j in enumerate(matching)]))
    if (matching < 0).any() or len(set(matching.tolist())) != len(matching):
        raise ValueError("latent matching is not a permutation: z_hat must have m columns")
    B_est = (_permuted(W_est, d, matching) != 0).astype(int)
    acc = count_accuracy(np.asarray(data.B_true) != 0, B_est)
    return {"mic": 100.0 * mic_score, "mcc": mcc_score, "matching": how, **acc}


@dataclass(frozen=True)
class _FitOptions:
    """What ``run_cell`` passes to a method's fit function (see its arguments)."""

    epochs: int | None = None
    device: str | None = None
    dag_kwargs: dict = field(default_factory=dict)
    cmcl_set: dict = field(default_factory=dict)
    orient: bool = True


def _fit_cmcl(data, method: str, seed: int, opts: _FitOptions):
    from cmcl_core.estimator import CMCL  # imported late: the heaviest dependency

    use_cm, use_cr = CMCL_VARIANTS[method]
    overrides = {**opts.cmcl_set, "use_cm": use_cm, "use_cr": use_cr}
    if opts.epochs is not None:
        overrides["epochs"] = opts.epochs
    m = data.z.shape[1]
    model = CMCL(latent_dim=m, device=opts.device, seed=seed, **overrides)
    model.fit(data.images, data.u, u_types=list(data.u_types), u_names=list(data.u_names))
    z_hat = model.transform(data.images, data.u)  # [n, m]
    epochs_run = len(getattr(model, "history_", []) or []) or None
    return z_hat, np.asarray(model.weighted_adjacency_), {"epochs_run": epochs_run}


def _fit_two_stage(data, method: str, seed: int, opts: _FitOptions):
    d, m = data.u.shape[1], data.z.shape[1]
    cfg = BaselineConfig() if opts.epochs is None else BaselineConfig(epochs=opts.epochs)
    t_rep = time.perf_counter()
    if method == "oracle":  # the true latents: an upper bound for the DAG stage
        z_hat, rep_s = np.asarray(data.z, np.float64), 0.0
    elif method == "pca":  # linear reference: the top-m principal components of the pixels
        X_img = np.asarray(data.images, np.float64).reshape(len(data.images), -1)  # [n, H W]
        X_img = X_img - X_img.mean(0)
        _, _, Vt = np.linalg.svd(X_img, full_matrices=False)  # Vt [min(n, HW), HW]
        z_hat = X_img @ Vt[:m].T  # [n, HW] -> [n, m]
        rep_s = time.perf_counter() - t_rep
    else:
        learner = TwoStageLearner(method, m, cfg, device=opts.device, seed=seed)
        z_hat = learner.fit(data.images, data.u).transform(data.images, data.u)  # [n, m]
        rep_s = learner.fit_seconds_
    t_dag = time.perf_counter()
    z_std = (z_hat - z_hat.mean(0)) / (z_hat.std(0) + 1e-8)  # [n, m]
    X = np.concatenate([np.asarray(data.u, np.float64), z_std], axis=1)  # [n, d + m]
    var_types = list(data.u_types) + ["continuous"] * m
    allowed = bipartite_mask(d, m)
    W = learn_dag(
        X, var_types=var_types, allowed=allowed, seed=seed, device=opts.device, **opts.dag_kwargs
    )
    if opts.orient:  # the same DAG stage as CMCL's (CMCLConfig.orient_edges)
        W = orient_edges(X, W, var_types, allowed, seed)
    return (
        z_hat,
        W,
        {
            "epochs_run": None if method in REFERENCES else cfg.epochs,
            "rep_s": rep_s,
            "dag_s": time.perf_counter() - t_dag,
            "orient": opts.orient,
        },
    )


def run_cell(
    data,
    method: str,
    seed: int,
    epochs: int | None = None,
    device: str | None = None,
    mic_max_latents: int = 12,
    dag_kwargs: dict | None = None,
    cmcl_set: dict | None = None,
    orient: bool = True,
) -> dict:
    """Fit one method on one dataset and score it.

    Args:
        data: a ``SimulatedData`` (images, u, z, u_types, u_names, B_true).
        method: one of :data:`ALL_METHODS`.
        seed: model seed.
        epochs: epochs for every learner (None: each method's default).
        device: torch device, None for automatic.
        mic_max_latents: largest m scored with the full MIC matching (see ``_score``).
        dag_kwargs: ``DagConfig`` overrides for the two-stage ``learn_dag`` (tests use a
            cheap solver; the benchmark keeps the defaults CMCL's DAG refit uses).
        cmcl_set: ``CMCLConfig`` overrides for the CMCL variants (e.g. a shorter DAG warm-up
            for a short schedule).
        orient: two-stage methods re-orient ``learn_dag``'s edges by likelihood
            (``cmcl_core.orientation.orient_edges``), as CMCL does by default.

    Returns:
        A record with the metrics, ``fit_s`` (whole fit), ``epoch_s`` (seconds per
        representation-learning epoch; CMCL's includes its joint DAG and CR steps) and, for
        two-stage methods, ``rep_s`` and ``dag_s`` (the two stages).
    """
    t0 = time.perf_counter()
    fit = _fit_cmcl if method in CMCL_VARIANTS else _fit_two_stage
    opts = _FitOptions(epochs, device, dict(dag_kwargs or {}), dict(cmcl_set or {}), orient)
    z_hat, W, info = fit(data, method, seed, opts)
    fit_s = time.perf_counter() - t0
    rec = _score(data, z_hat, W, mic_max_latents)
    rec.update(info, fit_s=fit_s, score_s=time.perf_counter() - t0 - fit_s)
    # seconds per representation-learning epoch (two-stage: without the DAG stage)
    rep_s = info.get("rep_s", fit_s)
    rec["epoch_s"] = rep_s / info["epochs_run"] if info.get("epochs_run") else None
    return rec


def _load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"meta": {"wall_s_total": 0.0, "runs": []}, "records": []}


def _save(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written file


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--cmcl-set expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", nargs="+", default=list(ALL_SETTINGS), choices=ALL_SETTINGS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=ALL_METHODS,
        help="default: CMCL, its ablations and all baselines (--quick: cmcl and ivae)",
    )
    p.add_argument("--n", type=int, default=1000, help="samples per dataset")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=None, help="epochs for every method")
    p.add_argument("--quick", action="store_true", help="one graph, one seed, tiny epochs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/synthetic"))
    p.add_argument("--resume", action="store_true", help="skip cells already in the JSON")
    p.add_argument("--device", default=None, help="torch device (default: CUDA if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--mic-max-latents", type=int, default=12, help="above: match by MCC")
    p.add_argument(
        "--cmcl-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="CMCLConfig overrides for the CMCL variants (values parsed as JSON)",
    )
    p.add_argument(
        "--no-orient",
        action="store_true",
        help="two-stage methods: learn_dag's edges as they are (no likelihood re-orientation)",
    )
    p.add_argument("--report-only", action="store_true", help="rewrite md/png from the JSON")
    p.add_argument(
        "--merge",
        nargs="*",
        type=Path,
        default=[],
        help="with --report-only: add "
        "the records of these output folders (e.g. runs made by parallel processes)",
    )
    args = p.parse_args(argv)
    args.cmcl_set = dict(_key_value(kv) for kv in args.cmcl_set)
    if args.methods is None:
        args.methods = ["cmcl", "ivae"] if args.quick else list(ALL_METHODS[: -len(REFERENCES)])
    if args.quick:
        args.settings, args.seeds = ["4/10"], [0]
        args.n, args.epochs = min(args.n, 300), args.epochs or 3
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark grid; returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = _load(path) if (args.resume or args.report_only) else _load(Path("/nonexistent"))
    command = "python -m benchmarks.paper_synthetic " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if args.report_only:
        results["meta"]["report_command"] = command
        seen = {(r["setting"], r["seed"], r["method"]) for r in results["records"]}
        for other in args.merge:  # runs of other processes (one results.json per process)
            extra = _load(other / "results.json")
            for r in extra["records"]:  # a cell computed twice counts once (the first)
                key = (r["setting"], r["seed"], r["method"])
                if key not in seen:
                    seen.add(key)
                    results["records"].append(r)
            results["meta"]["wall_s_total"] += extra["meta"]["wall_s_total"]
        write_report(results, args.out)
        return 0
    if path.exists() and not args.resume:
        sys.exit(f"{path} exists: pass --resume to continue it or choose another --out")
    protocol = {"n": args.n, "image_size": args.image_size, "epochs": args.epochs}
    other = {(r["n"], r["image_size"], r["epochs"]) for r in results["records"]} - {
        tuple(protocol.values())
    }
    if other:
        sys.exit(
            f"{path} holds records with (n, image_size, epochs) = {sorted(other, key=str)}, "
            f"this run uses {tuple(protocol.values())}: use another --out for another protocol"
        )
    done = {(r["setting"], r["seed"], r["method"]) for r in results["records"]}
    t_start = time.perf_counter()
    results["meta"]["runs"].append({"command": command, "started": time.strftime("%FT%TZ")})
    from cmcl_core.simulate import simulate_setting

    for setting in args.settings:
        for seed in args.seeds:
            todo = [m for m in args.methods if _applies(m, setting)]
            todo = [m for m in todo if (setting, seed, m) not in done]
            if not todo:
                continue
            data = simulate_setting(setting, n=args.n, image_size=args.image_size, seed=seed)
            for method in todo:
                logger.info("setting %s seed %d method %s", setting, seed, method)
                try:
                    rec = run_cell(
                        data,
                        method,
                        seed,
                        args.epochs,
                        args.device,
                        args.mic_max_latents,
                        cmcl_set=args.cmcl_set,
                        orient=not args.no_orient,
                    )
                except (ValueError, RuntimeError) as err:  # a failed fit is a result too
                    logger.exception("setting %s seed %d method %s failed", setting, seed, method)
                    rec = {"error": f"{type(err).__name__}: {err}"}
                rec.update(setting=setting, seed=seed, method=method, command=command, **protocol)
                if method in CMCL_VARIANTS:
                    rec["cmcl_set"] = args.cmcl_set
                results["records"].append(rec)
                results["meta"]["wall_s_total"] += time.perf_counter() - t_start
                t_start = time.perf_counter()
                _save(path, results)
                if "error" not in rec:
                    logger.info(
                        "  shd %.0f tpr %.2f fdr %.2f mic %.1f mcc %.2f (%.0f s)",
                        *(rec[k] for k in ("shd", "tpr", "fdr", "mic", "mcc", "fit_s")),
                    )
                write_report(results, args.out)
    results["meta"]["wall_s_total"] += time.perf_counter() - t_start
    _save(path, results)
    write_report(results, args.out)
    print(f"results: {path} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
