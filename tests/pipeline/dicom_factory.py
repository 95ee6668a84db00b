"""Write small, valid DICOM Part 10 files for tests and benchmarks (pydicom 3).

General on purpose: any modality, photometric interpretation, size, bit depth, frame count,
transfer syntax and PHI values, so ingestion, preprocessing and the demo cohort can all reuse
it. Broken files (truncated, not DICOM, no pixel data) have their own helpers.

Example::

    write_dicom(tmp_path / "a.dcm", patient_id="P1", modality="DX", rows=64, columns=64)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import Dataset, FileMetaDataset, dcmwrite
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

_SOP_CLASS = {  # storage SOP classes by modality (Secondary Capture for the rest)
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


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
    sop_class = _SOP_CLASS.get(modality, _SECONDARY_CAPTURE)
    sop_instance = uids.sop_instance or generate_uid()

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = uids.series
    ds.Modality = modality
    if phi.patient_id is not None:
        ds.PatientID = phi.patient_id
    ds.PatientName = phi.patient_name
    ds.PatientBirthDate = phi.birth_date
    ds.AccessionNumber = phi.accession_number
    ds.InstitutionName = phi.institution
    ds.ReferringPhysicianName = phi.referring_physician
    ds.StudyDate = phi.study_date
    ds.InstanceNumber = instance_number
    if slice_position is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(slice_position)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 1.0
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in

    if pixels is None:
        if photometric == "RGB":
            mono = synthetic_pixels(rows, columns, bits_stored=8, frames=frames, seed=seed)
            pixels = np.stack([mono] * 3, axis=-1).astype(np.uint8)  # [..., rows, cols, 3]
        else:
            pixels = synthetic_pixels(
                rows, columns, bits_stored=bits_stored, frames=frames, seed=seed
            )
    ds.set_pixel_data(
        pixels,
        photometric,
        bits_stored=8 if photometric == "RGB" else bits_stored,
        generate_instance_uid=False,  # keep the SOPInstanceUID chosen above
    )
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
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_dicom(path: Path, **kwargs) -> Path:
    """``make_dataset(**kwargs)`` written to ``path``; see :func:`make_dataset` for options."""
    return write_dataset(path, make_dataset(**kwargs))


def write_truncated(path: Path, keep_fraction: float = 0.6, **kwargs) -> Path:
    """A valid file cut short inside its pixel data (pydicom still parses the header)."""
    write_dicom(path, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def write_not_dicom(path: Path, text: str = "this is not a DICOM file\n") -> Path:
    """A plain text file with a DICOM-looking name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_no_pixels(path: Path, **kwargs) -> Path:
    """A valid DICOM file whose pixel data element has been removed."""
    ds = make_dataset(**kwargs)
    del ds.PixelData
    return write_dataset(path, ds)
