"""Ingest from a real Orthanc over DIMSE (C-FIND + C-GET): the folder's catalogue, incremental
re-runs, and a clear error for an unknown calling AE title or an unreachable archive."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from db.errors import UserError
from pipeline.ingest.scan import ingest
from pipeline.pacs.dimse import DimseSource
from pipeline.pacs.source import RemoteInstance
from tests.pipeline.pacs.conftest import CALLING_AET, Orthanc, Uploaded, free_port
from tests.pipeline.pacs.test_dicomweb import KEY, _cfg, _tables, _without_file_key

# C-GET delivers the data set with a file meta the receiver writes: same pixels and header,
# other bytes, so the content hash (and the cache key made from it) differ from the file's.
_BYTES = ("content_sha256", "cache_key")


def test_dimse_pull_gives_the_folder_catalogue_and_reruns_download_nothing(
    orthanc: Orthanc, uploaded: Uploaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls: Counter = Counter()
    real = DimseSource.retrieve

    def retrieve(self, inst):
        calls["retrieve"] += 1
        return real(self, inst)

    monkeypatch.setattr(DimseSource, "retrieve", retrieve)
    remote = _cfg(orthanc.dimse_source, tmp_path, "dimse.db", calling_aet=CALLING_AET)
    first = ingest(remote, key=KEY)
    assert first.found == uploaded.stored == calls["retrieve"]
    local = _cfg(str(uploaded.folder), tmp_path / "local", "local.db")
    ingest(local, key=KEY)
    (r_cat, r_q), (f_cat, f_q) = _tables(remote), _tables(local)
    strip = [{k: v for k, v in r.items() if k not in _BYTES} for r in _without_file_key(r_cat)]
    want = [{k: v for k, v in r.items() if k not in _BYTES} for r in _without_file_key(f_cat)]
    assert strip == want and len(strip) > 0
    assert Counter(q["reason"] for q in r_q) == Counter(q["reason"] for q in f_q)

    calls.clear()
    again = ingest(remote, key=KEY)
    assert calls["retrieve"] == 0 and again.unchanged == again.found == first.found


def test_an_unknown_calling_aet_or_an_unreachable_archive_fails_before_any_work(
    orthanc: Orthanc, tmp_path: Path
):
    with pytest.raises(UserError, match="calling AE title NOBODY") as err:
        ingest(_cfg(orthanc.dimse_source, tmp_path, calling_aet="NOBODY"), key=KEY)
    assert "DicomModalities" in err.value.fix
    nobody = f"dimse://ORTHANC@127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match="cannot be reached") as err:
        ingest(_cfg(nobody, tmp_path, calling_aet=CALLING_AET), key=KEY)
    assert err.value.transient
    assert not (tmp_path / "results.db").exists()


def test_an_instance_c_get_does_not_deliver_is_quarantined(
    orthanc: Orthanc, uploaded: Uploaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real = DimseSource.search
    ghost = RemoteInstance("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2",
                           "1.2.826.0.1.3680043.8.498.3", "DX")  # fmt: skip
    monkeypatch.setattr(DimseSource, "search", lambda self: sorted(real(self) + [ghost]))
    res = ingest(_cfg(orthanc.dimse_source, tmp_path, calling_aet=CALLING_AET), key=KEY)
    assert res.quarantined.get("retrieve_error") == 1
    assert res.catalogued + res.n_quarantined == uploaded.stored + 1
