"""DICOM pixels -> the model's input: one channel, ``S x S``, float32 in [0, 1].

The steps, in DICOM's own order (PS3.3 C.11: modality LUT -> VOI LUT -> presentation):

1. **Decode once** with MONAI's ``PydicomReader`` (``read -> get_data -> (array, meta)``), built
   with ``swap_ij=False`` so the array keeps pydicom's ``pixel_array`` orientation
   ``[rows, columns]`` (MONAI's default ``swap_ij=True`` transposes: a 256x200 file would load
   as 200x256). The reader is passed explicitly (``LoadImage`` would pick ITKReader when
   ``itk`` is installed). The reader applies *Rescale Slope/Intercept* itself whenever either tag is
   present; we therefore never rescale again, and apply a *Modality LUT Sequence* (which MONAI
   ignores) only when no rescale tags exist. When ingest's validation has decoded the pixels
   already, they are rescaled with the reader's own expressions instead of decoding again.
2. **Multi-frame**: an MR file's frames are reduced like a series (``spec.mri_reduction``;
   enhanced files' frames ordered by their functional groups' plane positions, else stored
   order); for CR/DX (and any other modality) the first stored frame is taken.
3. **VOI** (MONAI lacks it; ``pipeline.imaging.display``): the *VOI LUT Sequence* through
   ``pydicom.pixels.apply_voi``, else the first *Window Center/Width* pair (LINEAR,
   LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1), else robust percentile scaling
   (``spec.percentiles``, default 0.5-99.5 %, estimated on a strided sample of at most ~8k
   pixels). The result is in [0, 1].
4. **MONOCHROME1** (MONAI lacks it): ``1 - x`` after the VOI step, so a MONOCHROME1 file and
   its MONOCHROME2 twin (same anatomy stored inverted) give the same array.
5. **Spatial**: keep the aspect ratio: resize the longest side to ``S`` (``area`` when
   shrinking, ``bilinear`` when enlarging) and pad the short side symmetrically with 0 (black)
   -- MONAI's ``Resize(S, size_mode="longest")`` + ``SpatialPad((S, S))``. With
   ``keep_aspect=False`` the image is stretched to ``S x S`` instead.

Two entry points run these steps: ``preprocess_file`` is a MONAI dictionary-transform pipeline
(``LoadImaged`` -> ``EnsureChannelFirstd`` -> ``ModalityLutd`` -> ``ReduceFramesd`` ->
``DicomIntensityd`` -> ``Resized`` -> ``SpatialPadd``) for users and tests;
``preprocess_dataset`` (the ingest hot path) runs the same math on an already-read dataset with
plain numpy/torch calls, because MONAI's per-call ``MetaTensor`` overhead (~1.5 ms per
transform on a 512x512 image) costs more than decoding the file. A parity test holds the two to
1e-6. Measured with ``benchmarks/bench_preprocess.py``: ~2 ms CPU per 512x512 image for
``preprocess_dataset`` on a decoded dataset, against ~3 ms for a bare ``dcmread`` +
``pixel_array`` + resize.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import PydicomReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Resized,
    SpatialPadd,
    Transform,
)

from pipeline.config import DicomConfig
from pipeline.imaging.display import (
    DicomIntensityd,
    DisplayParams,
    ModalityLut,
    ModalityLutd,
    UnsupportedImageError,
    scale_range,
    voi_range,
)

logger = logging.getLogger(__name__)

# Bump whenever the transform code changes what it outputs: it is part of every cache key.
PREPROCESS_VERSION = "1"

_MRI_REDUCTIONS = ("middle", "mip")
_ONLY_IMAGES = "only image objects (CR, DX, MR, ...) are preprocessed; exclude the file"
_GEOMETRY_TAGS = (0x00200037, 0x00200032, 0x00280030)  # IOP, IPP, PixelSpacing
_BLOCK_MAX = 16  # pixels per block up to which block_mean beats torch's area resize


@dataclass(frozen=True)
class PreprocessSpec:
    """How a DICOM image becomes the model's ``[1, S, S]`` input; part of every cache key.

    Args:
        image_size: output side ``S`` in pixels.
        mri_reduction: ``"middle"`` (middle slice along the acquisition axis) or ``"mip"``
            (maximum-intensity projection along it) for MR series and multi-frame MR files.
        keep_aspect: resize the longest side to ``S`` and zero-pad the other (True), or
            stretch to ``S x S`` (False).
        percentiles: lower/upper percentiles mapped to 0 and 1 when a file has no VOI window.
        apply_voi: use the file's VOI LUT / window when present (else always percentiles).
    """

    image_size: int = 64
    mri_reduction: str = "middle"
    keep_aspect: bool = True
    percentiles: tuple[float, float] = (0.5, 99.5)
    apply_voi: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be in [1, 4096], got {self.image_size}")
        if self.mri_reduction not in _MRI_REDUCTIONS:
            raise ValueError(f"mri_reduction must be one of {_MRI_REDUCTIONS}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lo, hi}")

    def fingerprint(self) -> str:
        """sha256 over every field and ``PREPROCESS_VERSION``: a changed spec or transform
        code never reuses a stale cached array."""
        payload = json.dumps(
            {"version": PREPROCESS_VERSION, **asdict(self)}, sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @classmethod
    def from_config(cls, dicom: DicomConfig) -> PreprocessSpec:
        """The spec a ``dicom:`` config section asks for."""
        return cls(image_size=dicom.image_size, mri_reduction=str(dicom.mri_reduction))


class ReduceFrames(Transform):
    """``[1, F, H, W]`` -> ``[1, H, W]``: ``first`` frame, ``middle`` frame, or ``mip``.

    MONAI has no projection transform, so this is by hand.

    Args:
        mode: ``first``, ``middle`` or ``mip``.
        order: frame indices in acquisition order (``frame_order``); None: stored order.
    """

    def __init__(self, mode: str, order: Sequence[int] | None = None):
        if mode not in ("first", *_MRI_REDUCTIONS):
            raise ValueError(f"unknown frame reduction {mode!r}")
        self.mode = mode
        self.order = order

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray:
        x = np.asarray(img)  # [1, F, H, W]
        if x.ndim == 3:  # already 2D
            return x
        if self.mode == "mip":
            return x.max(axis=1)  # [1, F, H, W] -> [1, H, W]
        if self.mode == "first":
            return x[:, 0]  # [1, F, H, W] -> [1, H, W]
        order = self.order if self.order is not None and len(self.order) == x.shape[1] else None
        middle = x.shape[1] // 2
        return x[:, middle if order is None else order[middle]]  # [1, F, H, W] -> [1, H, W]


class ReduceFramesd(MapTransform):
    """Dictionary wrapper of ``ReduceFrames``; mode and order come from the header."""

    def __init__(self, keys: KeysCollection, header_key: str = "header", mri: str = "middle"):
        super().__init__(keys)
        self.header_key = header_key
        self.mri = mri

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        header = d[self.header_key]
        transform = ReduceFrames(frame_reduction(header, self.mri), frame_order(header))
        for key in self.key_iterator(d):
            d[key] = transform(d[key])
        return d


def frame_reduction(ds: pydicom.Dataset, mri: str) -> str:
    """How a multi-frame file becomes 2D: MR frames like a series, other modalities' first."""
    return mri if str(ds.get("Modality", "")).upper() == "MR" else "first"


def frame_order(ds: pydicom.Dataset) -> list[int] | None:
    """Frames of an enhanced multi-frame file (e.g. Enhanced MR) in acquisition order: sorted by
    each frame's PlanePositionSequence position along the slice normal (PlaneOrientation from
    the shared or first per-frame functional group). None when the file does not say."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return None
    try:
        shared = ds.get("SharedFunctionalGroupsSequence")
        group = shared[0] if shared and "PlaneOrientationSequence" in shared[0] else per_frame[0]
        iop = [float(v) for v in group.PlaneOrientationSequence[0].ImageOrientationPatient]
        normal = np.cross(iop[:3], iop[3:])  # [3]
        positions = [
            float(
                np.dot([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient], normal)
            )
            for f in per_frame
        ]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    return [int(i) for i in np.argsort(positions, kind="stable")]


# --- decoding --------------------------------------------------------------------------------


class _DatasetReader(PydicomReader):
    """MONAI's ``PydicomReader`` for a dataset already read (and validated) by the caller.

    ``get_data`` expects two attributes that ``read`` sets; and MONAI's ``_get_meta_dict``
    serialises the whole dataset to DICOM JSON (pixel data included, ~1 ms per 512x512 image,
    as much as decoding it) only to keep five geometry tags, so we copy those tags directly.
    """

    def __init__(self) -> None:
        super().__init__(swap_ij=False, prune_metadata=True)
        self.has_series = False
        self.filenames = ["<dataset>"]  # never a real path: it may embed patient data

    def _get_meta_dict(self, img: pydicom.Dataset) -> dict:
        meta = {}
        for tag in _GEOMETRY_TAGS:
            if tag in img:
                meta[f"{tag:08X}"] = img[tag].to_json_dict(None, 1 << 30)
        return meta


def decode_modality(ds: pydicom.Dataset, pixels: np.ndarray | None = None) -> np.ndarray:
    """Pixels in modality units: ``[H, W]`` or ``[F, H, W]`` float32, rescaled exactly once.

    Args:
        ds: the dataset.
        pixels: its pixel data as already decoded by the caller (``ds.pixel_array``), used as
            is; None: decoded here through MONAI's ``PydicomReader``.

    Raises:
        UnsupportedImageError: the dataset has no pixel data.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnsupportedImageError("no_pixel_data", "the DICOM object has no pixel data")
    if "SegmentSequence" in ds:  # MONAI's reader would decode it as a label map
        raise UnsupportedImageError(
            "unsupported_modality", "a segmentation object (SEG) is not an image", _ONLY_IMAGES
        )
    with warnings.catch_warnings():  # missing-geometry warnings; pydicom may quote raw values
        warnings.simplefilter("ignore")
        if pixels is None:
            arr, _meta = _DatasetReader().get_data(ds)
        else:
            arr = _rescaled(ds, pixels)
        arr = ModalityLut(ds)(arr)
    out = np.asarray(arr, dtype=np.float32)
    return out.copy() if out is arr or out is pixels else out  # private: never the caller's


def _rescaled(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """What MONAI's ``PydicomReader.get_data`` returns for one decoded image: the pixels, times
    *Rescale Slope* plus *Rescale Intercept* in float32 when either tag is present (its
    ``_get_array_data``, same expressions so the same floats; a test holds them equal). By hand
    for the ingest hot path: the reader's affine, spacing and metadata bookkeeping, unused here,
    costs as much as this step's arithmetic on a 256x256 image."""
    slope, offset, rescale = 1.0, 0.0, False
    if hasattr(ds, "RescaleSlope"):
        slope, rescale = ds.RescaleSlope, True
    if hasattr(ds, "RescaleIntercept"):
        offset, rescale = ds.RescaleIntercept, True
    data = np.ascontiguousarray(pixels)
    return data.astype(np.float32) * slope + offset if rescale else data


# --- spatial ---------------------------------------------------------------------------------


def target_size(h: int, w: int, spec: PreprocessSpec) -> tuple[int, int]:
    """The resized (rows, columns) before padding, as MONAI's ``Resize`` computes it."""
    S = spec.image_size
    if not spec.keep_aspect:
        return (S, S)
    scale = S / max(h, w)
    return (int(round(h * scale)), int(round(w * scale)))


def resize_mode(h: int, w: int, size: tuple[int, int]) -> str:
    """``area`` (anti-aliased averaging) when no side grows, else ``bilinear``."""
    return "area" if size[0] <= h and size[1] <= w else "bilinear"


def resize_pad(img: np.ndarray, spec: PreprocessSpec, pad: bool = True) -> np.ndarray:
    """``[1, H, W]`` -> ``[1, S, S]``: exactly MONAI's ``Resize(S, size_mode="longest")`` +
    ``SpatialPad((S, S))`` (or ``Resize((S, S))`` without ``keep_aspect``), called as torch
    functions to skip MONAI's per-call ``MetaTensor`` bookkeeping (held equal by a test).
    With ``pad=False`` the resized ``[1, h, w]`` is returned unpadded."""
    h, w = img.shape[-2:]
    size = target_size(h, w, spec)
    out = np.ascontiguousarray(img, dtype=np.float32)
    fh, fw = h // size[0], w // size[1]  # whole shrink factors, if the sides have them
    if size != (h, w) and (fh * size[0], fw * size[1]) == (h, w) and fh * fw <= _BLOCK_MAX:
        out = block_mean(out, fh, fw)  # [1, H, W] -> [1, h, w], the same floats as "area"
    elif size != (h, w):
        mode = resize_mode(h, w, size)
        x = torch.from_numpy(out)[None]  # [1, H, W] -> [1, 1, H, W]
        x = F.interpolate(x, size=size, mode=mode, align_corners=None if mode == "area" else False)
        out = x[0].numpy()  # [1, 1, h, w] -> [1, h, w]
    return pad_square(out, spec.image_size) if pad else out


def block_mean(img: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """``[..., H, W]`` -> ``[..., H / fh, W / fw]``: the mean of each ``fh x fw`` block, bit for bit
    what ``F.interpolate(mode="area")`` (torch's adaptive average pooling) gives when the sides
    shrink by whole factors: the block summed from 0 in row-major order in float32, then divided
    by ``fh`` and by ``fw`` (a test holds it equal to torch). By hand because it costs half of
    torch's call for the small factors it is used for (up to ``_BLOCK_MAX`` pixels a block)."""
    h, w = img.shape[-2] // fh, img.shape[-1] // fw
    acc = np.zeros(img.shape[:-2] + (h, w), dtype=np.float32)
    for i in range(fh):
        for j in range(fw):
            acc += img[..., i::fh, j::fw]
    acc /= np.float32(fh)
    acc /= np.float32(fw)
    return acc


def pad_square(img: np.ndarray, size: int) -> np.ndarray:
    """``[1, h, w]`` -> ``[1, S, S]`` zero-padded symmetrically, the odd pixel after (as MONAI's
    ``SpatialPad`` with ``method="symmetric"``)."""
    h, w = img.shape[-2:]
    ph, pw = size - h, size - w
    if not (ph or pw):
        return img
    return np.pad(img, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))


# --- entry points ----------------------------------------------------------------------------


def preprocess_dataset(
    ds: pydicom.Dataset, spec: PreprocessSpec, pixels: np.ndarray | None = None
) -> np.ndarray:
    """A read DICOM dataset -> the model input ``[1, S, S]`` float32 in [0, 1].

    Args:
        ds: a dataset with pixel data (CR/DX/MR/...; MONOCHROME1 or MONOCHROME2).
        spec: the preprocessing spec.
        pixels: ``ds``'s pixel data when the caller has decoded it already (validation does:
            :attr:`pipeline.dicom.validate.Accepted.pixels`); None: decoded here.

    Returns:
        float32 array ``[1, S, S]`` in [0, 1].

    Raises:
        UnsupportedImageError: colour images, or no pixel data.
    """
    params = DisplayParams.from_dataset(ds, spec.apply_voi)
    arr = decode_modality(ds, pixels)[None]  # [H, W] or [F, H, W] -> [1, ...]
    if arr.ndim == 4:  # multi-frame: [1, F, H, W] -> [1, H, W]
        arr = ReduceFrames(frame_reduction(ds, spec.mri_reduction), frame_order(ds))(arr)
    return finish(arr, params, spec, inplace=True)


def finish(
    img: np.ndarray, params: DisplayParams, spec: PreprocessSpec, inplace: bool = False
) -> np.ndarray:
    """Modality values ``[1, H, W]`` -> ``[1, S, S]`` in [0, 1] (steps 3-5).

    ``inplace=True`` lets the full-resolution clip overwrite ``img`` (a private float32 array).

    Equal (to float rounding) to ``DicomIntensity`` followed by MONAI's ``Resize`` and
    ``SpatialPad``, but cheaper: only the clip runs at full resolution; the affine map to
    [0, 1] and the MONOCHROME1 inversion commute with the (linear) resize and run on ``S x S``.
    """
    x = np.asarray(img, dtype=np.float32)  # [1, H, W]
    x, a_min, a_max = voi_range(x, params, spec.percentiles)
    if a_max <= a_min:  # constant image or degenerate window
        x = np.zeros_like(x)
    else:
        x = np.clip(x, np.float32(a_min), np.float32(a_max), out=x if inplace else None)
    x = resize_pad(x, spec, pad=False)  # [1, H, W] -> [1, h, w], h, w <= S
    if a_max > a_min:
        x = scale_range(x, a_min, a_max)
    if params.monochrome1:  # invert after VOI (PS3.3 C.7.6.3.1.2)
        x = np.subtract(np.float32(1.0), x, out=x)
    return pad_square(x, spec.image_size)  # [1, h, w] -> [1, S, S]


def monai_pipeline(spec: PreprocessSpec, size_hw: tuple[int, int]) -> Any:
    """The MONAI dictionary-transform pipeline for one image of ``size_hw`` (rows, columns).

    Keys: ``image`` (a path) and ``header`` (its ``pydicom.Dataset``, pixels not needed).
    """
    S = spec.image_size
    mode = resize_mode(*size_hw, target_size(*size_hw, spec))
    resize = (
        Resized("image", S, size_mode="longest", mode=mode)
        if spec.keep_aspect
        else Resized("image", (S, S), mode=mode)
    )
    return Compose(
        [
            LoadImaged("image", reader=PydicomReader(swap_ij=False), image_only=True),
            EnsureChannelFirstd("image", channel_dim="no_channel"),
            ModalityLutd("image"),
            ReduceFramesd("image", mri=spec.mri_reduction),
            DicomIntensityd("image", percentiles=spec.percentiles, apply_voi=spec.apply_voi),
            resize,
            SpatialPadd("image", (S, S)),
            EnsureTyped("image", data_type="numpy", dtype=np.float32, track_meta=False),
        ]
    )


def preprocess_file(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """One DICOM file -> ``[1, S, S]`` float32 in [0, 1] through MONAI's ``LoadImaged``.

    Same result as ``preprocess_dataset(pydicom.dcmread(path), spec)`` (to 1e-6).
    """
    header = pydicom.dcmread(path, stop_before_pixels=True)
    DisplayParams.from_dataset(header, spec.apply_voi)  # refuse colour before decoding
    size_hw = (int(header.Rows), int(header.Columns))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = monai_pipeline(spec, size_hw)({"image": str(path), "header": header})
    return np.asarray(out["image"], dtype=np.float32)
