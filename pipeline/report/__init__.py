"""The per-run report: figures and an offline HTML page."""
