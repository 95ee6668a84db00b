"""The DICOM writer of the synthetic cohort (``pipeline.synthetic``): headers, pixels, files.

Every file is a pydicom ``Dataset`` written as a Part 10 file
(``set_pixel_data(..., bits_stored=12)``, ``dcmwrite(..., enforce_file_format=True)``). Header
values look like PHI but are plainly synthetic (``SYNTHETIC^PATIENT^0001``, PatientID ``SYN`` +
8 digits, "CMCL Synthetic Hospital"); UIDs are new, under pydicom's UID root, derived from the
seed so that a seed reproduces every byte. Broken variants (truncated, not DICOM, no pixel data)
are made from the same datasets, so they differ from a good file only in what makes them bad.
"""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

MAX_STORED = 4095  # 12-bit: BitsStored 12, HighBit 11
WINDOW = (2048, 4096)  # VOI center/width mapping [0, 4095] linearly onto [0, 1]
BROKEN_KINDS = ("truncated", "not_dicom", "unsupported_modality", "no_pixel_data")
BROKEN_WHY = {
    "truncated": "a valid CR file cut at 60% of its length, inside the pixel data",
    "not_dicom": "a text file with a .dcm name",
    "unsupported_modality": "a valid image with Modality OT (secondary capture)",
    "no_pixel_data": "a CR header without the Pixel Data element",
}
_SOP_CLASS = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "OT": SecondaryCaptureImageStorage,
    "MR": MRImageStorage,
}
_NOT_DICOM = b"This is not a DICOM file: a deliberately broken file of a CMCL synthetic cohort.\n"


@dataclass(frozen=True)
class DicomFile:
    """One file to write: header fields and stored pixels, or a broken variant.

    Attributes:
        relpath: path under the DICOM folder (never contains a patient id).
        kind: ``"image"`` or one of :data:`BROKEN_KINDS`.
        header: DICOM keyword -> value.
        pixels: ``[H, W]`` uint16 as stored (already inverted for MONOCHROME1).
        photometric: ``MONOCHROME2`` or ``MONOCHROME1``.
    """

    relpath: str
    kind: str
    header: dict[str, Any]
    pixels: np.ndarray
    photometric: str = "MONOCHROME2"


class UidSource:
    """Seed-derived, reproducible UIDs (``generate_uid`` with an entropy source).

    The UIDs are new (never a real instance's) and unique per seed and role; the 2.25 UUID form
    cannot be used because ``generate_uid`` ignores the entropy sources for it.
    """

    def __init__(self, seed: int):
        self.seed = str(seed)

    def uid(self, *parts: object) -> str:
        """A UID determined by the seed and ``parts``."""
        entropy = "|".join(["cmcl-synthetic", self.seed, *map(str, parts)])
        return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=[entropy])


def patient_header(
    rng: np.random.Generator, i: int, patient_id: str, uids: UidSource
) -> dict[str, Any]:
    """Synthetic patient and study identity of simulated patient ``i``."""
    born = f"{int(rng.integers(1940, 2001))}{int(rng.integers(1, 13)):02d}"
    studied = f"{int(rng.integers(2020, 2024))}{int(rng.integers(1, 13)):02d}"
    return {
        "PatientName": f"SYNTHETIC^PATIENT^{i + 1:04d}",
        "PatientID": patient_id,
        "PatientBirthDate": f"{born}{int(rng.integers(1, 29)):02d}",
        "PatientSex": str(rng.choice(["F", "M", "O"])),
        "StudyDate": f"{studied}{int(rng.integers(1, 29)):02d}",
        "AccessionNumber": f"SYNACC{int(rng.integers(10**7, 10**8))}",
        "StudyInstanceUID": uids.uid("study", i),
    }


def instance_header(uids: UidSource, tag: str, modality: str, new_study: bool) -> dict[str, Any]:
    """Modality, SOP class and fresh instance/series UIDs (and a study UID for a new study)."""
    header: dict[str, Any] = {
        "Modality": modality,
        "SOPClassUID": _SOP_CLASS[modality],
        "SOPInstanceUID": uids.uid("sop", tag),
        "SeriesInstanceUID": uids.uid("series", tag),
    }
    if new_study:
        header["StudyInstanceUID"] = uids.uid("study", tag)
    return header


def mr_series(
    rng: np.random.Generator,
    uids: UidSource,
    s: int,
    patient: dict[str, Any],
    stored: np.ndarray,
    n_slices: int,
) -> list[DicomFile]:
    """An MR series of ``n_slices`` whose two central slices (n//2 - 1 and n//2) equal the image
    and whose other slices fade (x 0.8 per slice), so both the middle slice and the maximum
    intensity projection give back the image."""
    series_uid, frame_uid = uids.uid("mr-series", s), uids.uid("mr-frame", s)
    mid = n_slices // 2
    names = rng.permutation(n_slices)  # file names do not reveal the slice order
    out = []
    for k in range(n_slices):
        dist = 0 if k in (mid - 1, mid) else min(abs(k - mid), abs(k - mid + 1))
        arr = np.rint(stored * 0.8**dist).astype(np.uint16)  # [H, W]
        hdr = {**patient, **instance_header(uids, f"mr-{s}-{k}", "MR", new_study=False)}
        hdr.update(
            SeriesInstanceUID=series_uid,
            FrameOfReferenceUID=frame_uid,
            InstanceNumber=k + 1,
            ImagePositionPatient=[0.0, 0.0, 4.0 * k],
            ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            PixelSpacing=[1.0, 1.0],
            SliceThickness=4.0,
        )
        rel = f"mr_series_{s:03d}/slice_{int(names[k]):03d}.dcm"
        out.append(DicomFile(rel, "image", hdr, arr))
    return out


def to_dataset(f: DicomFile) -> Dataset:
    """The pydicom dataset of a file (without pixel data for ``no_pixel_data``)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstitutionName = "CMCL Synthetic Hospital"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.Manufacturer = "CMCL synthetic generator"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    for k, v in f.header.items():
        setattr(ds, k, v)
    if ds.Modality in ("CR", "DX"):
        ds.ViewPosition = "PA"
    ds.WindowCenter, ds.WindowWidth = WINDOW
    ds.set_pixel_data(f.pixels, f.photometric, bits_stored=12, generate_instance_uid=False)
    if f.kind == "no_pixel_data":
        del ds.PixelData
    return ds


def encode(f: DicomFile) -> bytes:
    """The bytes of a file: a Part 10 DICOM file, or its broken variant."""
    if f.kind == "not_dicom":
        return _NOT_DICOM
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, to_dataset(f), enforce_file_format=True)
    data = buf.getvalue()
    return data[: int(len(data) * 0.6)] if f.kind == "truncated" else data


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
