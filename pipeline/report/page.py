"""The per-run report: a folder readable offline, tying pictures and metrics together.

``write_report(...)`` writes into the run folder::

    index.html                 links everything (relative links, no external assets or scripts)
    dag.png                    the learned graph: claimed directions as arrows, undetermined
                               rows as dashed lines, weights, stability, roles
    interventions/<u>__<z>.png one grid per edge u -> z (Figures 4 and 6 of the paper): rows
                               are sample images, columns the image regenerated under
                               do(u = value) for a few values of u
    traversals.png             every latent swept +- 2 sd with the others at their means
    saliency/z<j>.png          where each latent z0 ... z{m-1} lives in the image (every latent,
                               on an edge or not)
    training.png               loss parts and h(W) per epoch
    metrics.json               the run's metrics

The pictures are drawn by :mod:`pipeline.report.figures`. Privacy: the report names no patient
or image. Sample images are shown without keys, files are named after variables and latents
only, and metrics hold counts and training figures.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cmcl_core.edges import UNUSED_SCALE, Edge, LatentRole
from cmcl_core.estimator import CMCL
from db.records import Direction, edge_direction
from pipeline.model.results import node_kind
from pipeline.report.figures import (
    N_SALIENCY,
    draw_dag,
    intervention_grid,
    latent_traversals,
    safe_name,
    saliency_png,
    training_curves,
)

logger = logging.getLogger(__name__)

_DIRECTION = {
    Direction.CAUSAL: "causal (u&rarr;z)",
    Direction.ANTI_CAUSAL: "anti-causal (z&rarr;u)",
    Direction.OTHER: "other",
}


def write_report(
    run_dir: Path,
    *,
    run_id: int,
    model: CMCL,
    images: np.ndarray,
    u: np.ndarray,
    metrics: dict[str, Any],
) -> Path:
    """Write the report of one run into ``run_dir`` and return the path of ``index.html``.

    Args:
        run_dir: the run's folder (ONNX files may already be there).
        run_id: the run's id in ``cmcl_runs``.
        model: the fitted CMCL estimator.
        images: the run's images ``[n, C, H, W]`` (memmap fine; a few rows are read).
        u: the run's raw ``u`` ``[n, d]``.
        metrics: JSON-able metrics (counts, training summary, ONNX parity).
    """
    run_dir = Path(run_dir)
    (run_dir / "interventions").mkdir(parents=True, exist_ok=True)
    (run_dir / "saliency").mkdir(parents=True, exist_ok=True)
    u_names = list(model.u_names_)
    edges = list(model.edge_table_)
    draw_dag(edges, u_names, model.latent_dim_, dict(model.u_roles_), run_dir / "dag.png")
    latent_traversals(model, run_dir / "traversals.png")
    training_curves(model.history_, run_dir / "training.png")
    grids = []
    for edge in edges:
        s, t = edge.source, edge.target
        if edge.weight != 0 and _direction(s, t, u_names) is Direction.CAUSAL:
            rel = f"interventions/{safe_name(s)}__{safe_name(t)}.png"
            intervention_grid(model, images, u, s, t, run_dir / rel)
            grids.append((edge, rel))
    latents = []
    for j in range(model.latent_dim_):
        rel = f"saliency/z{j}.png"
        saliency_png(model, images, u, f"z{j}", run_dir / rel)
        latents.append((f"z{j}", rel))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    index = run_dir / "index.html"
    roles = _latent_rows(model, edges)
    hint = _latent_dim_hint(model)
    index.write_text(_html(run_id, edges, u_names, grids, latents, roles, metrics, hint))
    logger.info(
        "report of run %d: %d intervention grids, %d saliency maps",
        run_id,
        len(grids),
        len(latents),
    )
    return index


def _direction(source: str, target: str, u_names: list[str]) -> Direction:
    return edge_direction(node_kind(source, u_names), node_kind(target, u_names))


def _fraction(x: float | None) -> str:
    return "&ndash;" if x is None else f"{x:.2f}"


_ROLE_TEXT = {
    LatentRole.CLINICAL: "on an edge with a clinical variable",
    LatentRole.NUISANCE: "nuisance factor: shapes the image, tied to no clinical variable",
    LatentRole.UNUSED: "unused: hardly changes the decoded image; kept out of the graph",
}


def _latent_rows(model: CMCL, edges: list[Edge]) -> str:
    """One table row per latent: its role, its effect on the image, its edges."""
    rows = []
    effect = np.asarray(model.image_effect_, dtype=float)
    share = effect / max(float(effect.max(initial=0.0)), 1e-12)  # [m] of the largest
    for j, (name, role) in enumerate(model.latent_roles_.items()):
        linked = ", ".join(
            f"{x.source} &rarr; {x.target}" for x in edges if name in (x.source, x.target)
        )
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(role.value)}</td>"
            f"<td>{share[j]:.2f}</td><td>{_ROLE_TEXT[role]}</td>"
            f"<td>{linked or '&ndash;'}</td></tr>"
        )
    return "\n".join(rows)


def _latent_dim_hint(model: CMCL) -> str:
    """The ``latent_dim`` rule: with no unused latent, the model may be too small."""
    if any(role is LatentRole.UNUSED for role in model.latent_roles_.values()):
        return ""
    return (
        "Every latent shapes the image, so the images may have more factors than "
        f"<code>model.latent_dim</code> = {model.latent_dim_}: a run with a larger "
        "<code>latent_dim</code> shows whether one is left unused (docs/method.md)."
    )


def _html(run_id, edges, u_names, grids, latents, roles, metrics, unused_hint) -> str:
    e = html.escape
    rows = (
        "\n".join(
            f"<tr><td>{e(x.source)}</td><td>{e(x.target)}</td><td>{x.weight:+.3f}</td>"
            f"<td>{e(x.orientation.value)}</td><td>{_fraction(x.stability)}</td>"
            f"<td>{_fraction(x.direction_agreement)}</td>"
            f"<td>{_DIRECTION[_direction(x.source, x.target, u_names)]}</td></tr>"
            for x in edges
        )
        or "<tr><td colspan=7>no edge above the threshold</td></tr>"
    )
    grid_html = (
        "\n".join(
            f"<h3>{e(x.source)} &rarr; {e(x.target)} (weight {x.weight:+.3f}, "
            f"orientation {e(x.orientation.value)})</h3>"
            f"<img src='{e(rel)}' alt='intervention grid'>"
            for x, rel in grids
        )
        or "<p>No edge from a clinical variable to a latent, so no intervention grid.</p>"
    )
    sal_html = "\n".join(
        f"<figure><img src='{e(rel)}' alt='saliency {e(z)}'>"
        f"<figcaption>{e(z)}</figcaption></figure>"
        for z, rel in latents
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CMCL run {run_id}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}
img{{max-width:100%}}figure{{display:inline-block;margin:4px}}pre{{background:#f6f6f6;padding:8px}}
</style></head><body>
<h1>CMCL run {run_id}</h1>
<p>Files: <a href="metrics.json">metrics.json</a>, <a href="encoder.onnx">encoder.onnx</a>,
<a href="decoder.onnx">decoder.onnx</a>. No patient or image identifier appears in this report.</p>
<h2>Learned graph</h2>
<img src="dag.png" alt="learned graph">
<table><tr><th>cause</th><th>effect</th><th>weight</th><th>orientation</th><th>stability</th>
<th>agreement</th><th>direction</th></tr>
{rows}</table>
<p><b>orientation</b>: <i>knowledge</i> = the direction is fixed by a role in the config's
<code>knowledge:</code>; <i>data</i> = decided by the data (both ends continuous, additive-noise
models) and the resampled fits agree; <i>undetermined</i> = an adjacency whose direction the
model cannot tell (a binary or categorical variable against a latent, or resamples that
disagree): the row shows the estimate, but it is not a claim. <b>stability</b>: share of
resampled fits with this adjacency; <b>agreement</b>: share of those with this direction.
A row with weight 0 was found in at least half the resamples but not in the reported fit.</p>
<h2>Interventions</h2>
<p>For every edge u &rarr; z: sample images (rows), observed in the first column, then
regenerated under do(u = value) through the learned causal functions and the decoder
(paper, Appendix B; Figures 4 and 6). For an undetermined edge the direction, and so the
regenerated images, are an estimate.</p>
{grid_html}
<h2>Latents</h2>
<table><tr><th>latent</th><th>role</th><th>effect on the image</th><th>meaning</th>
<th>edges</th></tr>
{roles}</table>
<p>Effect on the image: how much the decoded image changes when the latent moves by one
standard deviation, as a share of the largest latent's. A <i>nuisance</i> latent carries image
variation (patient position, anatomy no clinical variable explains, scanner effects) that no
clinical variable accounts for: it is part of the representation, not a finding.
<i>unused</i>: its effect is below {UNUSED_SCALE:.0%} of the largest; it is not an image feature
and the graph leaves it out. {unused_hint}</p>
<h2>What each latent does</h2>
<p>Decoded images as one latent sweeps its mean &plusmn; 2 standard deviations with the others at
their means: every latent, on an edge or not (read an anti-causal or undetermined edge from
here).</p>
<img src="traversals.png" alt="latent traversals">
<h2>Where each latent lives</h2>
<p>One map per latent z0 ... z{len(latents) - 1}, on an edge or not. Gradient saliency: the mean
absolute gradient of the latent's posterior mean with respect to the input pixels, over up to
{N_SALIENCY} images. (The paper used Grad-CAM++; plain gradient saliency needs no choice of
layer.)</p>
{sal_html}
<h2>Training</h2>
<img src="training.png" alt="training curves">
<h2>Metrics</h2>
<pre>{e(json.dumps(metrics, indent=2, default=str))}</pre>
</body></html>
"""
