"""Orchestration: Prefect flows and deployments, and the `cmcl` command line."""
