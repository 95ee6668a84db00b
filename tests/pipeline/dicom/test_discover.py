"""Discovery: every file under the source in a fixed order; unlistable folders are counted."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.dicom.discover import discover


def test_discovery_counts_folders_it_cannot_list(tmp_path, monkeypatch):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "x.dcm").write_bytes(b"x")
    (tmp_path / "locked").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "y.dcm").write_bytes(b"y")
    real = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError("denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover(tmp_path)
    assert [rel for _, rel in found.files] == ["ok/x.dcm"]
    assert found.unlisted == 1 and not found.complete
