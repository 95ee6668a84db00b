"""How far the sparse rotation alone gets when latents overlap: the rotation step on a perfect
decoder.

CMCL's rotation (``cmcl_core.rotation.sparse_basis``) whitens the latents and searches the basis
in which the decoder's Jacobian is sparsest (smallest L1 norm). That identifies the latents when
each one drives pixels the others do not reach. The simulator's ``overlap`` spreads every latent
as a Gaussian blob of sd ``overlap`` cell pitches (``cmcl_core.render.footprints``), so from
some width on no latent has pixels of its own.

This benchmark removes the representation learner from the question. For each footprint width
and random layout (cells and background as ``simulate`` draws them), the *true* renderer is the
decoder: ``z [k, m] -> logit(upsample(sigmoid(field(z))))``, the simulator's image up to its
pixel noise, and the true latents are independent standard normal. The decoder's Jacobian is
taken in the whitened true latents, as ``sparse_basis`` takes it, and each search starts at the
true basis, the most favourable start: the orthogonal ``sparsest_rotation`` (also from random
rotations; the lowest L1 norm wins) and the oblique ``sparsest_oblique``. Where the search ends
is scored against the true latents:

* ``mcc``: mean |Spearman| after Hungarian matching (1: the search stayed at the truth);
* ``l1_ratio`` (orthogonal): the Jacobian's L1 norm where the search ended over that in the true
  basis;
  below 1 means the criterion prefers a mixed basis to the truth (the truth is not the
  sparsest), so no search, however good, can return the true latents.

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.rotation_overlap \\
        --out benchmarks/results/rotation_overlap

Writes ``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmcl_core.metrics import mcc
from cmcl_core.render import cell_field, footprints
from cmcl_core.rotation import (
    ROTATION_POINTS,
    jacobian_at,
    sparsest_oblique,
    sparsest_rotation,
)

GRID = 5  # the simulator's cell matrix for m <= 25
WIDTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
COLUMNS = (("orthogonal", "mcc"), ("orthogonal", "l1_ratio"), ("oblique", "mcc"))
ITERS = 300  # Adam steps per search (training takes 100 per epoch, from its current basis)


class TrueDecoder(nn.Module):
    """The simulator's renderer as a decoder of logits: ``z [k, m] -> [k, 1, H, W]``."""

    def __init__(self, cells: np.ndarray, background: np.ndarray, overlap: float, size: int):
        super().__init__()
        K = footprints(cells, GRID, overlap)  # [m, g*g]
        # cell_field is affine in the values: its weights and offset, read off two evaluations
        m = len(cells)
        offset = cell_field(np.zeros((1, m)), background, K)[0]  # [g*g]
        weight = cell_field(np.eye(m), background, K) - offset  # [m, g*g]
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32))
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32))
        self.size = size
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # gives it a device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        field = z.float() @ self.weight + self.offset  # [k, m] -> [k, g*g]
        mat = torch.sigmoid(field).reshape(-1, 1, GRID, GRID)
        up = F.interpolate(mat, size=(self.size, self.size), mode="bilinear", align_corners=True)
        return torch.logit(up.clamp(1e-6, 1 - 1e-6))  # [k, 1, H, W] logits


def run_one(m: int, overlap: float, layout: int, n: int, size: int, restarts: int) -> dict:
    """One layout at one footprint width: where each rotation search ends, started at the true
    basis (orthogonal: also from ``restarts`` random rotations, the lowest L1 wins)."""
    rng = np.random.default_rng(layout)
    cells = rng.permutation(GRID * GRID)[:m]  # as simulate draws them
    background = rng.standard_normal(GRID * GRID)
    decoder = TrueDecoder(cells, background, overlap, size)
    z = rng.standard_normal((n, m))  # [n, m] the true latents, independent
    L = np.linalg.cholesky(np.cov(z.T))  # z = mu + L w
    w = np.linalg.solve(L, (z - z.mean(0)).T).T  # [n, m] whitened, still the true basis
    pts = torch.tensor(z[:ROTATION_POINTS], dtype=torch.float32)
    step = torch.tensor(0.1 * np.sqrt(np.diag(L @ L.T)), dtype=torch.float32)
    with torch.no_grad():
        J = jacobian_at(decoder, pts, step).double() @ torch.tensor(L)  # [k, P, m] in w
    R = sparsest_rotation(J, iters=ITERS, seed=layout, restarts=restarts)  # new w' = w R
    G = sparsest_oblique(J, iters=ITERS)  # new latents w' = w G^T
    eye = torch.eye(m, dtype=torch.float64)

    def l1(R: torch.Tensor) -> float:  # the criterion in the basis w' = w R
        return float((J @ R).abs().sum())

    return {
        "m": m,
        "overlap": overlap,
        "layout": layout,
        "orthogonal": {"mcc": float(mcc(z, w @ R.numpy())[0]), "l1_ratio": l1(R) / l1(eye)},
        # no L1 ratio: an oblique map rescales the Jacobian, so its L1 norms do not compare
        "oblique": {"mcc": float(mcc(z, w @ G.numpy().T)[0])},
    }


def summarise(records: list[dict]) -> list[dict]:
    """Per (m, width): the median and range of MCC and L1 ratio over layouts, both rotations."""
    rows = []
    for key in sorted({(r["m"], r["overlap"]) for r in records}):
        rs = [r for r in records if (r["m"], r["overlap"]) == key]
        row = {"m": key[0], "overlap": key[1], "layouts": len(rs)}
        for name, metric in COLUMNS:
            v = np.array([r[name][metric] for r in rs])
            row[f"{name}_{metric}"] = [float(v.min()), float(np.median(v)), float(v.max())]
        rows.append(row)
    return rows


def markdown(summary: list[dict], meta: dict) -> str:
    lines = [
        "# The sparse rotation on a perfect decoder, as latents overlap",
        "",
        f"Command: `{meta['command']}` ({meta['date']}, {meta['seconds']:.0f} s).",
        "",
        "The true renderer is the decoder; each search starts at the true latents (whitened) "
        f"and the orthogonal one also from {meta['restarts']} random rotations. Footprint "
        "width is the "
        "sd of each latent's Gaussian blob in cell pitches (`overlap` in `cmcl_core.simulate`; "
        "the `overlap` and `all` presets use 1.0). Cells: min / median / max over layouts. An "
        "L1 ratio below 1 means the sparsest basis the criterion can find is sparser than the "
        "truth: the criterion itself prefers mixed latents.",
        "",
        "| m | width | layouts | MCC, orthogonal | L1 ratio, orthogonal | MCC, oblique |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary:
        cells = [" / ".join(f"{x:.3f}" for x in r[f"{name}_{metric}"]) for name, metric in COLUMNS]
        lines.append(f"| {r['m']} | {r['overlap']} | {r['layouts']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latents", nargs="+", type=int, default=[6], help="m (4/10 has 6)")
    p.add_argument("--widths", nargs="+", type=float, default=list(WIDTHS))
    p.add_argument("--layouts", type=int, default=10, help="random layouts per width")
    p.add_argument("--n", type=int, default=1000, help="latent samples per layout")
    p.add_argument("--restarts", type=int, default=4, help="random starts, orthogonal search")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/rotation_overlap"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    records = [
        run_one(m, w, layout, args.n, args.image_size, args.restarts)
        for m in args.latents
        for w in args.widths
        for layout in range(args.layouts)
    ]
    meta = {
        "command": "python -m benchmarks.rotation_overlap "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": time.perf_counter() - t0,
        "restarts": args.restarts,
    }
    summary = summarise(records)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "records": records}, indent=1)
    )
    (args.out / "results.md").write_text(markdown(summary, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
