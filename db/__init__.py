"""The results database: SQLAlchemy 2 models, Alembic migrations, write/read helpers."""
