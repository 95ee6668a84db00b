"""The clinical SQL source: typing, read-only access, pseudonyms and clear errors (SQLite + PG)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from db.errors import DatabaseUnavailable
from pipeline.clinical.connection import (
    check_clinical_source,
    readonly_connection,
    safe_message,
)
from pipeline.clinical.source import load_clinical
from pipeline.config import ClinicalConfig
from pipeline.errors import ConfigError, DataError
from pipeline.pseudonyms import patient_key
from pipeline.redact import clear_phi_registry

KEY = b"test-pseudonym-key-0123456789"
COLUMNS = ("mrn", "covid", "age", "grade", "smoker", "note")
# mrn, covid (yes/no), age (float), grade (text levels), smoker (0/1 int), note (free text)
ROWS: list[tuple[Any, ...]] = [
    ("MRN-CANARY-001", "yes", 71.5, "high", 1, "cough"),
    ("MRN-CANARY-002", "no", 45.0, "low", 0, "none"),
    ("MRN-CANARY-003", "Yes", 60.0, "mid", 1, "fever"),
    ("MRN-CANARY-004", "no", None, "low", 0, "none"),  # missing age
    ("MRN-CANARY-005", "no", 33.0, "", 1, "none"),  # empty string: missing grade
    (" MRN-CANARY-006 ", "yes", 52.0, "mid", 0, "dyspnoea"),  # padded id
    (None, "yes", 40.0, "low", 0, "none"),  # no id
]


def _sqlite_db(path: Path, rows: list[tuple[Any, ...]] = ROWS) -> str:
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE clinical_records (mrn TEXT, covid TEXT, age REAL, grade TEXT, "
        "smoker INTEGER, note TEXT)"
    )
    con.executemany("INSERT INTO clinical_records VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def _pg_db(url: str, rows: list[tuple[Any, ...]] = ROWS) -> str:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE clinical_records (mrn TEXT, covid TEXT, age DOUBLE PRECISION, "
                "grade TEXT, smoker INTEGER, note TEXT)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO clinical_records VALUES (:a, :b, :c, :d, :e, :f)"),
            [dict(zip("abcdef", r, strict=True)) for r in rows],
        )
    eng.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def clinical_url(request, tmp_path) -> str:
    """A clinical database holding ROWS, once as a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return _sqlite_db(tmp_path / "clinic db.sqlite")  # a space in the path on purpose
    return _pg_db(request.getfixturevalue("pg_url"))


def _cfg(
    url: str,
    query: str = "SELECT mrn, covid, age, grade, smoker FROM clinical_records",
    **variables: str,
) -> ClinicalConfig:
    return ClinicalConfig(url=url, query=query, id_column="mrn", variables=variables)


def test_types_inferred_and_declared(clinical_url):
    table = load_clinical(_cfg(clinical_url, grade="categorical"), key=KEY)
    assert table.u_names == ("covid", "age", "grade", "smoker")
    assert table.u_types == ("binary", "continuous", "categorical", "binary")
    # rows 4 (missing age) and 5 (empty grade) excluded, row 7 has no id
    assert table.counts.rows == 7
    assert table.counts.rows_without_id == 1
    assert table.counts.excluded_missing == 2
    assert dict(table.counts.missing_by_variable) == {"age": 1, "grade": 1}
    assert table.counts.records == 4 and table.values.shape == (4, 4)
    kept = [ROWS[i] for i in (0, 1, 2, 5)]
    assert table.patient_keys == tuple(patient_key(KEY, r[0].strip()) for r in kept)
    assert table.excluded_keys == {patient_key(KEY, ROWS[i][0]) for i in (3, 4)}
    # covid: "no"/"yes" (case-insensitive) -> 0/1; age as is; grade sorted levels; smoker 0/1
    assert table.levels["covid"] == ("no", "yes")  # "Yes" and "yes" are one level
    np.testing.assert_array_equal(table.values[:, 0], [1, 0, 1, 1])
    np.testing.assert_allclose(table.values[:, 1], [71.5, 45.0, 60.0, 52.0])
    assert table.levels["grade"] == ("high", "low", "mid")
    np.testing.assert_array_equal(table.values[:, 2], [0, 1, 2, 2])
    np.testing.assert_array_equal(table.values[:, 3], [1, 0, 1, 0])
    assert table.levels["smoker"] == ("0", "1")


@pytest.mark.parametrize(
    ("pair", "expected_codes"),
    [
        (("negative", "positive"), [0, 1]),
        (("Positive", "NEGATIVE"), [1, 0]),
        (("true", "false"), [1, 0]),
        (("absent", "present"), [0, 1]),
        (("beta", "alpha"), [1, 0]),  # no known pair: sorted, alpha -> 0
    ],
)
def test_binary_string_mapping_is_documented_and_deterministic(tmp_path, pair, expected_codes):
    rows = [(f"P{i}", pair[i % 2], 1.0 + i, "a", 0, "x") for i in range(4)]
    url = _sqlite_db(tmp_path / "c.db", rows)
    table = load_clinical(_cfg(url, "SELECT mrn, covid, age FROM clinical_records"), key=KEY)
    assert table.u_types[0] == "binary"
    np.testing.assert_array_equal(table.values[:, 0], expected_codes * 2)


def test_numeric_binary_is_sorted(tmp_path):
    rows = [(f"P{i}", "x", 1.0 + i, "a", (2, 1)[i % 2], "x") for i in range(4)]
    url = _sqlite_db(tmp_path / "c.db", rows)
    table = load_clinical(_cfg(url, "SELECT mrn, age, smoker FROM clinical_records"), key=KEY)
    np.testing.assert_array_equal(table.values[:, 1], [1, 0, 1, 0])  # 1 -> 0, 2 -> 1
    assert table.levels["smoker"] == ("1", "2")


def test_free_text_column_is_refused_naming_it(clinical_url):
    with pytest.raises(DataError) as ei:
        load_clinical(_cfg(clinical_url, "SELECT * FROM clinical_records"), key=KEY)
    msg = str(ei.value)
    assert "'grade'" in msg and "categorical" in msg and "clinical.query" in msg
    assert "MRN-CANARY" not in msg and "cough" not in msg


def test_declared_categorical_accepts_text(clinical_url):
    cfg = _cfg(
        clinical_url,
        "SELECT mrn, note, grade FROM clinical_records",
        note="categorical",
        grade="categorical",
    )
    table = load_clinical(cfg, key=KEY)
    assert table.u_types == ("categorical", "categorical")
    assert table.levels["note"] == ("cough", "dyspnoea", "fever", "none")


def test_bad_id_column_lists_available_columns(clinical_url):
    cfg = ClinicalConfig(
        url=clinical_url, query="SELECT * FROM clinical_records", id_column="patient_id"
    )
    with pytest.raises(DataError) as ei:
        load_clinical(cfg, key=KEY)
    msg = str(ei.value)
    assert "patient_id" in msg
    for col in COLUMNS:
        assert col in msg


@pytest.mark.parametrize(
    ("variables", "needle"),
    [
        ({"height": "continuous"}, "height"),  # declared but not returned
        ({"covid": "continuous"}, "declared continuous"),
        ({"grade": "binary"}, "3 distinct values"),
    ],
)
def test_declared_types_are_checked(tmp_path, variables, needle):
    url = _sqlite_db(tmp_path / "c.db")
    cfg = ClinicalConfig(
        url=url,
        id_column="mrn",
        variables=variables,
        query="SELECT mrn, covid, age, grade FROM clinical_records",
    )
    with pytest.raises(DataError, match=needle):
        load_clinical(cfg, key=KEY)


def test_constant_column_is_refused(tmp_path):
    rows = [(f"P{i}", "yes", 1.0 + i, "a", 0, "x") for i in range(4)]
    url = _sqlite_db(tmp_path / "c.db", rows)
    with pytest.raises(DataError, match="'covid' has a single value"):
        load_clinical(_cfg(url, "SELECT mrn, covid, age FROM clinical_records"), key=KEY)


def test_duplicates_identical_collapse_contradicting_refused(tmp_path):
    same = [*ROWS[:3], ROWS[0]]
    table = load_clinical(_cfg(_sqlite_db(tmp_path / "a.db", same), grade="categorical"), key=KEY)
    assert table.counts.duplicate_rows_collapsed == 1 and table.counts.records == 3
    contradicting = [*ROWS[:3], ("MRN-CANARY-001", "no", 71.5, "high", 1, "cough")]
    with pytest.raises(DataError) as ei:
        load_clinical(
            _cfg(_sqlite_db(tmp_path / "b.db", contradicting), grade="categorical"), key=KEY
        )
    assert "1 patients have more than one differing record" in str(ei.value)
    assert "MRN-CANARY" not in str(ei.value)


def test_sqlite_source_is_read_only(tmp_path):
    url = _sqlite_db(tmp_path / "c.db")
    cfg = _cfg(url, "DELETE FROM clinical_records RETURNING mrn")
    with pytest.raises(DataError, match="readonly|read-only"):
        load_clinical(cfg, key=KEY)
    with readonly_connection(url) as conn, pytest.raises(sa.exc.OperationalError):
        conn.execute(sa.text("INSERT INTO clinical_records (mrn) VALUES ('x')"))
    con = sqlite3.connect(tmp_path / "c.db")
    assert con.execute("SELECT count(*) FROM clinical_records").fetchone()[0] == len(ROWS)
    con.close()


@pytest.mark.postgres
def test_postgres_source_is_read_only(pg_url):
    _pg_db(pg_url)
    with readonly_connection(pg_url) as conn, pytest.raises(sa.exc.DBAPIError) as ei:
        conn.execute(sa.text("DELETE FROM clinical_records"))
    assert "read-only" in str(ei.value.orig)
    with pytest.raises(DataError, match="read-only"):
        load_clinical(_cfg(pg_url, "DELETE FROM clinical_records RETURNING mrn"), key=KEY)
    eng = sa.create_engine(pg_url)
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM clinical_records")).scalar() == 7
    eng.dispose()


def test_missing_sqlite_file_is_an_error_not_a_new_database(tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        load_clinical(_cfg(f"sqlite:///{path}"), key=KEY)
    with pytest.raises(DatabaseUnavailable, match="does not exist") as ei:
        check_clinical_source(f"sqlite:///{path}")  # the fail-fast check before ingest
    assert not ei.value.transient
    assert not path.exists()


def test_unreachable_postgres_names_database_not_password(monkeypatch):
    monkeypatch.setenv("CMCL_TEST_CLINICAL_PW", "s3cret-Pa55word")
    cfg = _cfg("postgresql://reader:${CMCL_TEST_CLINICAL_PW}@127.0.0.1:1/clinic")
    with pytest.raises(DatabaseUnavailable) as ei:
        load_clinical(cfg, key=KEY)
    msg = str(ei.value)
    assert "127.0.0.1" in msg and "clinic" in msg
    assert "s3cret-Pa55word" not in msg
    assert ei.value.transient  # a refused connection may succeed on a retry


@pytest.mark.postgres
def test_missing_postgres_database_is_permanent_and_checked_before_use(pg_admin_url):
    url = sa.make_url(pg_admin_url).set(database="cmcl_no_such_clinic_db")
    with pytest.raises(DatabaseUnavailable, match="does not exist") as ei:
        check_clinical_source(url.render_as_string(hide_password=False))
    assert not ei.value.transient  # retrying cannot create the database


def test_unset_password_variable_and_bad_url_are_config_errors(monkeypatch):
    monkeypatch.delenv("CMCL_TEST_UNSET_PW", raising=False)
    with pytest.raises(ConfigError, match="CMCL_TEST_UNSET_PW"):
        load_clinical(_cfg("postgresql://r:${CMCL_TEST_UNSET_PW}@127.0.0.1:1/c"), key=KEY)
    with pytest.raises(ConfigError, match="unknown backend"):
        load_clinical(_cfg("nosuchdialect://host/db"), key=KEY)


def test_sql_error_hides_query_literals(clinical_url):
    cfg = _cfg(clinical_url, "SELECT mrn FROM no_such_table WHERE mrn = 'MRN-CANARY-001'")
    with pytest.raises(DataError) as ei:
        load_clinical(cfg, key=KEY)
    assert "no_such_table" in str(ei.value)
    assert "MRN-CANARY" not in str(ei.value)


def test_logs_carry_counts_and_names_but_no_patient_data(tmp_path, caplog):
    url = _sqlite_db(tmp_path / "c.db")
    with caplog.at_level(logging.DEBUG):
        load_clinical(_cfg(url, grade="categorical"), key=KEY)
    text = caplog.text
    assert "4 records kept" in text and "covid:binary" in text
    for needle in ("MRN-CANARY", "71.5", "SELECT"):
        assert needle not in text


@pytest.mark.postgres
def test_postgres_native_types(pg_url):
    eng = sa.create_engine(pg_url)
    with eng.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE t (mrn INTEGER, flag BOOLEAN, crp NUMERIC(6, 2), seen DATE)")
        )
        conn.execute(
            sa.text(
                "INSERT INTO t VALUES (1, true, 1.5, '2020-01-01'), (2, false, 2.25, "
                "'2020-01-02'), (3, true, 3.0, '2020-01-03')"
            )
        )
    eng.dispose()
    cfg = ClinicalConfig(url=pg_url, query="SELECT mrn, flag, crp FROM t", id_column="mrn")
    table = load_clinical(cfg, key=KEY)
    assert table.u_types == ("binary", "continuous")
    assert table.levels["flag"] == ("false", "true")
    np.testing.assert_allclose(table.values, [[1, 1.5], [0, 2.25], [1, 3.0]])
    assert table.patient_keys[0] == patient_key(KEY, "1")  # integer ids hash as their text
    dates = cfg.model_copy(update={"query": "SELECT mrn, seen FROM t"})
    with pytest.raises(DataError, match="'seen' holds non-numeric values"):
        load_clinical(dates, key=KEY)


def test_driver_messages_keep_server_and_port_but_not_values():
    clear_phi_registry()  # earlier tests registered "Test Hospital" from their DICOM files

    class DriverError(Exception):
        pass

    def message(text: str) -> str:
        return safe_message(sa.exc.OperationalError("SELECT 1", {}, DriverError(text)))

    refused = message(
        'connection failed: connection to server at "10.0.0.5", port 5432 failed: '
        "Connection refused"
    )
    assert '"10.0.0.5", port 5432 failed' in refused
    assert "db.hospital.org:5432" in message("could not reach db.hospital.org:5432")
    masked = message(
        "no such column: MRN-CANARY-001 near '12345678' or 98765432, uid 1.2.840.10008.9"
    )
    for leak in ("12345678", "98765432", "10008"):
        assert leak not in masked
