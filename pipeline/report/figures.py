"""The report's pictures: the learned graph, interventions, traversals, saliency, training.

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

from cmcl_core.edges import Edge

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
    edges: Sequence[Edge], u_names: Sequence[str], m: int, roles: dict[str, str], path: Path
) -> Path:
    """The learned graph as a PNG: clinical variables left, latents right.

    A claimed direction (``data``, ``knowledge``) is a solid arrow; an ``undetermined`` row is
    a dashed line without an arrow head. Edge labels give the weight and, with resampling, the
    stability; a clinical variable with a role shows it ("covid (cause)"). Labels are never
    cut: the figure grows with the longest name.

    Args:
        edges: the model's edge table (``CMCL.edge_table_``).
        u_names: clinical variable names.
        m: number of latents.
        roles: ``{name: "cause" | "effect"}`` from the config's knowledge.
        path: the PNG to write.
    """
    import networkx as nx  # deferred: heavy, and only this picture needs it

    plt = _mpl()
    z_names = [f"z{j}" for j in range(m)]
    label = {n: f"{n} ({roles[n]})" if n in roles else n for n in [*u_names, *z_names]}
    pos = {}
    for i, n in enumerate(u_names):
        pos[n] = (0.0, -i / max(1, len(u_names) - 1) if len(u_names) > 1 else 0.0)
    for j, n in enumerate(z_names):
        pos[n] = (1.0, -j / max(1, m - 1) if m > 1 else 0.0)
    longest = max(len(v) for v in label.values())
    fig, ax = plt.subplots(figsize=(6 + 0.12 * longest, max(3.5, 0.7 * max(len(u_names), m))))
    g = nx.DiGraph()
    g.add_nodes_from(pos)
    colors = ["#9ecae1" if n in u_names else "#fdae6b" for n in g.nodes]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=900)
    for n, (x, y) in pos.items():  # labels beside the nodes, outward, so none is clipped
        ha, dx = ("right", -0.06) if x == 0.0 else ("left", 0.06)
        ax.text(x + dx, y, label[n], ha=ha, va="center", fontsize=9)
    for style in ("claim", "undetermined"):
        rows = [e for e in edges if (e.orientation.value == "undetermined") == (style != "claim")]
        g_e = nx.DiGraph([(e.source, e.target) for e in rows])
        if not rows:
            continue
        claim = style == "claim"
        look = (
            dict(arrowsize=16, edge_color="#333333")
            if claim
            else dict(style="dashed", edge_color="#888888")
        )
        nx.draw_networkx_edges(
            g_e, pos, ax=ax, node_size=900, width=[1.0 + min(abs(e.weight), 2.0) for e in rows],
            arrows=claim, **look,
        )  # fmt: skip
    labels = {}
    for e in edges:
        text = f"{e.weight:.2f}"
        if e.stability is not None:
            text += f", stab {e.stability:.2f}"
        labels[(e.source, e.target)] = text
    g_all = nx.DiGraph(list(labels))
    nx.draw_networkx_edge_labels(g_all, pos, edge_labels=labels, ax=ax, font_size=7, label_pos=0.3)
    ax.set_title(
        "learned graph: solid arrow = claimed direction, dashed = undetermined\n"
        "(blue: clinical variables, orange: image latents)", fontsize=9,
    )  # fmt: skip
    ax.set_xlim(-0.6, 1.6)
    ax.set_axis_off()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def latent_traversals(model, path: Path, steps: Sequence[float] = (-2, -1, 0, 1, 2)) -> Path:
    """One row per latent: the decoded image as ``z_j`` sweeps its mean +- 2 sd (the others at
    their means), so what each latent does to the image can be read, on an edge or not."""
    plt = _mpl()
    m = model.latent_dim_
    mean = np.asarray(model.z_shift_, dtype=np.float32)  # [m]
    sd = np.asarray(model.z_scale_, dtype=np.float32)  # [m]
    z = np.repeat(mean[None, None], m, 0).repeat(len(steps), 1)  # [m, k, m]
    for j in range(m):
        z[j, :, j] = mean[j] + np.asarray(steps, dtype=np.float32) * sd[j]
    with torch.no_grad():
        dec = model.decoder_module().to("cpu")
        imgs = dec(torch.as_tensor(z.reshape(-1, m))).numpy()  # [m k, C, H, W]
    imgs = imgs.reshape(m, len(steps), *imgs.shape[1:])
    fig, axes = plt.subplots(m, len(steps), figsize=(1.5 * len(steps), 1.5 * m), squeeze=False)
    for j in range(m):
        for c in range(len(steps)):
            axes[j, c].imshow(imgs[j, c, 0], cmap="gray", vmin=0, vmax=1)
            axes[j, c].set_xticks([])
            axes[j, c].set_yticks([])
        axes[j, 0].set_ylabel(f"z{j}", fontsize=9)
    for c, k in enumerate(steps):
        axes[0, c].set_title(f"mean {k:+g} sd" if k else "mean", fontsize=8)
    fig.suptitle("latent traversals: decoded image as one latent sweeps", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves(history: Sequence[dict], path: Path) -> Path:
    """Loss parts per epoch (training mean, validation) and the DAG's acyclicity ``h(W)``."""
    plt = _mpl()
    epochs = [r["epoch"] + 1 for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("loss", "val_loss", "recon", "recon_embed", "kl", "link", "cr"):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            ax1.plot(epochs, [np.nan if v is None else v for v in values], label=key)
    ax1.set_yscale("symlog")
    ax1.set_xlabel("epoch")
    ax1.legend(fontsize=7)
    ax1.set_title("loss parts (per batch)", fontsize=9)
    ax2.plot(epochs, [max(r.get("h", 0.0), 1e-12) for r in history])
    ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_title("acyclicity h(W) of the joint DAG", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
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
    fig.savefig(path, dpi=100, bbox_inches="tight")
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
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
