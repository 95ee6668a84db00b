-- Prefect's server database on PostgreSQL needs the pg_trgm extension.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
