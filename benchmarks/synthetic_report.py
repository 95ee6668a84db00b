"""Markdown tables and the Figure 2 plot for ``benchmarks/paper_synthetic.py`` results.

``write_report(results, out_dir)`` turns the results JSON (one record per (setting, seed,
method) cell) into ``results.md`` (mean +- std per setting and method next to the paper's
numbers, plus the commands that produced the records) and ``figure2.png``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

# Paper, Table 1: MIC (x100) of matched latents, mean over 5 runs.
PAPER_TABLE1 = {
    "cmcl": {"3/10": 93.5, "5/10": 95.8, "8/16": 88.4, "10/20": 79.3},
    "betavae": {"3/10": 33.3, "5/10": 21.7, "8/16": 12.2, "10/20": 12.5},
    "factorvae": {"3/10": 37.9, "5/10": 20.2, "8/16": 13.7, "10/20": 12.6},
    "ivae": {"3/10": 47.2, "5/10": 48.9, "8/16": 43.6, "10/20": 45.7},
    "tcvae": {"3/10": 40.6, "5/10": 23.4, "8/16": 14.2, "10/20": 13.8},
}
# Paper, Table 2 at 20/40: (SHD, TPR, FPR, FDR).
PAPER_TABLE2 = {
    "cmcl_neither": (12.32, 0.32, 0.028, 0.56),
    "cmcl_nocr": (7.76, 0.53, 0.013, 0.35),  # CM only
    "cmcl_nocm": (11.75, 0.36, 0.022, 0.51),  # CR only
    "cmcl": (4.81, 0.77, 0.000, 0.00),
}
ABLATION_LABELS = {
    "cmcl_neither": "neither",
    "cmcl_nocr": "CM only",
    "cmcl_nocm": "CR only",
    "cmcl": "CM + CR (full)",
}
GRAPH_METRICS = ("shd", "tpr", "fpr", "fdr")
METHOD_ORDER = (
    "cmcl",
    "cmcl_nocr",
    "cmcl_nocm",
    "cmcl_neither",
    "vae",
    "betavae",
    "ivae",
    "tcvae",
    "factorvae",
    "pca",
    "oracle",
)


def _setting_key(s: str) -> tuple[int, int]:
    edges, nodes = s.split("/")
    return int(nodes), int(edges)


def _group(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["setting"], r["method"])].append(r)
    return groups


def _fmt(values: list[float], digits: int) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "-"
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f} ({v.size})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _commands(recs: list[dict]) -> list[str]:
    return [f"- `{c}`" for c in sorted({r.get("command", "?") for r in recs})]


def markdown(results: dict) -> str:
    """The report text: Figure 2 metrics, Table 1 (MIC, MCC), Table 2 (ablation), timings."""
    failed = [r for r in results["records"] if "error" in r]
    records = [r for r in results["records"] if "error" not in r]
    groups = _group(records)
    settings = sorted({r["setting"] for r in records}, key=_setting_key)
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in records)]
    protocols = sorted({(r["n"], r["image_size"], r["epochs"]) for r in records}, key=str)
    lines = [
        "# Synthetic benchmark (paper Section 4.1, Appendix E.2)",
        "",
        "Cells are mean ± std over seeds (number of seeds in brackets). Protocols "
        "(n, image size, epochs; None = method default): " + ", ".join(map(str, protocols)),
        f"Wall time of the benchmark runs (summed over runs and parallel processes): "
        f"{results['meta']['wall_s_total']:.0f} s.",
        "",
        "Commands that produced these records:",
        *_commands(records),
        *(
            [f"- this report: `{results['meta']['report_command']}`"]
            if results["meta"].get("report_command")
            else []
        ),
        "",
        *(["", "Failed cells (not in the tables):"] if failed else []),
        *[f"- {r['setting']} seed {r['seed']} {r['method']}: {r['error']}" for r in failed],
        "",
        "## Figure 2: DAG recovery (SHD, TPR, FPR, FDR after MIC matching of latents)",
    ]
    for metric in GRAPH_METRICS:
        digits = 1 if metric == "shd" else 3
        rows = [
            [s] + [_fmt([r[metric] for r in groups.get((s, m), [])], digits) for m in methods]
            for s in settings
        ]
        lines += ["", f"### {metric.upper()}", "", *_table(["setting", *methods], rows)]
    t1_methods = [m for m in methods if not m.startswith("cmcl_")]
    lines += [
        "",
        "## Table 1: MIC (x100) of matched latents — ours [paper, where Table 1 has it]",
        "",
    ]
    rows = []
    for s in settings:
        row = [s]
        for m in t1_methods:
            paper = PAPER_TABLE1.get(m, {}).get(s)
            cell = _fmt([r["mic"] for r in groups.get((s, m), [])], 1)
            row.append(cell + (f" [{paper}]" if paper is not None else ""))
        rows.append(row)
    lines += _table(["setting", *t1_methods], rows)
    lines += ["", "## MCC (mean |Spearman| after Hungarian matching)", ""]
    rows = [
        [s] + [_fmt([r["mcc"] for r in groups.get((s, m), [])], 3) for m in methods]
        for s in settings
    ]
    lines += _table(["setting", *methods], rows)
    abl = [m for m in ABLATION_LABELS if groups.get(("20/40", m))]
    if abl:
        lines += ["", "## Table 2: ablation at 20/40 — ours [paper]", ""]
        rows = []
        for m in abl:
            row = [ABLATION_LABELS[m]]
            for k, metric in enumerate(GRAPH_METRICS):
                digits = 1 if metric == "shd" else 3
                cell = _fmt([r[metric] for r in groups[("20/40", m)]], digits)
                row.append(f"{cell} [{PAPER_TABLE2[m][k]}]")
            rows.append(row)
        lines += _table(["variant", "SHD", "TPR", "FPR", "FDR"], rows)
    lines += [
        "",
        "## Time per cell (s): whole fit, one representation epoch, two-stage DAG stage",
        "",
    ]
    rows = [
        [m]
        + [
            _fmt([r.get(key) for r in records if r["method"] == m], 2)
            for key in ("fit_s", "epoch_s", "dag_s")
        ]
        for m in methods
    ]
    lines += _table(["method", "fit s", "epoch s", "DAG stage s"], rows)
    return "\n".join(lines) + "\n"


def plot_figure2(results: dict, path: Path) -> None:
    """Figure 2 of the paper: SHD, TPR, FPR, FDR per setting, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in results["records"] if "error" not in r]
    groups = _group(records)
    settings = sorted({r["setting"] for r in records}, key=_setting_key)
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in records)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    x = np.arange(len(settings))
    for ax, metric in zip(axes, GRAPH_METRICS, strict=True):
        for m in methods:
            vals = [[r[metric] for r in groups.get((s, m), [])] for s in settings]
            mean = np.array([np.mean(v) if v else np.nan for v in vals])
            std = np.array([np.std(v) if v else np.nan for v in vals])
            if np.isfinite(mean).any():
                ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=m)
        ax.set_xticks(x, settings, rotation=45)
        ax.set_title(metric.upper())
        ax.set_xlabel("edges / nodes")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: dict, out_dir: Path) -> None:
    """Write ``results.md`` and ``figure2.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    if not any("error" not in r for r in results["records"]):
        return
    (out_dir / "results.md").write_text(markdown(results))
    plot_figure2(results, out_dir / "figure2.png")
