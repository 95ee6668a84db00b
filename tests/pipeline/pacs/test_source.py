"""PACS sources in the config and their clients, without a PACS: the source's forms, secrets
only from the environment, keys that belong to another kind of source, the spool and batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.errors import UserError
from pipeline.config import config_from_dict, is_remote, load_config
from pipeline.errors import ConfigError
from pipeline.ingest.pull import Listed, batches
from pipeline.pacs import dicomweb
from pipeline.pacs.connect import open_source
from pipeline.pacs.source import RemoteInstance

CLINICAL = {"url": "sqlite:///c.db", "query": "SELECT 1", "id_column": "mrn"}
WEB = "https://cmcl:${PACS_PASSWORD}@pacs.example:8042/dicom-web"


def _cfg(**dicom):
    return config_from_dict({"dicom": dicom, "clinical": CLINICAL})


def test_the_three_forms_of_dicom_source(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        f"dicom: {{source: '{WEB}', query: {{StudyDate: 20240101-20241231}}}}\n"
        "clinical: {url: 'sqlite:///c.db', query: SELECT 1, id_column: mrn}\n"
    )
    web = load_config(p).dicom
    assert web.source == WEB and is_remote(web.source)  # a URL is not resolved as a path
    assert web.query == {"StudyDate": "20240101-20241231"}
    dimse = _cfg(source="dimse://ORTHANC@pacs:4242", calling_aet="CMCL_RESEARCH").dicom
    assert is_remote(dimse.source) and dimse.calling_aet == "CMCL_RESEARCH"
    folder = _cfg(source="images").dicom
    assert folder.source == Path("images") and not is_remote(folder.source)


@pytest.mark.parametrize(
    ("dicom", "says"),
    [
        ({"source": "https://cmcl:hunter2@pacs/dicom-web"}, "dicom.source contains a literal"),
        ({"source": "ftp://pacs/x"}, "must be a folder, an http\\(s\\)://"),
        ({"source": "images", "query": {"ModalitiesInStudy": "DX"}}, "dicom.query is read only"),
        ({"source": "dimse://A@h:1", "token_env": "T"}, "are for a DICOMweb source"),
        ({"source": "dimse://A@h:1", "calling_aet": "A" * 17}, "1-16 printable"),
    ],
)
def test_a_wrong_pacs_setting_names_the_key_and_the_fix(dicom: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        _cfg(**dicom)
    assert "hunter2" not in str(err.value)


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("PACS_PASSWORD", raising=False)
    with pytest.raises(UserError, match=r"refers to \$\{PACS_PASSWORD\}"):
        open_source(_cfg(source=WEB).dicom)
    monkeypatch.setenv("PACS_PASSWORD", "pw")
    monkeypatch.delenv("PACS_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="dicom.token_env names PACS_TOKEN"):
        open_source(_cfg(source=WEB, token_env="PACS_TOKEN").dicom)
    monkeypatch.setenv("PACS_TOKEN", "tok")
    web = open_source(_cfg(source=WEB, token_env="PACS_TOKEN").dicom)
    assert web.session.auth == ("cmcl", "pw")
    assert web.session.headers["Authorization"] == "Bearer tok"
    assert web.session.verify is True  # TLS verified by default
    assert web.client.base_url == "https://pacs.example:8042/dicom-web"  # no userinfo in it
    with pytest.raises(ConfigError, match="dicom.ca_bundle .* is not a file"):
        open_source(_cfg(source=WEB, ca_bundle=str(tmp_path / "none.pem")).dicom)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert open_source(_cfg(source=WEB, ca_bundle=str(ca)).dicom).session.verify == str(ca)
    with pytest.raises(ConfigError, match="not dimse://AET@host:port"):
        open_source(_cfg(source="dimse://pacs:4242").dicom)
    with pytest.raises(ConfigError, match="NotAKeyword"):
        open_source(_cfg(source="dimse://A@pacs:4242", query={"NotAKeyword": "x"}).dicom)


def test_a_remote_instance_never_shows_its_uids() -> None:
    inst = RemoteInstance("1.2.3.4.5", "1.2.3.4.6", "1.2.3.4.7", "DX")
    assert "1.2.3" not in repr(inst) and "1.2.3" not in str(inst)


def test_batches_keep_a_series_whole() -> None:
    def series(n: int, tag: str) -> list[Listed]:
        return [Listed(RemoteInstance("s", tag, f"{tag}.{i}"), f"{tag}{i}") for i in range(n)]

    got = list(batches([series(3, "a"), series(5, "b"), series(2, "c"), series(9, "d")], size=6))
    assert [[x.inst.series_uid for x in b] for b in got] == [
        ["a"] * 3, ["b"] * 5, ["c"] * 2, ["d"] * 9]  # fmt: skip


def test_qido_paging_stops_on_a_short_page_and_refuses_a_server_that_ignores_offset(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("PACS_PASSWORD", "pw")
    web = open_source(_cfg(source=WEB).dicom)
    monkeypatch.setattr(dicomweb, "PAGE", 3)
    rows = [{"00080018": {"Value": [f"1.2.3.{i}"]}} for i in range(7)]
    paged = web._all(lambda limit, offset: rows[offset : offset + limit], "00080018")
    assert paged == rows  # pages of 3, 3, 1
    with pytest.raises(UserError, match="ignores QIDO-RS offset"):
        web._all(lambda limit, offset: rows[:limit], "00080018")  # the same page forever
