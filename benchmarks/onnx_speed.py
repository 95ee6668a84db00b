"""ONNX Runtime vs eager PyTorch: encoder throughput on CPU, as a ratio measured in one run.

Fits a CMCL model briefly on simulated images (the weights do not matter for speed), exports
its encoder with ``pipeline.model.onnx_export.export_onnx``, and times both at the same batch size
and thread count, alternating the two so that a busy machine slows both alike.

    .venv/bin/python benchmarks/onnx_speed.py --image-size 64 --batch 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _fit(image_size: int, d: int, m: int, seed: int):
    from cmcl_core.estimator import CMCL

    rng = np.random.default_rng(seed)
    n = 256
    images = rng.random((n, 1, image_size, image_size), dtype=np.float32)  # [n, 1, S, S]
    u = np.column_stack([rng.integers(0, 2, n), rng.normal(size=(n, d - 1))])  # [n, d]
    model = CMCL(latent_dim=m, seed=seed, epochs=1, min_epochs=1, refit_dag=False, use_cr=False)
    types = ["binary"] + ["continuous"] * (d - 1)
    return model.fit(images, u, u_types=types), images, u


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="append the result as JSON lines")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pipeline.model.onnx_export import export_onnx, load_session

    model, images, u = _fit(args.image_size, 4, 6, 0)
    enc = model.encoder_module().to("cpu").eval()
    with tempfile.TemporaryDirectory() as tmp:
        res = export_onnx(enc, model.decoder_module(), images, u, Path(tmp))
        sess = load_session(
            Path(tmp) / "encoder.onnx", res.encoder.sha256, intra_op_threads=args.threads
        )
        x = np.ascontiguousarray(images[: args.batch])  # [b, 1, S, S]
        uu = np.ascontiguousarray(u[: args.batch], dtype=np.float32)  # [b, d]
        xt, ut = torch.from_numpy(x), torch.from_numpy(uu)
        t_torch, t_onnx = [], []
        with torch.inference_mode():
            for _ in range(3):  # warm-up
                enc(xt, ut)
                sess.run(["z"], {"x": x, "u": uu})
            for _ in range(args.repeats):
                t = time.perf_counter()
                enc(xt, ut)
                t_torch.append(time.perf_counter() - t)
                t = time.perf_counter()
                sess.run(["z"], {"x": x, "u": uu})
                t_onnx.append(time.perf_counter() - t)
    med_t, med_o = float(np.median(t_torch)), float(np.median(t_onnx))
    out = {
        "image_size": args.image_size,
        "batch": args.batch,
        "threads": args.threads,
        "torch_images_per_s": args.batch / med_t,
        "onnx_images_per_s": args.batch / med_o,
        "ratio_onnx_over_torch": med_t / med_o,
        "parity_max_abs_diff": res.encoder_max_abs_diff,
        "provider": sess.get_providers()[0],
        "torch": torch.__version__,
    }
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
