"""Where the representation, the rotation and the orientation break as images get realistic.

For every realism preset (``cmcl_core.realism.REALISM_PRESETS``: clean, pose, overlap,
correlated, site, all) x graph setting x method x seed, one data set is simulated
(``simulate_setting(..., **Realism.preset(name).kwargs())``) and the method is fitted and
scored by the synthetic benchmark's per-cell function (``benchmarks.paper_synthetic.run_cell``:
one training recipe, one structure step). The default methods are ``cmcl``, ``ivae_rot`` (the
strongest two-stage baseline, given CMCL's sparse rotation) and ``pca``; the default seeds are
0 (tuning) and 10 (held out), reported apart.

Every latent is matched to the true ones by the Hungarian assignment on |Spearman| (MCC), and
all graph metrics use that matching:

* ``mcc``: mean |Spearman| of matched latents (``mic``: MIC of the matched pairs);
* ``skeleton_shd``: adjacencies present in one graph but not the other, direction ignored,
  over the pairs with a clinical variable (``u - z``, ``u - u``); ``latent_links``: the
  ``z - z`` edges a method with ``latent_edges`` found (none are in the truth, whose latents
  share an unrecorded factor under ``correlated``), ``latent_links_confounded``: how many of
  them join two latents that share that factor;
* ``shd``, ``tpr``, ``fpr``, ``fdr``: ``count_accuracy`` of the directed graph;
* ``claims`` / ``wrong_claims`` / ``undetermined``: the edge table's rows
  (``cmcl_core.edges.edge_table``, no roles, no resampling) scored by ``benchmarks.trust.score``:
  a claim is a row oriented by ``data`` or ``knowledge``; it is wrong when the edge is absent
  from the truth or reversed. An edge between a latent and a binary or categorical ``u`` (the
  ``site`` column) is ``undetermined``, never a claim;
* ``fit_s``: seconds of the fit (``sim_s``: of simulating the data set).

With scanner sites the ``site`` column is the last ``u``: a categorical column (codes) in the
structure step, one-hot in CMCL's and iVAE's conditioning input, and ``B_true`` is
``(d + 1 + m)`` square with the edge ``site -> z_j``.

Outputs in ``--out``: ``results.json`` (one record per cell, saved after each, so a rerun of the
same command resumes: cells already recorded are skipped) and ``results.md``.

Examples::

    python -m benchmarks.realism_grid --quick --out /tmp/realism_quick
    OMP_NUM_THREADS=1 python -m benchmarks.realism_grid --settings 4/10 --seeds 0 10 \\
        --threads 1 --epochs 40 --out benchmarks/results/realism_grid
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks import paper_synthetic as ps
from benchmarks.synthetic_report import seed_split
from benchmarks.trust import matched_graph
from benchmarks.trust import score as trust_score
from cmcl_core.edges import LatentRole, edge_table, knowledge_mask, latent_roles
from cmcl_core.realism import REALISM_PRESETS, Realism

logger = logging.getLogger("benchmarks.realism_grid")

DEFAULT_METHODS = ("cmcl", "ivae_rot", "pca")
SETTINGS = ("4/10", "10/20")
#: Fields of a record that identify its cell (a rerun skips cells already recorded).
KEY = ("preset", "setting", "seed", "method")
PROTOCOL = ("n", "image_size", "epochs")


def skeleton_shd(B_true: np.ndarray, B_est: np.ndarray, d: int | None = None) -> int:
    """Adjacencies in one graph but not in the other, direction ignored ([p, p] each); with
    ``d``, only pairs with one of the first ``d`` (clinical) nodes count."""
    true_adj = (np.asarray(B_true) != 0) | (np.asarray(B_true) != 0).T  # [p, p] symmetric
    est_adj = (np.asarray(B_est) != 0) | (np.asarray(B_est) != 0).T
    differ = np.triu(true_adj != est_adj, k=1)
    if d is not None:
        differ[d:, d:] = False  # z - z pairs are scored apart
    return int(differ.sum())


def claim_scores(data, z_hat: np.ndarray, W: np.ndarray, effect: np.ndarray | None = None) -> dict:
    """Skeleton SHD, orientation claims and the edge list of one fit (``run_cell``'s
    ``extra_scores``).

    Args:
        data: a ``SimulatedData``.
        z_hat: ``[n, m]`` estimated latents.
        W: ``[(d + m), (d + m)]`` weighted adjacency over ``[u, z_hat]``.
        effect: ``[m]`` each latent's effect on the decoded image (a CMCL fit's
            ``image_effect_``), which decides the ``unused`` role; None (a two-stage method):
            the spread of ``z_hat``.

    Returns:
        ``skeleton_shd``, ``claims``, ``wrong_claims``, ``undetermined``, ``shd_cpdag`` and
        ``edges``: per estimated edge ``[source, target, orientation, verdict]`` in the true
        latents' names, verdict ``true``, ``reversed`` or ``absent``.
    """
    d, m, m_hat = data.u.shape[1], data.z.shape[1], z_hat.shape[1]
    names = list(data.u_names) + [f"z{j}" for j in range(m_hat)]
    types = list(data.u_types) + ["continuous"] * m_hat
    rows = edge_table(W, names, types, knowledge_mask(d, m_hat, {}), n_clinical=d)  # no resampling
    latent = set(names[d:])
    links = [e for e in rows if {e.source, e.target} <= latent]
    rows = [e for e in rows if not {e.source, e.target} <= latent]
    trust = trust_score(data, z_hat, rows)
    _, index, B_true = matched_graph(data, z_hat)
    true_names = list(data.u_names) + list(data.z_names)
    true_names += [f"extra{k}" for k in range(m_hat - m)]  # latents matched to none
    roles = latent_roles(rows + links, names[d:], z_hat.std(0) if effect is None else effect)
    extra = [name for name in names[d:] if index[name] >= d + m]
    B_est = np.zeros_like(B_true)
    edges = []
    for e in rows:
        i, j = index[e.source], index[e.target]
        B_est[i, j] = True
        verdict = "true" if B_true[i, j] else "reversed" if B_true[j, i] else "absent"
        edges.append([true_names[i], true_names[j], str(e.orientation), verdict])
    shared = {d + int(j) for j in getattr(data, "confounded", ())}  # true latents sharing h
    linked = [(index[e.source], index[e.target]) for e in links]
    return {
        "skeleton_shd": skeleton_shd(B_true, B_est, d),
        "latent_links": len(linked),
        "latent_links_confounded": sum(i in shared and j in shared for i, j in linked),
        **{k: trust[k] for k in ("claims", "wrong_claims", "undetermined", "shd_cpdag")},
        "edges": sorted(edges),
        "true_edges": sorted([list(e) for e in data.edges]),
        "roles": {str(r): sum(v is r for v in roles.values()) for r in LatentRole},
        "extra_roles": {str(r): sum(roles[x] is r for x in extra) for r in LatentRole},
    }


def simulate_preset(preset: str, setting: str, seed: int, n: int, image_size: int):
    """The data set of one (preset, setting, seed) cell."""
    from cmcl_core.simulate import simulate_setting  # imported late: the rendering stack

    realism = Realism.preset(preset)
    return simulate_setting(setting, n=n, image_size=image_size, seed=seed, **realism.kwargs())


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"meta": {"runs": []}, "records": []}


def _save(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written file


def _cell(r: dict, n_seeds: int) -> str:
    """``MCC / skeleton SHD / wrong claims`` of one record."""
    if "error" in r:
        return "failed"
    text = f"{r['mcc']:.3f} / {r['skeleton_shd']} / {r['wrong_claims']}"
    return f"s{r['seed']}: {text}" if n_seeds > 1 else text


def _table(records: list[dict], presets: list[str], methods: list[str], fmt) -> list[str]:
    lines = ["| preset | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for preset in presets:
        cells = []
        for method in methods:
            rs = sorted(
                (r for r in records if (r["preset"], r["method"]) == (preset, method)),
                key=lambda r: r["seed"],
            )
            n_seeds = len(rs)
            cells.append("<br>".join(fmt(r, n_seeds) for r in rs) or "not run")
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    return lines


def _detail(r: dict, n_seeds: int) -> str:
    """``SHD / claims / fit seconds`` of one record."""
    if "error" in r:
        return "failed"
    text = f"{r['shd']:g} / {r['claims']} / {r['fit_s']:.0f}"
    return f"s{r['seed']}: {text}" if n_seeds > 1 else text


def markdown(results: dict) -> str:
    """The report: per seed group and setting, one table of MCC / skeleton SHD / wrong claims
    (rows preset, columns method) and one of plain SHD / claims / seconds."""
    recs = results["records"]
    runs = results["meta"]["runs"]
    presets = [p for p in REALISM_PRESETS if any(r["preset"] == p for r in recs)]
    methods = list(dict.fromkeys(r["method"] for r in recs))
    protocols = sorted({tuple(r[k] for k in PROTOCOL) for r in recs})
    lines = [
        "# Realism grid: where the representation, the rotation and the orientation break",
        "",
        "Each cell simulates the preset's data and fits the method with the synthetic "
        "benchmark's recipe and structure step (`benchmarks/realism_grid.py`, "
        "`benchmarks/paper_synthetic.py`). Latents are matched to the truth by |Spearman| "
        "(Hungarian); all graph metrics use that matching.",
        "",
        f"Protocol (n, image size, epochs): {', '.join(map(str, protocols))}.",
        "",
        "Runs (a rerun resumes; the cells it found recorded were skipped):",
        "",
    ]
    for run in runs:
        lines.append(
            f"- {run['date']}, commit `{run['commit']}`: `{run['command']}`; load average "
            f"(1/5/15 min) at start {run['load_start']}, at end {run.get('load_end', '-')}"
        )
    lines += ["", "Presets (`cmcl_core.realism.REALISM_PRESETS`):", ""]
    lines += [f"- `{p}`: {REALISM_PRESETS[p]}" for p in presets]
    lines += [
        "",
        "Cells: **MCC / skeleton SHD / wrong claims** (the skeleton over the pairs with a "
        "clinical variable; a claim is an edge oriented by data or knowledge; wrong when it is "
        "absent from the truth or reversed; an edge of the categorical `site` column is "
        "undetermined, never a claim; `z - z` links of `latent_edges` are counted in the "
        "records' `latent_links`, not scored). With several seeds in a group, one line per "
        "seed. Methods (`benchmarks.paper_synthetic.CMCL_VARIANTS`): "
        + ", ".join(
            f"`{m}` {ps.CMCL_VARIANTS[m] or 'defaults'}" for m in methods if m in ps.CMCL_VARIANTS
        )  # fmt: skip
        + ". A method with `extraK` has K more latents than the truth (`latent_dim` = m + K); "
        "the K latents left unmatched are isolated nodes of the truth, so their edges count "
        "as spurious, and the records' `extra_roles` count how the edge table's roles "
        "(`cmcl_core.edges.latent_roles`) report them.",
    ]
    groups = (("tuning", "Tuning seeds"), ("held-out", "Held-out seeds"), ("other", "Other seeds"))
    ok = [r for r in recs if "error" not in r]
    for split, title in groups:
        in_split = [r for r in recs if r["split"] == split]
        for setting in sorted({r["setting"] for r in in_split}, key=ps.ALL_SETTINGS.index):
            rs = [r for r in in_split if r["setting"] == setting]
            seeds = " ".join(str(s) for s in sorted({r["seed"] for r in rs}))
            lines += ["", f"## {title} ({seeds}), setting {setting}", ""]
            lines += _table(rs, presets, methods, _cell)
            lines += ["", "Plain SHD / claims / fit seconds:", ""]
            lines += _table(rs, presets, methods, _detail)
    failed = [r for r in recs if "error" in r]
    if failed:
        lines += ["", "Failed cells:", ""]
        lines += [
            f"- {r['preset']} {r['setting']} seed {r['seed']} {r['method']}: {r['error']}"
            for r in failed
        ]
    if ok:
        lines += ["", f"Fit seconds, all cells: {sum(r['fit_s'] for r in ok):.0f}."]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--presets",
        nargs="+",
        default=None,
        choices=list(REALISM_PRESETS),
        help="default: all (--quick: clean and all)",
    )
    p.add_argument("--settings", nargs="+", default=["4/10"], choices=SETTINGS)
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=ps.ALL_METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 10 (--quick: 0)")
    p.add_argument("--n", type=int, default=1000, help="samples per data set")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=40, help="epochs of every learner")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: n=200, 16x16, 3 epochs, presets clean and all, seed 0",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/realism_grid"))
    p.add_argument("--device", default=None, help="torch device (default: CUDA if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--report-only", action="store_true", help="rewrite results.md from the JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.image_size, args.epochs = min(args.n, 200), 16, 3
    args.presets = args.presets or (["clean", "all"] if args.quick else list(REALISM_PRESETS))
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 10])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the grid (resuming ``--out``); returns the process exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = _load(path)
    if args.report_only:
        (args.out / "results.md").write_text(markdown(results))
        return 0
    protocol = {"n": args.n, "image_size": args.image_size, "epochs": args.epochs}
    other = {tuple(r[k] for k in PROTOCOL) for r in results["records"]} - {tuple(protocol.values())}
    if other:
        sys.exit(
            f"{path} holds records with (n, image_size, epochs) = {sorted(other)}, this run "
            f"uses {tuple(protocol.values())}: use another --out for another protocol"
        )
    command = "python -m benchmarks.realism_grid " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    run = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    results["meta"]["runs"].append(run)
    done = {tuple(r[k] for k in KEY) for r in results["records"]}
    base = ps.recipe(args.epochs)
    for preset in args.presets:
        for setting in args.settings:
            for seed in args.seeds:
                todo = [m for m in args.methods if (preset, setting, seed, m) not in done]
                if not todo:
                    continue
                t0 = time.perf_counter()
                data = simulate_preset(preset, setting, seed, args.n, args.image_size)
                sim_s = time.perf_counter() - t0
                for method in todo:
                    logger.info(
                        "preset %s setting %s seed %d method %s", preset, setting, seed, method
                    )
                    try:  # matching by |Spearman| for every m (mic_max_latents=0)
                        rec = ps.run_cell(data, method, seed, base, args.device, 0, claim_scores)
                    except (ValueError, RuntimeError) as err:  # a failed fit is a result too
                        logger.exception("%s %s seed %d %s failed", preset, setting, seed, method)
                        rec = {"error": f"{type(err).__name__}: {err}"}
                    rec.update(
                        preset=preset,
                        realism=Realism.preset(preset).kwargs(),
                        setting=setting,
                        seed=seed,
                        split=seed_split(seed),
                        method=method,
                        sim_s=sim_s,
                        command=command,
                        **protocol,
                    )
                    results["records"].append(rec)
                    run["load_end"] = [round(x, 2) for x in os.getloadavg()]
                    _save(path, results)
                    (args.out / "results.md").write_text(markdown(results))
                    if "error" not in rec:
                        logger.info(
                            "  mcc %.3f skeleton shd %d shd %g wrong claims %d (%.0f s)",
                            rec["mcc"],
                            rec["skeleton_shd"],
                            rec["shd"],
                            rec["wrong_claims"],
                            rec["fit_s"],
                        )
    run["load_end"] = [round(x, 2) for x in os.getloadavg()]
    _save(path, results)
    (args.out / "results.md").write_text(markdown(results))
    print(f"results: {path} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
