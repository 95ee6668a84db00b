"""``cmcl demo``: a synthetic cohort with a known graph, the whole pipeline, and a score.

1. :func:`pipeline.synthetic.cohort.make_synthetic_cohort` writes DICOM files (a few broken),
   a clinical SQLite database and ``truth.json`` into the work folder (graph "4/10": 4 clinical
   variables, 6 latents, 4 true edges: two u -> z, two z -> u);
2. the config it wrote gets demo-sized ``model:`` settings (:data:`DEMO_MODEL`);
3. the same pipeline as ``cmcl run`` runs in a child process (``cmcl run --config ...``), with a
   fresh random ``CMCL_PSEUDONYM_KEY`` in the child's environment when none is set;
4. the learned latents (read back from ``cmcl_latents``) are matched to the true ones by
   absolute Spearman correlation (Hungarian matching, ``cmcl_core.metrics.mcc``), the learned
   edges are renamed through that matching, and SHD/TPR/FDR against the true graph are printed
   (``cmcl_core.metrics.count_accuracy``), with the SHD that counts ``undetermined`` rows as
   undirected edges and the number of wrong claims (rows whose orientation is ``data`` or
   ``knowledge`` but whose edge is absent or reversed in the truth).

Everything goes into the work folder (``./cmcl-demo`` by default). Each demo starts from fresh
results: ``results.db`` and ``reports/`` of an earlier demo there are replaced; the
preprocessed-array cache is kept (content-addressed, so never stale). Without
``CMCL_PSEUDONYM_KEY`` in the environment each demo makes a new key, so image keys differ, the
training images come in another order and the learned latents ``z0..z5`` may come out in
another order too (the comparison with the truth matches them by correlation); set the variable
to repeat a demo exactly. The comparison is printed by :func:`flows.commands.demo_command`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cmcl_core.dag import learn_dag
from cmcl_core.graph import bipartite_mask
from cmcl_core.metrics import correlation_matrix, count_accuracy, mcc
from cmcl_core.simulate import SimulatedData
from db.engine import results_engine
from db.read import latest_run, read_edges, read_latents
from pipeline.config import expand_env, load_config, run_folder
from pipeline.errors import DataError
from pipeline.pseudonyms import KEY_ENV, key_bytes
from pipeline.synthetic.cohort import make_synthetic_cohort
from pipeline.synthetic.files import true_latents

DEMO_PATIENTS = 1000
DEMO_SETTING = "4/10"
DEMO_IMAGE_SIZE = 32
# The generator's seed, chosen by what NOTEARS can do on the *true* latents, not by CMCL's
# result (passes_oracle_criterion): from the true latents plus Gaussian measurement noise of 0,
# 0.15 and 0.25 standard deviations (the images carry the simulator's 0.1 latent noise, so no
# encoder sees z exactly) NOTEARS finds every adjacency and no other, and the direction of
# every edge between two continuous variables. An edge between the binary u and a latent is
# compared as an adjacency only: no additive-noise model can tell its direction (a logistic
# z -> u fits a two-Gaussian mixture exactly), and the pipeline reports it `undetermined`.
# Seed 0 fails (an anti-causal edge's direction flips under measurement error); on a graph
# that fails the criterion the demo would score a coin flip, not the pipeline. Seed 7 was the
# first seed to pass when the direction of the binary edge was compared as well (2026-11-28);
# tests/flows/test_demo.py checks the criterion for it, and `python -m benchmarks.demo_seeds`
# reports it and CMCL's result for seeds 0-15 (benchmarks/results/demo_seeds/results.md).
DEMO_SEED = 7
#: Prefix of a learned latent matched to no true one when scoring against the truth.
UNMATCHED = "unmatched:"
#: (noise sd, draw) of the oracle criterion.
CRITERION_NOISE = ((0.0, 0), (0.15, 0), (0.15, 1), (0.25, 0))
# Up to 40 epochs (early stopping from epoch 30), batch 32: the latents are lined up with the
# true ones by the sparse rotations of epochs 5-40 (CMCLConfig.rotate_every); the old 12-epoch
# schedule without them left the latents mixed (MCC 0.28).
DEMO_MODEL: dict[str, Any] = {
    "latent_dim": 6,  # the setting's m; the demo knows it from truth.json
    "epochs": 40,
    "min_epochs": 30,
    "batch_size": 32,
}


@dataclass(frozen=True)
class DemoResult:
    """What the demo found, against the truth."""

    run_id: int
    seconds: float
    true_edges: list[tuple[str, str]]
    found_edges: list[tuple[str, str, float]]  # renamed to the true latents' names
    # every row of cmcl_edges, renamed: source, target, weight, orientation, stability, ...
    found_rows: list[dict[str, Any]]
    # shd, tpr, fdr, nnz (count_accuracy on the edges with a weight), mcc, shd_cpdag
    # (undetermined rows undirected), claims and wrong_claims (over every row)
    scores: dict[str, float]
    report: Path
    results_db: Path
    fresh_key: bool  # the demo made its own pseudonym key
    # per true latent: |Spearman| with its matched latent ("matched"), and the largest with
    # any other learned latent ("other", named by "other_name" as the truth names it)
    latent_corr: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_demo(
    workdir: Path,
    *,
    n_patients: int = DEMO_PATIENTS,
    model: dict[str, Any] | None = None,
    echo: bool = True,
) -> DemoResult:
    """Generate the demo cohort, run the pipeline on it and compare with the true graph.

    Args:
        workdir: folder for the cohort, results database and report (new, empty, or an
            earlier demo's).
        n_patients: simulated patients.
        model: ``model:`` settings (default :data:`DEMO_MODEL`).
        echo: print progress and the pipeline's output (the CLI); False for tests.

    Returns:
        The comparison with the truth.

    Raises:
        DataError: the pipeline run failed (its own message was printed above).
    """
    t0 = time.perf_counter()
    say = print if echo else (lambda *a, **k: None)
    workdir = Path(workdir).expanduser().resolve()
    say(f"cmcl demo writes into {workdir} (replacing an earlier demo's results.db and reports/)")
    say(f"generating a synthetic cohort ({n_patients} patients, graph {DEMO_SETTING}) ...")
    info = make_synthetic_cohort(
        workdir,
        n_patients=n_patients,
        setting=DEMO_SETTING,
        seed=DEMO_SEED,
        image_size_dicom=DEMO_IMAGE_SIZE,
    )
    for stale in ("results.db", "reports"):
        p = workdir / stale
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    config = _demo_config(info.config_path, model or DEMO_MODEL)
    fresh_key = not os.environ.get(KEY_ENV)
    key_hex = os.environ.get(KEY_ENV) or secrets.token_hex(32)
    if fresh_key:
        say(
            f"{KEY_ENV} is not set: this demo uses a new random key, so its image keys and the "
            f"order of its latents differ from an earlier demo's (export {KEY_ENV} to repeat one)"
        )
    env = {**os.environ, KEY_ENV: key_hex, "MPLBACKEND": "Agg"}
    say(f"running the pipeline: cmcl run --config {config}")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(config)],
        env=env,
        check=False,
        stdout=None if echo else subprocess.PIPE,
        stderr=None if echo else subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        tail = "" if echo else "\n" + (proc.stdout or "")[-3000:]
        raise DataError(
            f"the demo's pipeline run failed (exit status {proc.returncode}){tail}",
            "see the messages above; `cmcl run --config " + str(config) + "` reruns it",
        )
    return compare_with_truth(
        workdir, config, key_bytes(key_hex), time.perf_counter() - t0, fresh_key
    )


def _demo_config(path: Path, model: dict[str, Any]) -> Path:
    data = yaml.safe_load(Path(path).read_text())
    data["model"] = dict(model)
    data.setdefault("dicom", {})["workers"] = 2
    out = Path(path).with_name("config.yaml")
    out.write_text(
        "# cmcl demo: the synthetic cohort's config with demo-sized model settings.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    return out


def compare_with_truth(
    workdir: Path, config: Path, key: bytes, seconds: float, fresh_key: bool
) -> DemoResult:
    """The latest succeeded run of ``config`` against ``workdir``'s synthetic truth: latents
    matched by |Spearman| (Hungarian), edges renamed, scored (:func:`score_rows`)."""
    truth = json.loads((workdir / "truth.json").read_text())
    cfg = load_config(config)
    with results_engine(expand_env(cfg.results.url)) as engine:
        run = latest_run(engine)
        if run is None:
            raise DataError("the demo run left no succeeded run in the results database")
        run_id = int(run["id"])
        edges = read_edges(engine, run_id)
        lat = read_latents(engine, run_id)
    z_est = np.array([r["z"] for r in lat])  # [n, m]
    z_true = true_latents(workdir, key=key, image_keys=[r["image_key"] for r in lat])  # [n, m]
    ok = ~np.isnan(z_true).any(axis=1)
    corr = correlation_matrix(z_true[ok], z_est[ok])  # [m_true, m_est]
    score, matching = mcc(z_true[ok], z_est[ok])
    learned_to_true = {f"z{int(j)}": truth["z_names"][i] for i, j in enumerate(matching) if j >= 0}
    # a model with more latents than the truth: the unmatched ones keep a name the truth lacks
    learned_to_true |= {
        f"z{j}": f"{UNMATCHED}z{j}" for j in range(z_est.shape[1]) if f"z{j}" not in learned_to_true
    }
    rows = [
        {**e, "source": learned_to_true.get(e["source"], e["source"]),
         "target": learned_to_true.get(e["target"], e["target"])}
        for e in edges
    ]  # fmt: skip
    scores = score_rows(truth, rows) | {"mcc": float(score)}
    found = [(r["source"], r["target"], float(r["weight"])) for r in rows if r["weight"] != 0]
    true_edges = [(e["source"], e["target"]) for e in truth["edges"]]
    report = run_folder(cfg, run_id) / "index.html"
    results_db = workdir / "results.db"
    return DemoResult(
        run_id, seconds, true_edges, found, rows, scores, report, results_db, fresh_key,
        latent_corr(corr, matching, truth["z_names"], learned_to_true),
    )  # fmt: skip


def latent_corr(
    corr: np.ndarray, matching: np.ndarray, true_names: list[str], learned_to_true: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Per true latent, its matched |correlation| and the strongest one with another learned
    latent: a large second figure means the learned latent is a mix of two true ones."""
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(true_names):
        j = int(matching[i])
        others = [k for k in range(corr.shape[1]) if k != j]
        k = max(others, key=lambda c: corr[i, c]) if others else -1
        out[name] = {
            "matched": float(corr[i, j]) if j >= 0 else 0.0,
            "other": float(corr[i, k]) if k >= 0 else 0.0,
            "other_name": learned_to_true.get(f"z{k}", f"z{k}") if k >= 0 else None,
        }
    return out


def score_rows(truth: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, float]:
    """Edge rows (named as the truth's nodes) against the true graph.

    A row naming a node the truth lacks (a latent of a model with more latents than the truth,
    matched to none: ``unmatched:z7``) is scored against an isolated true node, so it counts
    as a false edge. The plain SHD/TPR/FDR take every edge of the learned graph (weight != 0)
    at face value;
    ``shd_cpdag`` counts ``undetermined`` rows as undirected edges (right when the adjacency
    is); ``claims`` and ``wrong_claims`` count the rows whose direction is a claim (``data``,
    ``knowledge``) and those of them absent or reversed in the truth.
    """
    order = list(truth["node_order"])
    # a node the truth lacks (a latent matched to no true one) is an isolated true node
    order += sorted({r[k] for r in rows for k in ("source", "target")} - set(order))
    p = len(truth["node_order"])
    B_true = np.zeros((len(order), len(order)))
    B_true[:p, :p] = np.array(truth["B_true"], dtype=float)
    plain, cpdag = np.zeros_like(B_true), np.zeros_like(B_true)
    claims = wrong = 0
    for r in rows:
        i, j = order.index(r["source"]), order.index(r["target"])
        if r["weight"] != 0:
            plain[i, j] = 1.0
        if r.get("orientation") == "undetermined":
            cpdag[min(i, j), max(i, j)] = -1.0
        else:
            cpdag[i, j] = 1.0
            claims += 1
            wrong += int(B_true[i, j] == 0)
    acc = count_accuracy(B_true, plain)
    out = {k: float(acc[k]) for k in ("shd", "tpr", "fdr", "nnz")}
    out["shd_cpdag"] = float(count_accuracy(B_true, cpdag, cpdag=True)["shd"])
    return out | {"claims": float(claims), "wrong_claims": float(wrong)}


def passes_oracle_criterion(data: SimulatedData) -> bool:
    """Whether NOTEARS on the noisy true latents recovers the demo graph (see ``DEMO_SEED``):
    the adjacencies exactly and, between two continuous variables, the directions."""
    d, m = data.u.shape[1], data.z.shape[1]
    z = (data.z - data.z.mean(0)) / data.z.std(0)
    types = list(data.u_types) + ["continuous"] * m
    truth = np.asarray(data.B_true) != 0
    continuous = np.array([t == "continuous" for t in types])
    both = continuous[:, None] & continuous[None, :]
    for noise, draw in CRITERION_NOISE:
        z_obs = z + noise * np.random.default_rng(draw).standard_normal(z.shape)
        found = (
            learn_dag(np.column_stack([data.u, z_obs]), types, allowed=bipartite_mask(d, m)) != 0
        )
        if not np.array_equal(found | found.T, truth | truth.T):
            return False
        if not np.array_equal(found & both, truth & both):
            return False
    return True
