"""The one writer of synthetic DICOM files, for the synthetic cohort, the tests and benchmarks.

Every file is a pydicom ``Dataset`` built by :func:`dataset_from` (file meta, the given
elements, a pixel module from ``set_pixel_data``) and written as a Part 10 file
(``dcmwrite(..., enforce_file_format=True)``). Two front ends share it:

* :func:`make_dataset` / :func:`write_dicom` and the broken-file helpers
  (:func:`write_truncated`, :func:`write_not_dicom`, :func:`write_no_pixels`): any modality,
  photometric interpretation, size, bit depth, frame count, transfer syntax and PHI values,
  for tests and benchmarks::

      write_dicom(tmp_path / "a.dcm", phi=Phi(patient_id="P1"), modality="DX", rows=64)

* :class:`DicomFile` / :func:`write_files`: the files the synthetic cohort
  (:mod:`pipeline.synthetic.cohort`) plans, written in parallel; the same seed gives the same
  bytes. Broken variants (truncated, not DICOM, no pixel data) are made from the same datasets,
  so they differ from a good file only in what makes them bad.

Header values look like PHI but are plainly synthetic. pydicom writes the files; nothing here
is a hand-made encoder.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

# Storage SOP classes by modality; any other modality is written as Secondary Capture.
SOP_CLASS = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "MR": MRImageStorage,
    "CT": CTImageStorage,
    "OT": SecondaryCaptureImageStorage,
}
MAX_STORED = 4095  # the cohort's 12-bit pixels: BitsStored 12, HighBit 11
WINDOW = (2048, 4096)  # the cohort's VOI center/width mapping [0, 4095] linearly onto [0, 1]
TRUNCATE_AT = 0.6  # a truncated file keeps this fraction of its bytes (cut inside the pixels)
_NOT_DICOM = b"This is not a DICOM file: a deliberately broken file of a CMCL synthetic cohort.\n"
# Elements of every cohort file besides its own header (DicomFile.header overrides them).
_COHORT_ELEMENTS: dict[str, Any] = {
    "SpecificCharacterSet": "ISO_IR 100",
    "InstitutionName": "CMCL Synthetic Hospital",
    "ReferringPhysicianName": "SYNTHETIC^REFERRER",
    "Manufacturer": "CMCL synthetic generator",
    "StudyTime": "120000",
    "StudyID": "1",
    "SeriesNumber": 1,
    "InstanceNumber": 1,
    "BodyPartExamined": "CHEST",
}


# --- the dataset and its bytes ------------------------------------------------------------


def dataset_from(
    elements: Mapping[str, Any],
    pixels: np.ndarray,
    photometric: str,
    *,
    bits_stored: int,
) -> Dataset:
    """A dataset with Part 10 file meta, ``elements`` (keyword -> value) and a pixel module.

    Args:
        elements: DICOM keywords and values; ``SOPClassUID`` and ``SOPInstanceUID`` are
            required (they also fill the file meta).
        pixels: ``[rows, columns]``, ``[frames, rows, columns]`` or ``[..., 3]`` for RGB, as
            stored (uint8/uint16).
        photometric: PhotometricInterpretation (MONOCHROME1, MONOCHROME2, RGB).
        bits_stored: BitsStored of the pixel module.

    Returns:
        The dataset, with an explicit VR little endian transfer syntax.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = elements["SOPClassUID"]
    ds.file_meta.MediaStorageSOPInstanceUID = elements["SOPInstanceUID"]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    # keep the SOPInstanceUID chosen by the caller
    ds.set_pixel_data(pixels, photometric, bits_stored=bits_stored, generate_instance_uid=False)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """The Part 10 file of ``ds``."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def truncate(data: bytes, keep_fraction: float = TRUNCATE_AT) -> bytes:
    """The first ``keep_fraction`` of a file (pydicom still parses a cut file's header)."""
    return data[: int(len(data) * keep_fraction)]


# --- front end for tests and benchmarks -----------------------------------------------------


@dataclass(frozen=True)
class Phi:
    """Identifying values written into a test file (defaults are harmless test strings)."""

    patient_id: str | None = "TEST-PATIENT-1"
    patient_name: str = "TEST^PATIENT"
    birth_date: str = "19700101"
    accession_number: str = "ACC0001"
    institution: str = "Test Hospital"
    referring_physician: str = "REF^DOCTOR"
    study_date: str = "20200102"


@dataclass(frozen=True)
class UIDs:
    """The instance / series / study UIDs of a file (fresh random ones by default)."""

    sop_instance: str | None = field(default_factory=generate_uid)
    series: str = field(default_factory=generate_uid)
    study: str = field(default_factory=generate_uid)


def synthetic_pixels(
    rows: int, columns: int, *, bits_stored: int = 12, frames: int = 1, seed: int = 0
) -> np.ndarray:
    """A smooth gradient plus noise, uint16 within ``bits_stored`` bits.

    Returns:
        ``[rows, columns]`` (or ``[frames, rows, columns]`` when ``frames > 1``) uint16.
    """
    rng = np.random.default_rng(seed)
    top = (1 << bits_stored) - 1
    yy, xx = np.mgrid[0:rows, 0:columns]  # [rows, columns] each
    base = (yy / max(rows - 1, 1) + xx / max(columns - 1, 1)) / 2 * top * 0.8
    noise = rng.integers(0, max(top // 10, 1), size=(frames, rows, columns))
    arr = np.clip(base[None] + noise, 0, top).astype(np.uint16)  # [frames, rows, columns]
    return arr[0] if frames == 1 else arr


def make_dataset(
    *,
    modality: str = "DX",
    rows: int = 32,
    columns: int = 32,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    frames: int = 1,
    pixels: np.ndarray | None = None,
    phi: Phi | None = None,
    uids: UIDs | None = None,
    instance_number: int = 1,
    slice_position: float | None = None,
    burned_in: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
) -> Dataset:
    """An in-memory dataset with a valid file meta and pixel module.

    Args:
        modality: Modality (0008,0060), also picks the SOP class.
        rows: Image rows (ignored when ``pixels`` is given).
        columns: Image columns (ignored when ``pixels`` is given).
        photometric: MONOCHROME1, MONOCHROME2 or RGB (RGB gets 8-bit colour pixels).
        bits_stored: Bits stored for monochrome images.
        frames: Number of frames (>1 writes a multi-frame image).
        pixels: Explicit pixel array (uint8/uint16), overrides the synthetic one.
        phi: Identifying values; ``Phi(patient_id=None)`` omits PatientID.
        uids: Instance/series/study UIDs; ``UIDs(sop_instance=None)`` omits SOPInstanceUID.
        instance_number: InstanceNumber (0020,0013).
        slice_position: z of ImagePositionPatient (MR slices), omitted when None.
        burned_in: BurnedInAnnotation value ("YES"/"NO"), omitted when None.
        transfer_syntax: UID; RLE Lossless is compressed with pydicom's own encoder.
        seed: Seed of the synthetic pixels.

    Returns:
        The dataset, ready for :func:`write_dataset`.
    """
    phi = phi or Phi()
    uids = uids or UIDs()
    elements: dict[str, Any] = {
        "SOPClassUID": SOP_CLASS.get(modality, SecondaryCaptureImageStorage),
        "SOPInstanceUID": uids.sop_instance or generate_uid(),
        "StudyInstanceUID": uids.study,
        "SeriesInstanceUID": uids.series,
        "Modality": modality,
    }
    if phi.patient_id is not None:
        elements["PatientID"] = phi.patient_id
    elements |= {
        "PatientName": phi.patient_name,
        "PatientBirthDate": phi.birth_date,
        "AccessionNumber": phi.accession_number,
        "InstitutionName": phi.institution,
        "ReferringPhysicianName": phi.referring_physician,
        "StudyDate": phi.study_date,
        "InstanceNumber": instance_number,
    }
    if slice_position is not None:
        elements |= {
            "ImagePositionPatient": [0.0, 0.0, float(slice_position)],
            "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            "PixelSpacing": [1.0, 1.0],
            "SliceThickness": 1.0,
        }
    if burned_in is not None:
        elements["BurnedInAnnotation"] = burned_in
    if pixels is None:
        if photometric == "RGB":
            mono = synthetic_pixels(rows, columns, bits_stored=8, frames=frames, seed=seed)
            pixels = np.stack([mono] * 3, axis=-1).astype(np.uint8)  # [..., rows, cols, 3]
        else:
            pixels = synthetic_pixels(
                rows, columns, bits_stored=bits_stored, frames=frames, seed=seed
            )
    bits = 8 if photometric == "RGB" else bits_stored
    ds = dataset_from(elements, pixels, photometric, bits_stored=bits)
    if uids.sop_instance is None:
        del ds.SOPInstanceUID
    ts = UID(transfer_syntax)
    if ts == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    elif ts != ExplicitVRLittleEndian:
        if ts.is_compressed:
            ds.compress(ts)
        else:
            ds.file_meta.TransferSyntaxUID = ts
    return ds


def write_dataset(path: Path, ds: Dataset) -> Path:
    """Write ``ds`` as a Part 10 file (creating parent folders); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(ds))
    return path


def write_dicom(path: Path, **kwargs: Any) -> Path:
    """``make_dataset(**kwargs)`` written to ``path``; see :func:`make_dataset` for options."""
    return write_dataset(path, make_dataset(**kwargs))


def write_truncated(path: Path, keep_fraction: float = TRUNCATE_AT, **kwargs: Any) -> Path:
    """A valid file cut short inside its pixel data (pydicom still parses the header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(truncate(to_bytes(make_dataset(**kwargs)), keep_fraction))
    return path


def write_not_dicom(path: Path, text: str = "this is not a DICOM file\n") -> Path:
    """A plain text file with a DICOM-looking name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_no_pixels(path: Path, **kwargs: Any) -> Path:
    """A valid DICOM file whose pixel data element has been removed."""
    ds = make_dataset(**kwargs)
    del ds.PixelData
    return write_dataset(path, ds)


# --- front end for the synthetic cohort -----------------------------------------------------


@dataclass(frozen=True)
class DicomFile:
    """One file of the synthetic cohort: header fields and stored pixels, or a broken variant.

    Attributes:
        relpath: path under the DICOM folder (never contains a patient id).
        kind: ``"image"`` or one of ``pipeline.synthetic.plan.BROKEN_KINDS``.
        header: DICOM keyword -> value.
        pixels: ``[H, W]`` uint16 as stored (already inverted for MONOCHROME1).
        photometric: ``MONOCHROME2`` or ``MONOCHROME1``.
    """

    relpath: str
    kind: str
    header: dict[str, Any]
    pixels: np.ndarray
    photometric: str = "MONOCHROME2"


def to_dataset(f: DicomFile) -> Dataset:
    """The pydicom dataset of a cohort file (without pixel data for ``no_pixel_data``)."""
    elements = {**_COHORT_ELEMENTS, **f.header}
    if elements["Modality"] in ("CR", "DX"):
        elements["ViewPosition"] = "PA"
    elements["WindowCenter"], elements["WindowWidth"] = WINDOW
    ds = dataset_from(elements, f.pixels, f.photometric, bits_stored=12)
    if f.kind == "no_pixel_data":
        del ds.PixelData
    return ds


def encode(f: DicomFile) -> bytes:
    """The bytes of a cohort file: a Part 10 DICOM file, or its broken variant."""
    if f.kind == "not_dicom":
        return _NOT_DICOM
    data = to_bytes(to_dataset(f))
    return truncate(data) if f.kind == "truncated" else data


def _write_chunk(dicom_dir: str, files: list[DicomFile]) -> int:
    for f in files:
        path = Path(dicom_dir) / f.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(f))
    return len(files)


def write_files(dicom_dir: Path, files: list[DicomFile], workers: int) -> None:
    """Write ``files`` under ``dicom_dir``, in ``workers`` processes for larger cohorts.

    The bytes do not depend on ``workers``.
    """
    dicom_dir.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(files) < 200:
        _write_chunk(str(dicom_dir), files)
        return
    chunks = [files[i :: workers * 4] for i in range(workers * 4)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        written = sum(pool.map(_write_chunk, [str(dicom_dir)] * len(chunks), chunks))
    if written != len(files):  # pragma: no cover - a worker failure raises before this
        raise RuntimeError(f"wrote {written} of {len(files)} synthetic files")
