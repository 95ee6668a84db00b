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
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

from pipeline.preprocess import PreprocessSpec, preprocess_dataset, preprocess_file


def _file_bytes(rng: np.random.Generator, size: int) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.set_pixel_data(rng.integers(0, 4096, (size, size), dtype=np.uint16), "MONOCHROME2", 12)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _median_ms(fn, items, repeats: int = 3) -> float:
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        per.append((time.perf_counter() - t0) / len(items) * 1e3)
    return statistics.median(per)


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
        t_bare = _median_ms(bare, files)
        t_pre = _median_ms(lambda ds: preprocess_dataset(ds, spec), decoded)
        t_full = _median_ms(
            lambda raw: preprocess_dataset(pydicom.dcmread(io.BytesIO(raw)), spec), files
        )
        t_file = _median_ms(lambda p: preprocess_file(p, spec), paths, repeats=1)
    print(f"{args.size}x{args.size} -> 64x64, n={args.n}, ms per image (median of 3):")
    print(f"  bare dcmread+pixel_array+resize : {t_bare:6.2f}")
    print(f"  preprocess_dataset (decoded ds) : {t_pre:6.2f}")
    print(
        f"  dcmread + preprocess_dataset    : {t_full:6.2f}  ratio bare/this {t_bare / t_full:.2f}"
    )
    print(f"  preprocess_file (MONAI Compose) : {t_file:6.2f}")


if __name__ == "__main__":
    main()
