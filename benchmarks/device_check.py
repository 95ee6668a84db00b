"""One-shot device check: training speed per precision and ONNX Runtime against eager PyTorch.

On a CUDA machine (about 5 minutes on a data-centre GPU): a few training epochs of CMCL on
20,000 synthetic 128 x 128 images in fp32 and in bf16 (``model.precision``), then the encoder
exported to ONNX and run by ONNX Runtime's CUDA execution provider against eager PyTorch on
CUDA at batch 256: parity (max |diff| of the posterior means, target <= 1e-3, TF32 off on both
sides) and speed (median seconds per batch, host arrays in and out on both sides). Without
CUDA it runs a tiny version on the CPU (512 images of 32 x 32, batch 64, the CPU provider)
and says so in ``"mode"``: it checks that the script and the stack work, not speed.

Prints one JSON line: device name, mode, epoch seconds and images/s per precision, ONNX
parity, provider and ratio (eager seconds / ONNX seconds: above 1, ONNX Runtime is faster),
and ``ok`` (parity within target, every epoch finite). Exit status 1 when not ``ok``. Usage::

    python -m benchmarks.device_check                 # full on CUDA, tiny on CPU
    python -m benchmarks.device_check --out benchmarks/results/device_check.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from benchmarks.child_run import print_json_line

PARITY_TARGET = 1e-3
FULL = {"n": 20_000, "size": 128, "epochs": 3, "batch": 256, "train_batch": 128}
TINY = {"n": 512, "size": 32, "epochs": 2, "batch": 64, "train_batch": 64}


def synthetic(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 1, size, size] in [0, 1] from 6 latents (two driven by 3 u) and u [n, 3]."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, 3)).astype(np.float32)  # [n, 3]
    z = rng.normal(size=(n, 6)).astype(np.float32)  # [n, 6]
    z[:, 0] += np.tanh(1.5 * u[:, 0])  # u0 -> z0
    z[:, 1] += 0.8 * u[:, 1]  # u1 -> z1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    centres = rng.random((6, 2)).astype(np.float32)
    bumps = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02) for cx, cy in centres])
    images = np.empty((n, 1, size, size), dtype=np.float32)
    for s in range(0, n, 2048):  # [b, 6] x [6, S, S] -> [b, S, S]
        logits = np.tensordot(z[s : s + 2048], bumps, axes=1) - 0.5
        images[s : s + 2048, 0] = 1.0 / (1.0 + np.exp(-logits))
    return images, u


def train_seconds(images, u, precision: str, cfg: dict, device: str) -> dict:
    """Epoch seconds of a short CMCL fit (no validation, no final solve, no rotations)."""
    from cmcl_core.estimator import CMCL

    model = CMCL(
        latent_dim=6,
        epochs=cfg["epochs"],
        min_epochs=cfg["epochs"],
        batch_size=cfg["train_batch"],
        val_fraction=0.0,
        rotate_every=0,
        refit_dag=False,
        dag_warmup_epochs=1,
        precision=precision,
        device=device,
        seed=0,
    )
    model.fit(images, u, u_types=["continuous"] * 3)
    seconds = [r["seconds"] for r in model.history_]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {
        "epoch_s": [round(s, 3) for s in seconds],
        "images_per_s": round(len(images) / steady, 1),
        "finite": all(math.isfinite(r["loss"]) for r in model.history_),
        "model": model,
    }


def _median_seconds(fn, repeats: int, sync) -> float:
    for _ in range(3):  # warm-up
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def onnx_check(model, images, u, batch: int, device: str) -> dict:
    """ONNX Runtime (CUDA provider on CUDA, else CPU) against eager PyTorch on ``device``."""
    import onnxruntime as ort

    from pipeline.model.onnx_export import available_providers, export_onnx

    enc = model.encoder_module().to("cpu").eval()
    x = np.ascontiguousarray(images[:batch])  # [b, 1, S, S]
    uu = np.ascontiguousarray(u[:batch], dtype=np.float32)  # [b, 3]
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(enc, model.decoder_module(), images, u, Path(tmp), parity_samples=batch)
        providers: list = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in available_providers():
            providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
        sess = ort.InferenceSession(str(Path(tmp) / "encoder.onnx"), providers=providers)
    enc = enc.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def eager() -> np.ndarray:
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(device)
            ut = torch.from_numpy(uu).to(device)
            return enc(xt, ut).cpu().numpy()

    def onnx() -> np.ndarray:
        return sess.run(["z"], {"x": x, "u": uu})[0]

    diff = float(np.max(np.abs(onnx() - eager())))
    t_eager = _median_seconds(eager, 20, sync)
    t_onnx = _median_seconds(onnx, 20, sync)
    return {
        "onnx_provider": sess.get_providers()[0],
        "onnx_parity_max_abs_diff": diff,
        "onnx_batch": batch,
        "eager_batch_s": round(t_eager, 5),
        "onnx_batch_s": round(t_onnx, 5),
        "eager_over_onnx": round(t_eager / t_onnx, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    ap.add_argument("--tiny", action="store_true", help="the CPU-sized check even on CUDA")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    cfg = FULL if cuda else TINY
    if cuda:  # parity is judged without TF32 on either side
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    t0 = time.perf_counter()
    images, u = synthetic(cfg["n"], cfg["size"])
    result: dict = {
        "check": "device_check",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "mode": "cuda" if cuda else "cpu-tiny (no CUDA device: a smoke test, not a speed figure)",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "images": cfg["n"],
        "image_size": cfg["size"],
        "train_batch": cfg["train_batch"],
    }
    finite = True
    model = None
    for precision in ("fp32", "bf16"):
        r = train_seconds(images, u, precision, cfg, device)
        finite &= r["finite"]
        model = r.pop("model") if precision == "fp32" else model
        result[precision] = {k: v for k, v in r.items() if k != "model"}
    result.update(onnx_check(model, images, u, cfg["batch"], device))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["ok"] = bool(finite and result["onnx_parity_max_abs_diff"] <= PARITY_TARGET)
    print_json_line(result, args.out)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
