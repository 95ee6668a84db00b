"""Validate one DICOM file: accept it (with PHI-free metadata) or quarantine it with a reason.

A file is accepted only after its pixels have actually been decoded: pydicom reads many
truncated files without complaint and returns a partial dataset (FIELD-NOTES.md). Each check
maps to one reason code (:class:`Reason`); the detail sentence never quotes a value from the
file other than standard codes (modality, photometric interpretation, transfer syntax name).

This runs inside the ingest worker processes; nothing here logs raw values or raises on a bad
file. Identifying values read from the header are hashed at once (:mod:`pipeline.pseudonyms`)
and registered with the PHI log filter of this process (:mod:`pipeline.dicom.deid`).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pipeline import pseudonyms
from pipeline.dicom import deid

logger = logging.getLogger(__name__)

ACCEPTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")


class Reason(StrEnum):
    """Quarantine reason codes (``cmcl_quarantine.reason``)."""

    NOT_DICOM = "not_dicom"
    TRUNCATED = "truncated"
    NO_PIXEL_DATA = "no_pixel_data"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    UNSUPPORTED_MODALITY = "unsupported_modality"
    UNSUPPORTED_PHOTOMETRIC = "unsupported_photometric"
    DUPLICATE_INSTANCE = "duplicate_instance"
    MISSING_PATIENT_ID = "missing_patient_id"
    MISSING_SOP_INSTANCE_UID = "missing_sop_instance_uid"
    BURNED_IN_ANNOTATION = "burned_in_annotation"
    DECODE_ERROR = "decode_error"
    INCONSISTENT_SERIES = "inconsistent_series"  # MR slices that do not form one volume
    UNREADABLE = "unreadable"
    RETRIEVE_ERROR = "retrieve_error"  # a PACS listed the instance but did not deliver it


@dataclass(frozen=True)
class InspectSettings:
    """What :func:`inspect_file` needs besides the file.

    Attributes:
        key: The pseudonymisation key (``CMCL_PSEUDONYM_KEY``).
        modalities: Accepted Modality values; others are ``unsupported_modality``.
        reject_burned_in: Quarantine files with BurnedInAnnotation == YES.
    """

    key: bytes = field(repr=False)
    modalities: tuple[str, ...] = ("CR", "DX", "MR")
    reject_burned_in: bool = True


@dataclass(frozen=True)
class Accepted:
    """A decodable image: pseudonymous keys and technical metadata, no identifying values.

    ``dataset`` is the read dataset and ``pixels`` its decoded pixel data (as
    ``dataset.pixel_array`` would return it), for the preprocessing in the same process, which
    so never decodes twice; :meth:`light` drops both before crossing processes.
    ``instance_number`` and ``slice_position`` order the slices of an MR series.
    """

    file_key: str
    content_sha256: str
    image_key: str
    patient_key: str
    study_key: str | None
    series_key: str | None
    modality: str
    photometric: str
    rows: int
    columns: int
    n_frames: int
    transfer_syntax: str
    instance_number: int | None = None
    slice_position: float | None = None
    pydicom_warnings: int = 0
    dataset: Dataset | None = field(default=None, repr=False, compare=False)
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)

    def light(self) -> Accepted:
        """This outcome without the dataset and pixels (small, picklable)."""
        return replace(self, dataset=None, pixels=None)


@dataclass(frozen=True)
class Quarantined:
    """A rejected file: a reason code and a PHI-free detail."""

    file_key: str
    content_sha256: str | None
    reason: Reason
    detail: str


FileOutcome = Accepted | Quarantined


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of a file's content (the catalog's change detector and cache key)."""
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: Path, fkey: str) -> bytes | Quarantined:
    """The file's bytes, or ``Quarantined(unreadable)`` when the OS refuses to read it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        return Quarantined(fkey, None, Reason.UNREADABLE, deid.safe_detail(exc))


def inspect_file(path: Path, relpath: str, settings: InspectSettings) -> FileOutcome:
    """Read, validate and decode one file.

    Args:
        path: The file.
        relpath: Its path relative to ``dicom.source`` ('/'-separated); only its HMAC is kept.
        settings: Key, modality filter, burned-in policy.

    Returns:
        :class:`Accepted` (dataset included) or :class:`Quarantined`. Never raises for a bad
        file; ``duplicate_instance`` is decided by the caller, which sees all files.
    """
    fkey = pseudonyms.file_key(settings.key, relpath)
    data = read_bytes(path, fkey)
    if isinstance(data, Quarantined):
        return data
    return inspect_bytes(data, fkey, settings)


def _read_dataset(data: bytes) -> Dataset:
    """Parse a Part 10 file; fall back to a forced read for files without preamble/meta."""
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        # a forced read "succeeds" on almost anything: require the elements of an image
        if "SOPClassUID" not in ds and "PixelData" not in ds:
            raise
        if "TransferSyntaxUID" not in ds.file_meta:  # infer it from how the data was read
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian
                if implicit
                else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            )
        return ds


def _expected_native_bytes(ds: Dataset) -> int:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.BitsAllocated)
    n = int(ds.Rows) * int(ds.Columns) * frames * samples
    return (n + 7) // 8 if bits == 1 else n * (bits // 8)


def inspect_bytes(
    data: bytes, fkey: str, settings: InspectSettings, digest: str | None = None
) -> FileOutcome:
    """:func:`inspect_file` on content already read (``fkey`` = the file's key; ``digest`` =
    its SHA-256 when the caller has computed it)."""
    digest = digest or sha256_bytes(data)

    def quarantine(reason: Reason, detail: str) -> Quarantined:
        return Quarantined(fkey, digest, reason, detail)

    with deid.pydicom_guard() as said:
        try:
            ds = _read_dataset(data)
        except InvalidDicomError:
            return quarantine(Reason.NOT_DICOM, "no DICOM preamble, file meta or image elements")
        except (EOFError, OSError) as exc:
            return quarantine(Reason.TRUNCATED, deid.safe_detail(exc))
        except Exception as exc:  # noqa: BLE001 - any parser failure quarantines the file
            return quarantine(Reason.NOT_DICOM, deid.safe_detail(exc))
        deid.register_dataset_phi(ds)
        outcome = _validate(ds, digest, fkey, settings, quarantine)
    if said.warnings or said.log_records:
        logger.debug(
            "file %s: pydicom reported %d warning(s) and %d log record(s) (%s); not shown "
            "because they may quote element values",
            fkey[:12],
            said.warnings,
            said.log_records,
            ", ".join(sorted(said.categories)) or "-",
        )
    if isinstance(outcome, Accepted):
        outcome = replace(outcome, pydicom_warnings=said.warnings + said.log_records)
    return outcome


def _validate(ds: Dataset, digest: str, fkey: str, settings: InspectSettings, quarantine):
    """The checks after parsing, in order; the first failing one names the reason."""
    if "PixelData" not in ds:
        other = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        return quarantine(
            Reason.NO_PIXEL_DATA,
            "float pixel data is not supported" if other else "the file has no pixel data",
        )
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality not in settings.modalities:
        shown = modality if modality.isalnum() and len(modality) <= 4 else "(missing)"
        return quarantine(
            Reason.UNSUPPORTED_MODALITY,
            f"modality {shown} is not in dicom.modalities {list(settings.modalities)}",
        )
    sop = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not sop:
        return quarantine(Reason.MISSING_SOP_INSTANCE_UID, "SOPInstanceUID is missing or empty")
    pid = str(ds.get("PatientID", "") or "").strip()
    if not pid:
        return quarantine(Reason.MISSING_PATIENT_ID, "PatientID is missing or empty")
    if settings.reject_burned_in and str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return quarantine(
            Reason.BURNED_IN_ANNOTATION,
            "BurnedInAnnotation is YES (text in the pixels may identify the patient)",
        )
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric not in ACCEPTED_PHOTOMETRIC:
        shown = photometric if photometric.replace("_", "").isalnum() else "(invalid)"
        return quarantine(
            Reason.UNSUPPORTED_PHOTOMETRIC,
            f"photometric interpretation {shown or '(missing)'} is not one of "
            f"{list(ACCEPTED_PHOTOMETRIC)} (colour images are not chest radiographs/MR)",
        )
    tsyntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    ts_name = tsyntax.name if tsyntax.is_transfer_syntax else "(unknown)"
    if not _decoder_available(tsyntax):
        return quarantine(
            Reason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"no installed decoder for transfer syntax {ts_name}",
        )
    try:
        if not tsyntax.is_compressed and len(ds.PixelData) < _expected_native_bytes(ds):
            return quarantine(Reason.TRUNCATED, "the pixel data is shorter than its header says")
        # pydicom's decoder, as ``ds.pixel_array`` calls it, without that property's caching:
        # its check of the cache on every later access costs a third of the decode
        arr = pixel_array(ds)
    except Exception as exc:  # noqa: BLE001 - every decoder failure quarantines the file
        return quarantine(Reason.DECODE_ERROR, deid.safe_detail(exc))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if arr.size == 0 or arr.ndim not in (2, 3):
        return quarantine(Reason.DECODE_ERROR, f"decoded pixel array has {arr.ndim} dimensions")
    key = settings.key
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    series = str(ds.get("SeriesInstanceUID", "") or "").strip()
    position = ds.get("ImagePositionPatient")
    return Accepted(
        file_key=fkey,
        content_sha256=digest,
        image_key=pseudonyms.image_key(key, sop),
        patient_key=pseudonyms.patient_key(key, pid),
        study_key=pseudonyms.study_key(key, study) if study else None,
        series_key=pseudonyms.series_key(key, series) if series else None,
        modality=modality,
        photometric=photometric,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        n_frames=n_frames,
        transfer_syntax=str(tsyntax),
        instance_number=_as_int(ds.get("InstanceNumber")),
        slice_position=_slice_position(position),
        dataset=ds,
        pixels=arr,
    )


def _decoder_available(tsyntax: UID) -> bool:
    if not tsyntax.is_transfer_syntax:
        return False
    try:
        return bool(get_decoder(tsyntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def _as_int(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _slice_position(position: object) -> float | None:
    try:
        return float(position[2]) if position is not None and len(position) == 3 else None
    except (TypeError, ValueError, IndexError):
        return None
