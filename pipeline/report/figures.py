"""The report's pictures: the learned graph, intervention grids and saliency maps.

Saliency is the gradient of ``z_j`` with respect to the input pixels, in absolute value,
averaged over samples (Simonyan et al. 2014), not the Grad-CAM++ maps of the paper: it needs no
choice of convolutional layer and works on any encoder. Pictures show no key: sample images are
drawn without their keys, files are named after variables and latents only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

N_SAMPLES = 4  # rows of an intervention grid
N_SALIENCY = 64  # images averaged for a saliency map


def _mpl():
    """pyplot with the file-only Agg backend (deferred: matplotlib is heavy, and the backend
    must be chosen before pyplot loads; only a report needs it)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def safe_name(name: str) -> str:
    """A file-name-safe form of a variable name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "var"


def draw_dag(
    edges: Sequence[tuple[str, str, float]], u_names: Sequence[str], m: int, path: Path
) -> Path:
    """The learned graph as a PNG: u nodes in the left column, z nodes in the right one.

    Args:
        edges: ``(source, target, weight)``.
        u_names: clinical variable names.
        m: number of latents.
        path: the PNG to write.
    """
    import networkx as nx  # deferred: heavy, and only this picture needs it

    plt = _mpl()
    g = nx.DiGraph()
    z_names = [f"z{j}" for j in range(m)]
    pos = {}
    for i, n in enumerate(u_names):
        g.add_node(n)
        pos[n] = (0.0, -i / max(1, len(u_names) - 1) if len(u_names) > 1 else 0.0)
    for j, n in enumerate(z_names):
        g.add_node(n)
        pos[n] = (1.0, -j / max(1, m - 1) if m > 1 else 0.0)
    for s, t, w in edges:
        g.add_edge(s, t, weight=w)
    fig, ax = plt.subplots(figsize=(7, max(3.5, 0.7 * max(len(u_names), m))))
    colors = ["#9ecae1" if n in u_names else "#fdae6b" for n in g.nodes]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=1300)
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=9)
    widths = [1.0 + 2.0 * min(abs(d["weight"]), 2.0) for _, _, d in g.edges(data=True)]
    nx.draw_networkx_edges(
        g, pos, ax=ax, width=widths, arrowsize=18, node_size=1300, connectionstyle="arc3,rad=0.08"
    )
    labels = {(s, t): f"{d['weight']:.2f}" for s, t, d in g.edges(data=True)}
    nx.draw_networkx_edge_labels(g, pos, edge_labels=labels, ax=ax, font_size=8, label_pos=0.3)
    ax.set_title("learned graph (blue: clinical variables, orange: image latents)")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def intervention_values(u_col: np.ndarray, var_type: str) -> list[float]:
    """Values of ``u`` for the grid's columns: every level of a discrete variable, else the
    5/25/50/75/95 % quantiles of the observed values."""
    if var_type in ("binary", "categorical"):
        return [float(v) for v in np.unique(u_col)]
    return [float(v) for v in np.quantile(u_col, [0.05, 0.25, 0.5, 0.75, 0.95])]


def intervention_grid(model, images, u, u_name: str, z_name: str, path: Path) -> Path:
    """Rows: sample images (original in the first column); columns: ``do(u_name = value)``.

    Args:
        model: the fitted CMCL estimator.
        images: the run's images ``[n, C, H, W]``.
        u: the run's raw ``u`` ``[n, d]``.
        u_name: the intervened clinical variable.
        z_name: the latent it causes (for the title).
        path: the PNG to write.
    """
    plt = _mpl()
    i = list(model.u_names_).index(u_name)
    values = intervention_values(np.asarray(u[:, i]), model.u_types_[i])
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(u), size=min(N_SAMPLES, len(u)), replace=False))
    x = np.asarray(images[idx], dtype=np.float32)  # [k, C, H, W]
    uu = np.asarray(u[idx], dtype=np.float64)  # [k, d]
    cols = [model.intervene(x, uu, {u_name: v}) for v in values]  # each [k, C, H, W]
    n_cols = len(values) + 1
    size = (1.6 * n_cols, 1.6 * len(idx))
    fig, axes = plt.subplots(len(idx), n_cols, figsize=size, squeeze=False)
    for r in range(len(idx)):
        axes[r, 0].imshow(x[r, 0], cmap="gray", vmin=0, vmax=1)
        for c, img in enumerate(cols):
            axes[r, c + 1].imshow(img[r, 0], cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("observed", fontsize=8)
    for c, v in enumerate(values):
        axes[0, c + 1].set_title(f"do({u_name}={v:.3g})", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"{u_name} -> {z_name}: images regenerated under interventions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def saliency_map(encoder: torch.nn.Module, images, u, j: int) -> np.ndarray:
    """Mean |d z_j / d x| over up to :data:`N_SALIENCY` images: ``[H, W]``, max-normalised."""
    k = min(N_SALIENCY, len(u))
    enc = encoder.to("cpu").eval()
    x = torch.as_tensor(np.asarray(images[:k]), dtype=torch.float32).requires_grad_(True)
    uu = torch.as_tensor(np.asarray(u[:k]), dtype=torch.float32)  # [k, d]
    z = enc(x, uu)  # [k, C, H, W] -> [k, m]
    z[:, j].sum().backward()
    sal = x.grad.abs().mean(dim=(0, 1)).numpy()  # [k, C, H, W] -> [H, W]
    return sal / sal.max() if sal.max() > 0 else sal


def saliency_png(model, images, u, z_name: str, path: Path) -> Path:
    """The saliency heatmap of latent ``z_name`` over the mean image, as a PNG."""
    plt = _mpl()
    j = int(z_name[1:])
    sal = saliency_map(model.encoder_module(), images, u, j)  # [H, W]
    mean_img = np.asarray(images[: min(N_SALIENCY, len(u))]).mean(axis=(0, 1))  # [H, W]
    fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
    axes[0].imshow(mean_img, cmap="gray")
    axes[0].set_title("mean image", fontsize=8)
    axes[1].imshow(mean_img, cmap="gray")
    axes[1].imshow(sal, cmap="inferno", alpha=0.6)
    axes[1].set_title(f"|d {z_name} / d x|", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
