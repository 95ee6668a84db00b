"""Database URLs without their passwords: the one place that finds and masks a URL password.

Used when a URL is shown (messages, logs), stored (a run's config) or checked (the config
refuses a literal password; ``${NAME}`` references to the environment are allowed and kept).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

MASK = "***"
#: ``scheme://user:PASSWORD@`` in any text; the password is the named group ``pw``
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
#: a ``${NAME}`` reference to an environment variable
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def literal_password(url: str) -> str | None:
    """The password written literally in ``url``'s userinfo, or None (none, or ``${NAME}``)."""
    m = URL_PASSWORD.search(url)
    if m is None or ENV_REF.fullmatch(m["pw"]):
        return None
    return m["pw"]


def mask_passwords(obj: Any) -> Any:
    """``obj`` with every literal URL password in its strings replaced by ``***``.

    Walks dicts, lists and tuples (a config as JSON-able data); ``${NAME}`` references stay.
    """
    if isinstance(obj, str):
        return URL_PASSWORD.sub(
            lambda m: m[0] if ENV_REF.fullmatch(m["pw"]) else m["head"] + MASK, obj
        )
    if isinstance(obj, dict):
        return {k: mask_passwords(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask_passwords(v) for v in obj]
    return obj


def safe_url(url: str | sa.URL) -> str:
    """The URL as text with its password replaced by ``***`` (for messages and logs)."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def scrub(text: str, url: sa.URL) -> str:
    """``text`` (e.g. a driver's message) with ``url``'s password, if any, replaced by ``***``."""
    return text.replace(str(url.password), MASK) if url.password else text
