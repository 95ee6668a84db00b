"""tests/db: a fresh PostgreSQL *schema* per test instead of a fresh database.

Overrides the shared ``pg_url`` for this folder only: ``CREATE DATABASE`` forces a checkpoint
and took ~2 s per test here (plus ~2 s to drop), a schema takes milliseconds. The URL pins
``search_path`` to the new schema, so the code under test sees an empty database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.conftest import admin_execute


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    name = f"cmcl_t_{uuid.uuid4().hex[:12]}"
    admin_execute(pg_admin_url, f'CREATE SCHEMA "{name}"')
    url = sa.make_url(pg_admin_url).update_query_dict({"options": f"-csearch_path={name}"})
    yield url.render_as_string(hide_password=False)
    admin_execute(pg_admin_url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
