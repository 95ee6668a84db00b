"""Display intensities from DICOM modality values: VOI LUT / window / percentiles, MONOCHROME1.

MONAI's readers apply only the modality rescale, so these steps (PS3.3 C.11.2 VOI LUT, C.11.1
Modality LUT Sequence, C.7.6.3.1.2 photometric interpretation) are written here by hand, as
MONAI-style array transforms with ``d`` dictionary wrappers; see
:mod:`pipeline.imaging.preprocess` for how they fit the whole preprocessing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from pydicom.pixels import apply_modality_lut, apply_voi

from pipeline.errors import DataError

logger = logging.getLogger(__name__)

_PERCENTILE_SAMPLE = 8192  # pixels used to estimate the robust percentiles


class UnsupportedImageError(DataError):
    """An image this pipeline cannot turn into a model input.

    Attributes:
        reason: a quarantine reason code (``unsupported_photometric``, ``inconsistent_series``,
            ``no_pixel_data``); the message names no patient.
    """

    def __init__(self, reason: str, problem: str, fix: str | None = None):
        self.reason = reason
        super().__init__(problem, fix)


@dataclass(frozen=True)
class DisplayParams:
    """What a file's header says about turning modality values into display intensities.

    Args:
        monochrome1: PhotometricInterpretation is MONOCHROME1 (low values are white).
        window: the first (center, width) pair, or None.
        voi_function: VOILUTFunction: LINEAR, LINEAR_EXACT or SIGMOID.
        voi_lut: the dataset carrying a usable VOI LUT Sequence, or None.
    """

    monochrome1: bool
    window: tuple[float, float] | None = None
    voi_function: str = "LINEAR"
    voi_lut: Any = None

    @classmethod
    def from_dataset(cls, ds: pydicom.Dataset, apply_voi: bool = True) -> DisplayParams:
        """Read the photometric interpretation and VOI module of ``ds``.

        Raises:
            UnsupportedImageError: colour or unknown photometric interpretation.
        """
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
            raise UnsupportedImageError(
                "unsupported_photometric",
                f"photometric interpretation {photometric!r} is not greyscale",
                "only MONOCHROME1/MONOCHROME2 images are used; convert or exclude the file",
            )
        mono1 = photometric == "MONOCHROME1"
        if not apply_voi:
            return cls(monochrome1=mono1)
        seq = ds.get("VOILUTSequence")
        if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
            return cls(monochrome1=mono1, voi_lut=ds)
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is None or width is None:
            return cls(monochrome1=mono1)
        try:  # VM 1-n; a malformed optional window must not cost the image
            center = float(center[0] if isinstance(center, Sequence) else center)
            width = float(width[0] if isinstance(width, Sequence) else width)
        except (TypeError, ValueError, IndexError):
            logger.debug("unparseable VOI window; using percentiles")
            return cls(monochrome1=mono1)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or width <= 0:
            logger.debug("unusable VOI window (function %s); using percentiles", function)
            return cls(monochrome1=mono1)
        return cls(monochrome1=mono1, window=(center, width), voi_function=function)


def scale_range(x: np.ndarray, a_min: float, a_max: float) -> np.ndarray:
    """``ScaleIntensityRange(a_min, a_max, 0, 1, clip=True)`` in numpy, in place on float32."""
    if a_max <= a_min:  # constant image or degenerate window: all 0 (MONAI's behaviour too)
        return np.zeros_like(x)
    x -= np.float32(a_min)
    x /= np.float32(a_max - a_min)
    return np.clip(x, 0.0, 1.0, out=x)


def _percentile_range(x: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Robust (lower, upper): numpy's linear-interpolation percentiles of a strided sample of at
    most ~``_PERCENTILE_SAMPLE`` pixels (``np.percentile`` on a whole 512x512 image costs ~6 ms,
    five times the decode). Read off the sample partitioned at the two neighbours of each
    percentile's position, interpolated between them by ``np.interp`` as over the fully sorted
    sample (the same floats: interp only uses the bracketing pair), at half a sort's cost."""
    stride = max(1, math.ceil(math.sqrt(x.size / _PERCENTILE_SAMPLE)))
    sample = x[..., ::stride, ::stride].ravel()  # [k], k <= ~8192
    last = sample.size - 1
    pos = np.asarray(percentiles, dtype=np.float64) / 100.0 * last  # [2] ranks in the sample
    below = np.floor(pos).astype(np.int64)  # [2]
    above = np.minimum(below + 1, last)  # [2]
    part = np.partition(sample, np.unique(np.concatenate([below, above])))
    lo, hi = (
        np.interp(p, (b, b + 1), (part[b], part[a]))
        for p, b, a in zip(pos.tolist(), below.tolist(), above.tolist(), strict=True)
    )
    return float(lo), float(hi)


def voi_range(
    x: np.ndarray, params: DisplayParams, percentiles: tuple[float, float]
) -> tuple[np.ndarray, float, float]:
    """The VOI step as ``(x', a_min, a_max)``: display = clip((x' - a_min) / (a_max - a_min)).

    ``x'`` is ``x`` itself for the linear windows and percentiles, or the output of the
    non-linear VOI LUT / SIGMOID function. Splitting it this way lets the fast path clip at full
    resolution and apply the affine part after resizing (resizing is linear, so the result is
    the same).
    """
    if params.voi_lut is not None:
        entries, first, _bits = (int(v) for v in params.voi_lut.VOILUTSequence[0].LUTDescriptor)
        # the LUT's own output range maps to [0, 1]: its nominal bit depth (3rd descriptor
        # value) is known to overstate the data (16 declared, 12 used) in vendors' files
        domain = np.arange(first, first + (entries or 65536))  # [entries] every mapped input
        lut = apply_voi(domain, params.voi_lut)  # [entries] the LUT itself
        # the LUT maps integer modality values; those stay exact through float32
        x = apply_voi(np.rint(x).astype(np.int64), params.voi_lut).astype(np.float32)
        return x, float(lut.min()), float(lut.max())
    if params.window is not None:
        c, w = params.window
        if params.voi_function == "SIGMOID":  # PS3.3 C.11.2.1.3.1
            with np.errstate(over="ignore"):  # exp -> inf far below the centre gives 0
                y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
            return y.astype(np.float32), 0.0, 1.0
        if params.voi_function == "LINEAR_EXACT":  # PS3.3 C.11.2.1.3.2
            return x, c - w / 2, c + w / 2
        # LINEAR, PS3.3 C.11.2.1.2.1: the ramp spans [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2]
        w1 = max(w - 1.0, 1e-6)
        return x, c - 0.5 - w1 / 2, c - 0.5 + w1 / 2
    return (x, *_percentile_range(x, percentiles))


class DicomIntensity(Transform):
    """Modality values ``[1, H, W]`` -> display intensities in [0, 1] (steps 3-4 above).

    MONAI's readers apply only the rescale (modality LUT); VOI windowing and MONOCHROME1 are
    not in MONAI, so this transform is written by hand after ``ScaleIntensityRange``'s formula.

    Args:
        params: the file's display parameters (``DisplayParams.from_dataset``).
        percentiles: fallback lower/upper percentiles when there is no VOI.
    """

    def __init__(self, params: DisplayParams, percentiles: tuple[float, float] = (0.5, 99.5)):
        self.params = params
        self.percentiles = percentiles

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray:
        x = np.array(img, dtype=np.float32, copy=True)  # [1, H, W] float32, private copy
        x, a_min, a_max = voi_range(x, self.params, self.percentiles)
        x = scale_range(x, a_min, a_max)
        if self.params.monochrome1:  # low values are white: invert after VOI (PS3.3 C.7.6.3.1.2)
            x = np.subtract(np.float32(1.0), x, out=x)
        return x


class DicomIntensityd(MapTransform):
    """Dictionary wrapper of ``DicomIntensity``: the header comes from ``data[header_key]``.

    Args:
        keys: image keys to transform.
        header_key: key of the ``pydicom.Dataset`` header (pixels need not be loaded).
        percentiles: fallback lower/upper percentiles.
        apply_voi: use the file's VOI LUT / window when present.
    """

    def __init__(
        self,
        keys: KeysCollection,
        header_key: str = "header",
        percentiles: tuple[float, float] = (0.5, 99.5),
        apply_voi: bool = True,
    ):
        super().__init__(keys)
        self.header_key = header_key
        self.percentiles = percentiles
        self.apply_voi = apply_voi

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        params = DisplayParams.from_dataset(d[self.header_key], self.apply_voi)
        transform = DicomIntensity(params, self.percentiles)
        for key in self.key_iterator(d):
            d[key] = transform(d[key])
        return d


class ModalityLut(Transform):
    """Apply a *Modality LUT Sequence* when the file has one and no rescale tags.

    MONAI's ``PydicomReader`` applies *Rescale Slope/Intercept* (whenever either is present) but
    ignores the LUT form of the modality transform, so this one is by hand (through pydicom).

    Args:
        ds: the file's header.
    """

    def __init__(self, ds: pydicom.Dataset):
        rescaled = "RescaleSlope" in ds or "RescaleIntercept" in ds  # the reader applied it
        self.ds = ds if not rescaled and ds.get("ModalityLUTSequence") else None

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if self.ds is None:
            return img
        return apply_modality_lut(np.asarray(img).astype(np.int64), self.ds)


class ModalityLutd(MapTransform):
    """Dictionary wrapper of ``ModalityLut``; the header comes from ``data[header_key]``."""

    def __init__(self, keys: KeysCollection, header_key: str = "header"):
        super().__init__(keys)
        self.header_key = header_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        transform = ModalityLut(d[self.header_key])
        for key in self.key_iterator(d):
            d[key] = transform(d[key])
        return d
