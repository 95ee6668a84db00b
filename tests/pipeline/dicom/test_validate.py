"""Per-file validation: each kind of bad file gets its reason code; good files are accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from pipeline import pseudonyms
from pipeline.dicom.validate import Accepted, InspectSettings, Quarantined, Reason, inspect_file
from pipeline.synthetic.writer import (
    Phi,
    UIDs,
    make_dataset,
    write_dataset,
    write_dicom,
    write_no_pixels,
    write_not_dicom,
    write_truncated,
)

KEY = bytes.fromhex("cd" * 32)
SETTINGS = InspectSettings(key=KEY)


def _inspect(path: Path, settings: InspectSettings = SETTINGS):
    return inspect_file(path, path.name, settings)


def _reason(path: Path, settings: InspectSettings = SETTINGS) -> str:
    out = _inspect(path, settings)
    assert isinstance(out, Quarantined), out
    assert out.file_key == pseudonyms.file_key(KEY, path.name)
    return out.reason.value


def test_accepted_file_carries_pseudonyms_and_decoded_pixels(tmp_path):
    uids = UIDs()
    p = write_dicom(
        tmp_path / "ok.dcm", modality="DX", rows=40, columns=30, phi=Phi(patient_id="P-1"),
        uids=uids,
    )  # fmt: skip
    out = _inspect(p)
    assert isinstance(out, Accepted)
    assert out.patient_key == pseudonyms.patient_key(KEY, "P-1")
    assert out.image_key == pseudonyms.image_key(KEY, uids.sop_instance)
    assert out.series_key == pseudonyms.series_key(KEY, uids.series)
    assert (out.rows, out.columns, out.n_frames) == (40, 30, 1)
    assert out.photometric == "MONOCHROME2" and out.modality == "DX"
    assert out.dataset is not None and out.dataset.pixel_array.shape == (40, 30)
    np.testing.assert_array_equal(out.pixels, out.dataset.pixel_array)  # decoded once, kept
    light = out.light()
    assert light.dataset is None and light.pixels is None
    assert light == out  # the dataset and pixels are not part of equality


@pytest.mark.parametrize("ts", [RLELossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_decode(tmp_path, ts):
    out = _inspect(write_dicom(tmp_path / "c.dcm", transfer_syntax=ts))
    assert isinstance(out, Accepted) and out.transfer_syntax == ts


def test_each_bad_file_gets_its_reason(tmp_path):
    assert _reason(write_not_dicom(tmp_path / "notes.dcm")) == "not_dicom"
    assert _reason(write_truncated(tmp_path / "cut.dcm", rows=64, columns=64)) == "truncated"
    assert _reason(write_no_pixels(tmp_path / "nopix.dcm")) == "no_pixel_data"
    assert _reason(write_dicom(tmp_path / "ct.dcm", modality="CT")) == "unsupported_modality"
    assert _reason(write_dicom(tmp_path / "rgb.dcm", photometric="RGB")) == (
        "unsupported_photometric"
    )
    assert _reason(write_dicom(tmp_path / "nopid.dcm", phi=Phi(patient_id=None))) == (
        "missing_patient_id"
    )
    assert _reason(write_dicom(tmp_path / "blank.dcm", phi=Phi(patient_id="  "))) == (
        "missing_patient_id"
    )
    assert _reason(write_dicom(tmp_path / "nosop.dcm", uids=UIDs(sop_instance=None))) == (
        "missing_sop_instance_uid"
    )
    assert _reason(write_dicom(tmp_path / "burn.dcm", burned_in="YES")) == "burned_in_annotation"


def test_burned_in_policy_and_modality_filter_follow_settings(tmp_path):
    burned = write_dicom(tmp_path / "burn.dcm", burned_in="YES")
    assert isinstance(_inspect(burned, InspectSettings(KEY, reject_burned_in=False)), Accepted)
    ct = write_dicom(tmp_path / "ct.dcm", modality="CT")
    assert isinstance(_inspect(ct, InspectSettings(KEY, modalities=("CT",))), Accepted)


def test_unsupported_transfer_syntax(tmp_path):
    ds = make_dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder exists
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 16])
    out = _inspect(write_dataset(tmp_path / "mpeg.dcm", ds))
    assert isinstance(out, Quarantined) and out.reason is Reason.UNSUPPORTED_TRANSFER_SYNTAX


def test_corrupt_compressed_stream_is_decode_error(tmp_path):
    ds = make_dataset(bits_stored=8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit  # a decoder exists, the data is junk
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8" + b"\x13" * 50])
    out = _inspect(write_dataset(tmp_path / "bad.dcm", ds))
    assert isinstance(out, Quarantined) and out.reason is Reason.DECODE_ERROR


def test_unreadable_file(tmp_path, monkeypatch):
    p = write_dicom(tmp_path / "locked.dcm")
    real = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self == p:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)  # root ignores chmod, so simulate it
    out = _inspect(p)
    assert isinstance(out, Quarantined) and out.reason is Reason.UNREADABLE
    assert out.content_sha256 is None and "locked" not in out.detail


def test_details_name_no_patient(tmp_path):
    phi = Phi(patient_id="CANARY-ID-31337", patient_name="CANARY^BIRD", institution="CANARY HQ")
    paths = [
        write_truncated(tmp_path / "t.dcm", phi=phi, rows=64, columns=64),
        write_dicom(tmp_path / "m.dcm", phi=phi, modality="CT"),
        write_dicom(tmp_path / "b.dcm", phi=phi, burned_in="YES"),
        write_dicom(tmp_path / "r.dcm", phi=phi, photometric="RGB"),
    ]
    for p in paths:
        out = _inspect(p)
        assert isinstance(out, Quarantined)
        assert "CANARY" not in out.detail.upper() and "31337" not in out.detail
