"""The image/clinical join: exact counts on a cohort with orphans, missing values, repeats."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.clinical.join import join_cohort
from pipeline.clinical.source import ClinicalTable, load_clinical
from pipeline.config import ClinicalConfig
from pipeline.errors import DataError
from pipeline.pseudonyms import image_key, patient_key

KEY = b"join-test-pseudonym-key-0123456"


@dataclass(frozen=True)
class Img:
    image_key: str
    patient_key: str
    cache_key: str


def _clinical(tmp_path: Path, key: bytes = KEY) -> ClinicalTable:
    """Patients P00..P11 with records; P10 and P11 have a missing value."""
    con = sqlite3.connect(tmp_path / "clinic.db")
    con.execute("CREATE TABLE clinical_records (mrn TEXT, covid TEXT, age REAL)")
    rows = [(f"P{i:02d}", ("negative", "positive")[i % 2], 30.0 + i) for i in range(10)]
    rows += [("P10", None, 40.0), ("P11", "positive", None)]
    con.executemany("INSERT INTO clinical_records VALUES (?, ?, ?)", rows)
    con.commit()
    con.close()
    cfg = ClinicalConfig(
        url=f"sqlite:///{tmp_path / 'clinic.db'}",
        query="SELECT mrn, covid, age FROM clinical_records",
        id_column="mrn",
    )
    return load_clinical(cfg, key=key)


def _images() -> list[Img]:
    """P00..P07 one image each, P00 and P01 a second one; P10, P11 (excluded records) one each;
    X1..X3 have no record at all. P08 and P09 have records but no image."""
    spec = [f"P{i:02d}" for i in range(8)] + ["P00", "P01", "P10", "P11", "X1", "X2", "X3"]
    return [
        Img(image_key(KEY, f"1.2.3.{n}"), patient_key(KEY, pid), f"cache-{n}")
        for n, pid in enumerate(spec)
    ]


def test_join_counts_on_a_cohort_with_orphans_and_missing_values(tmp_path):
    clinical = _clinical(tmp_path)
    cohort = join_cohort(_images(), clinical)
    c = cohort.counts
    assert c.images_in == 15
    assert c.images_without_record == 3  # X1..X3
    assert c.images_record_excluded == 2  # P10, P11
    assert c.records_in == 10
    assert c.records_excluded_missing == 2
    assert c.records_without_image == 2  # P08, P09
    assert c.patients == 8
    assert c.images_joined == 10  # P00..P07 + second images of P00, P01
    assert c.images_in == (c.images_joined + c.images_without_record + c.images_record_excluded)
    assert cohort.u.shape == (10, 2) and len(cohort) == 10
    assert cohort.u_names == ("covid", "age") and cohort.u_types == ("binary", "continuous")


def test_every_image_of_a_patient_gets_that_patients_record(tmp_path):
    cohort = join_cohort(_images(), _clinical(tmp_path))
    assert list(cohort.image_keys) == sorted(cohort.image_keys)
    by_patient = {patient_key(KEY, f"P{i:02d}"): i for i in range(10)}
    for pk, ck, row in zip(cohort.patient_keys, cohort.cache_keys, cohort.u, strict=True):
        i = by_patient[pk]
        assert row[1] == 30.0 + i  # age
        assert row[0] == i % 2  # covid: negative -> 0, positive -> 1
        assert ck.startswith("cache-")
    assert sum(pk == patient_key(KEY, "P00") for pk in cohort.patient_keys) == 2
    # input order does not change the cohort
    (tmp_path / "again").mkdir()
    again = join_cohort(list(reversed(_images())), _clinical(tmp_path / "again"))
    assert again.image_keys == cohort.image_keys
    np.testing.assert_array_equal(again.u, cohort.u)


def test_nothing_joins_names_the_likely_causes(tmp_path):
    other_key = b"a-different-key-than-at-ingest!"
    with pytest.raises(DataError) as ei:
        join_cohort(_images(), _clinical(tmp_path, key=other_key))
    msg = str(ei.value)
    assert "id_column" in msg and "CMCL_PSEUDONYM_KEY" in msg
    assert "15 catalogued images" in msg


def test_duplicate_image_key_is_refused(tmp_path):
    imgs = _images()
    with pytest.raises(DataError, match="twice"):
        join_cohort([*imgs, imgs[0]], _clinical(tmp_path))


def test_variable_constant_after_join_is_refused(tmp_path):
    clinical = _clinical(tmp_path)
    evens = [img for img in _images()[:8] if int(img.cache_key.split("-")[1]) % 2 == 0]
    with pytest.raises(DataError, match="'covid' is constant"):
        join_cohort(evens, clinical)


def test_summary_is_phi_free_and_json_serialisable(tmp_path):
    cohort = join_cohort(_images(), _clinical(tmp_path))
    summary = cohort.summary()
    text = json.dumps(summary)
    assert summary["images_joined"] == 10 and summary["patients"] == 8
    assert summary["variables"] == {"covid": "binary", "age": "continuous"}
    assert summary["balance"]["covid"] == {"negative": 5, "positive": 5}
    for pk in cohort.patient_keys + cohort.image_keys:
        assert pk not in text
    assert "P0" not in text


def test_mostly_unmatched_images_warn(tmp_path, caplog):
    clinical = _clinical(tmp_path)
    strangers = [Img(image_key(KEY, f"9.{n}"), patient_key(KEY, f"Q{n}"), "c") for n in range(30)]
    with caplog.at_level("WARNING", logger="pipeline.clinical.join"):
        cohort = join_cohort(_images() + strangers, clinical)
    assert cohort.counts.images_without_record == 33
    assert "most images (33 of 45) have no clinical record" in caplog.text
