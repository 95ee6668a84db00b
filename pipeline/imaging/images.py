"""Assemble the estimator's image array ``[n, 1, S, S]`` from the preprocessed-array cache."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.imaging.cache import PreprocessCache

logger = logging.getLogger(__name__)


def load_training_images(
    cache: PreprocessCache, keys: Sequence[str], out_path: Path | None = None
) -> np.ndarray:
    """Stack cached images in the order of ``keys`` into one float32 array.

    Images are copied one at a time into the preallocated result, so peak memory is the result
    plus one image; with ``out_path`` the result is a ``.npy`` memory map on disk
    (``np.load(out_path, mmap_mode="r")`` reopens it) and RAM holds only the pages in use.

    Args:
        cache: the preprocessed-array cache the ingest filled.
        keys: cache keys, one per training image, in the order of the other arrays.
        out_path: optional ``.npy`` file to stream the result into.

    Returns:
        float32 array ``[n, 1, S, S]`` (an ``np.memmap`` when ``out_path`` is given).

    Raises:
        DataError: no keys, keys missing from the cache, or cached images of differing shapes.
    """
    if len(keys) == 0:
        raise DataError(
            "no images to load: the training set is empty",
            "check that `cmcl ingest` catalogued images and that they join clinical records",
        )
    missing = sum(1 for k in keys if k not in cache)
    if missing:
        raise DataError(
            f"{missing} of {len(keys)} preprocessed images are missing from the cache at "
            f"{cache.root}",
            "re-run `cmcl ingest --config FILE` (with the same dicom settings) to rebuild them",
        )
    first = _get(cache, keys[0])
    shape = (len(keys), *first.shape)  # [n, 1, S, S]
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out: np.ndarray = np.lib.format.open_memmap(
            out_path, mode="w+", dtype=np.float32, shape=shape
        )
    else:
        out = np.empty(shape, dtype=np.float32)
    out[0] = first
    for i in range(1, len(keys)):
        arr = _get(cache, keys[i])
        if arr.shape != first.shape:
            raise DataError(
                f"cached images have differing shapes ({arr.shape} and {first.shape})",
                "re-run `cmcl ingest --config FILE` so every image is preprocessed with the "
                "current dicom.image_size",
            )
        out[i] = arr  # [1, S, S]
    if isinstance(out, np.memmap):
        out.flush()
    logger.info("loaded %d training images of shape %s", len(keys), first.shape)
    return out


def _get(cache: PreprocessCache, key: str) -> np.ndarray:
    arr = cache.get(key)
    if arr is None:  # removed between the check and the read (corrupt or concurrent delete)
        raise DataError(
            "a preprocessed image disappeared from the cache while loading",
            "re-run `cmcl ingest --config FILE` to rebuild the cache, then train again",
        )
    return arr
