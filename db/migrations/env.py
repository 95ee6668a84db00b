"""Alembic environment for the CMCL results database.

Run programmatically by ``db.engine`` (which passes an open connection, already inside a
transaction and holding the migration lock, through ``config.attributes["connection"]``), or
by developers with ``alembic -c db/alembic.ini ...`` against ``CMCL_RESULTS_URL``. It never
configures logging (library code has no side effects).
"""

from __future__ import annotations

import os

from alembic import context

from db.engine import VERSION_TABLE
from db.models import Base

config = context.config


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    url = os.environ.get("CMCL_RESULTS_URL") or config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        render_as_batch=url is not None and url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply migrations over the caller's connection, or a new one from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():  # a no-op when the caller already began one
            context.run_migrations()
        return
    url = os.environ.get("CMCL_RESULTS_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set CMCL_RESULTS_URL to the results database URL")
    from db.engine import open_results  # the same engine setup as the pipeline uses

    engine = open_results(url, migrate=False)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
