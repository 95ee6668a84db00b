"""De-identification at the reader: PHI-free exception details and the pydicom guard."""

from __future__ import annotations

import logging
import warnings

from pipeline.dicom import deid


def test_safe_detail_never_quotes_the_message():
    detail = deid.safe_detail(ValueError("PatientName 'DOE^JANE' is invalid"))
    assert detail.startswith("ValueError: ")
    assert "DOE" not in detail
    assert deid.safe_detail(PermissionError("/data/DOE_JANE.dcm")).startswith("PermissionError")
    assert "DOE" not in deid.safe_detail(PermissionError("/data/DOE_JANE.dcm"))


def test_pydicom_guard_swallows_text_and_counts(caplog):
    with caplog.at_level(logging.DEBUG), deid.pydicom_guard() as said:
        warnings.warn("Invalid value 'DOE^JANE' for VR PN", UserWarning, stacklevel=1)
        logging.getLogger("pydicom").warning("element value SECRET-ID-99 looks wrong")
    assert said.warnings == 1 and said.log_records == 1
    assert said.categories == {"UserWarning"}
    assert "DOE" not in caplog.text and "SECRET-ID-99" not in caplog.text
