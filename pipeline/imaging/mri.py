"""An MR series (many 2D slices) -> the same 2D ``[1, S, S]`` model input as a radiograph.

The reduction is documented and configurable (``dicom.mri_reduction``):

1. **Order the slices** along the acquisition axis: each slice's ImagePositionPatient projected
   on the slice normal (the cross product of the ImageOrientationPatient row and column
   cosines), the position along that axis being what GDCM/SimpleITK sort by too. When
   positions are missing or coincide, InstanceNumber decides; failing that, the given order.
2. **Build the volume** ``[n, H, W]`` in modality units (rescale applied once per slice, by
   MONAI's ``PydicomReader``; see :func:`pipeline.imaging.preprocess.decode_modality`). Paths
   are read with pydicom, so a series given as paths and as datasets gives identical arrays
   (SimpleITK's ``ImageSeriesReader`` is used by the tests as an independent check of the
   slice order).
3. **Reduce to 2D**: ``middle`` takes slice ``n // 2`` of the ordered stack (for even ``n`` the
   upper of the two central slices); ``mip`` takes the maximum over all slices.
4. **In-plane transforms** exactly as for radiographs (VOI window of the reference slice --
   the middle one -- else robust percentiles; MONOCHROME1 inversion; resize and pad).

Grouping files into series (by SeriesInstanceUID) is the ingest's job; this module takes one
series at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom

from pipeline.imaging.display import DisplayParams, UnsupportedImageError
from pipeline.imaging.preprocess import PreprocessSpec, ReduceFrames, decode_modality, finish

logger = logging.getLogger(__name__)


def slice_positions(datasets: Sequence[pydicom.Dataset]) -> np.ndarray | None:
    """Each slice's position along the series' slice normal, or None when unavailable.

    Args:
        datasets: the slices, in any order.

    Returns:
        ``[n]`` float64 positions (mm), or None if any slice lacks ImagePositionPatient or the
        first lacks ImageOrientationPatient, or if two positions coincide.
    """
    first = datasets[0]
    iop = first.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], dtype=np.float64), np.asarray(iop[3:], dtype=np.float64)
    normal = np.cross(row, col)  # [3]
    positions = []
    for ds in datasets:
        ipp = ds.get("ImagePositionPatient")
        if ipp is None or len(ipp) != 3:
            return None
        positions.append(float(np.dot(np.asarray(ipp, dtype=np.float64), normal)))
    pos = np.asarray(positions)  # [n]
    if len(np.unique(np.round(pos, 4))) != len(pos):
        return None
    return pos


def slice_order(datasets: Sequence[pydicom.Dataset]) -> list[int]:
    """Indices that sort the slices along the acquisition axis (see the module docstring)."""
    pos = slice_positions(datasets)
    if pos is not None:
        return [int(i) for i in np.argsort(pos, kind="stable")]
    numbers = [ds.get("InstanceNumber") for ds in datasets]
    if all(n is not None for n in numbers):
        logger.debug("series without usable positions: ordering by InstanceNumber")
        return sorted(range(len(datasets)), key=lambda i: int(numbers[i]))
    logger.debug("series without positions or instance numbers: keeping the given order")
    return list(range(len(datasets)))


def series_volume(
    datasets: Sequence[pydicom.Dataset], order: Sequence[int] | None = None
) -> np.ndarray:
    """The ordered volume ``[n, H, W]`` float32 in modality units.

    Args:
        datasets: the slices, in any order.
        order: their acquisition order if already known (``slice_order``).

    Raises:
        UnsupportedImageError: slices differ in size, or a slice is itself multi-frame.
    """
    order = slice_order(datasets) if order is None else order
    ordered = [datasets[i] for i in order]
    slices = [decode_modality(ds) for ds in ordered]  # n x [H, W]
    shapes = {s.shape for s in slices}
    if len(shapes) != 1 or slices[0].ndim != 2:
        raise UnsupportedImageError(
            "inconsistent_series",
            f"the slices of an MR series have differing or non-2D shapes {sorted(shapes)}",
            "export the series with one image size per slice, or exclude it",
        )
    return np.stack(slices)  # n x [H, W] -> [n, H, W]


def _as_datasets(items: Sequence[pydicom.Dataset] | Sequence[Path]) -> list[pydicom.Dataset]:
    return [
        pydicom.dcmread(item) if isinstance(item, str | Path) else item  # type: ignore[arg-type]
        for item in items
    ]


def preprocess_series(
    datasets: Sequence[pydicom.Dataset] | Sequence[Path], spec: PreprocessSpec
) -> np.ndarray:
    """One MR series -> the model input ``[1, S, S]`` float32 in [0, 1].

    Args:
        datasets: the series' slices as read datasets or as file paths, in any order.
        spec: the preprocessing spec (``spec.mri_reduction``: ``middle`` or ``mip``).

    Returns:
        float32 array ``[1, S, S]`` in [0, 1].

    Raises:
        UnsupportedImageError: an empty series, slices of differing size, colour slices.
    """
    if len(datasets) == 0:
        raise UnsupportedImageError("no_pixel_data", "an MR series with no slices was given")
    dss = _as_datasets(datasets)
    order = slice_order(dss)
    reference = dss[order[len(order) // 2]]  # the middle slice carries the VOI window used
    params = DisplayParams.from_dataset(reference, spec.apply_voi)
    volume = series_volume(dss, order)[None]  # [n, H, W] -> [1, n, H, W]
    image = ReduceFrames(spec.mri_reduction)(volume)  # [1, n, H, W] -> [1, H, W]
    return finish(image, params, spec, inplace=True)  # [1, H, W] -> [1, S, S]
