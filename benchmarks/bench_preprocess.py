"""Speed of ``preprocess_dataset`` per 512x512 image against a bare decode + resize loop.

Run: ``.venv/bin/python benchmarks/bench_preprocess.py [--n 200] [--size 512]``. Prints the
median milliseconds per image (files held in memory, one thread) for:
bare = ``dcmread`` + ``pixel_array`` + area resize to 64x64; ``preprocess_dataset`` on an
already-decoded dataset (the ingest hot path after validation decoded the pixels); and
``dcmread`` + ``preprocess_dataset`` together; and ``preprocess_file`` (MONAI's LoadImaged).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F

from pipeline.imaging.preprocess import PreprocessSpec, preprocess_dataset, preprocess_file
from pipeline.synthetic.writer import make_dataset, to_bytes


def _file_bytes(rng: np.random.Generator, size: int) -> bytes:
    pixels = rng.integers(0, 4096, (size, size), dtype=np.uint16)  # [size, size] 12-bit
    return to_bytes(make_dataset(modality="CR", pixels=pixels))


def _cpu_ms(fns: dict, items: list, repeats: int = 3) -> dict[str, float]:
    """Median over repeats of CPU milliseconds per item for each function, interleaved item by
    item so that load from other processes hits every variant alike (process CPU time, not
    wall time: the development machines are shared)."""
    per: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        total = dict.fromkeys(fns, 0.0)
        for it in items:
            for name, fn in fns.items():
                t0 = time.process_time()
                fn(it[name] if isinstance(it, dict) else it)
                total[name] += time.process_time() - t0
        for name in fns:
            per[name].append(total[name] / len(items) * 1e3)
    return {name: statistics.median(v) for name, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    files = [_file_bytes(rng, args.size) for _ in range(args.n)]
    spec = PreprocessSpec(image_size=64)

    def bare(raw: bytes) -> np.ndarray:
        arr = pydicom.dcmread(io.BytesIO(raw)).pixel_array.astype(np.float32)
        return F.interpolate(torch.from_numpy(arr)[None, None], size=(64, 64), mode="area")

    decoded = []
    for raw in files:
        ds = pydicom.dcmread(io.BytesIO(raw))
        ds.pixel_array  # noqa: B018 - decode once, as the ingest's validation does
        decoded.append(ds)

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, raw in enumerate(files[:50]):
            p = Path(tmp) / f"{i}.dcm"
            p.write_bytes(raw)
            paths.append(p)
        items = [
            {"bare": raw, "pre": ds, "full": raw} for raw, ds in zip(files, decoded, strict=True)
        ]
        t = _cpu_ms(
            {
                "bare": bare,
                "pre": lambda ds: preprocess_dataset(ds, spec),
                "full": lambda raw: preprocess_dataset(pydicom.dcmread(io.BytesIO(raw)), spec),
            },
            items,
        )
        t_file = _cpu_ms({"file": lambda p: preprocess_file(p, spec)}, paths, repeats=1)["file"]
    print(f"{args.size}x{args.size} -> 64x64, n={args.n}, CPU ms per image (median of 3):")
    print(f"  bare dcmread+pixel_array+resize : {t['bare']:6.2f}")
    print(f"  preprocess_dataset (decoded ds) : {t['pre']:6.2f}")
    print(
        f"  dcmread + preprocess_dataset    : {t['full']:6.2f}"
        f"  ratio bare/this {t['bare'] / t['full']:.2f}"
    )
    print(f"  preprocess_file (MONAI Compose) : {t_file:6.2f}")


if __name__ == "__main__":
    main()
