"""The one DICOM writer: both front ends build through dataset_from and write valid Part 10."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError

from pipeline.synthetic.writer import (
    WINDOW,
    DicomFile,
    Phi,
    UIDs,
    encode,
    make_dataset,
    synthetic_pixels,
    write_dicom,
    write_no_pixels,
    write_truncated,
)


def test_make_dataset_writes_what_it_is_told(tmp_path):
    uids = UIDs(sop_instance="1.2.3.4.5.6", series="1.2.3.4.5.7", study="1.2.3.4.5.8")
    path = write_dicom(
        tmp_path / "a" / "x.dcm", uids=uids, phi=Phi(patient_id="P-9"), modality="MR",
        photometric="MONOCHROME1", rows=20, columns=30, slice_position=2.5, burned_in="NO",
    )  # fmt: skip
    ds = pydicom.dcmread(path)
    assert (ds.PatientID, ds.SOPInstanceUID, ds.Modality) == ("P-9", "1.2.3.4.5.6", "MR")
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5.6"
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert ds.pixel_array.shape == (20, 30) and ds.PhotometricInterpretation == "MONOCHROME1"
    assert float(ds.ImagePositionPatient[2]) == 2.5 and ds.BurnedInAnnotation == "NO"
    no_id = make_dataset(phi=Phi(patient_id=None), uids=UIDs(sop_instance=None))
    assert "PatientID" not in no_id and "SOPInstanceUID" not in no_id


def test_broken_variants(tmp_path):
    cut = write_truncated(tmp_path / "cut.dcm", rows=64, columns=64)
    with pytest.raises(Exception):  # noqa: B017 - pydicom raises one of several errors
        pydicom.dcmread(cut).pixel_array  # noqa: B018
    assert "PixelData" not in pydicom.dcmread(write_no_pixels(tmp_path / "nopix.dcm"))


def test_cohort_files_use_the_same_writer():
    header = make_dataset(modality="CR")  # borrow valid header values
    keys = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality")
    pixels = synthetic_pixels(16, 16)
    f = DicomFile("x.dcm", "image", {k: header.get(k) for k in keys}, pixels, "MONOCHROME2")
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(encode(f)))
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == WINDOW
    assert ds.ViewPosition == "PA" and ds.InstitutionName == "CMCL Synthetic Hospital"
    np.testing.assert_array_equal(ds.pixel_array, pixels)
    broken = DicomFile("y.dcm", "not_dicom", f.header, pixels)
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(pydicom.filebase.DicomBytesIO(encode(broken)))
