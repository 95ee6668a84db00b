"""A DICOMweb source: QIDO-RS search, WADO-RS retrieve (dicomweb-client over a requests session).

Authentication: basic auth from the URL's userinfo (``http://cmcl:${PACS_PASSWORD}@host/...``,
the password expanded from the environment; a literal password is refused by the config) or a
bearer token read from the environment variable ``dicom.token_env``. TLS is verified with the
system CAs, or ``dicom.ca_bundle``. Retries with exponential backoff on connection failures,
timeouts and 5xx answers come from urllib3's ``Retry`` on the session (dicomweb-client's own
retry, which covers only some status codes and no timeouts, is turned off).

Privacy: dicomweb-client logs request URLs and UIDs at INFO/DEBUG and requests puts the URL in
its exception messages; this module raises only with the status code and the error's type.
The CLI keeps those libraries' loggers at WARNING, and its PHI filter redacts UIDs from any
record (:mod:`flows.console`).
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit, urlunsplit

import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.web import _Transaction
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from db.errors import UserError
from pipeline.config import DicomConfig, expand_env
from pipeline.errors import ConfigError
from pipeline.pacs.source import RemoteInstance, RetrieveError

logger = logging.getLogger(__name__)

TIMEOUT_S = (5, 60)  # (connect, read)
PAGE = 1000  # QIDO-RS results per request
# study attributes an instance-level search does not match (PS3.18 table 6.7.1-1)
STUDY_ONLY = frozenset({"ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
                        "NumberOfStudyRelatedInstances"})  # fmt: skip
RETRY = dict(total=4, connect=2, read=2, backoff_factor=0.5,
             status_forcelist=(408, 429, 500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
             raise_on_status=False)  # fmt: skip
_STUDY_UID, _SERIES_UID, _SOP_UID, _MODALITY = "0020000D", "0020000E", "00080018", "00080060"
# the instance as stored, in any transfer syntax (no transcoding)
_ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class DicomWebSource:
    """A DICOMweb service (see the module docstring); ``retrieve`` is thread-safe."""

    def __init__(self, name: str, base_url: str, session: requests.Session, query: dict):
        self.name = name
        self.query = dict(query)
        self.session = session
        self.client = DICOMwebClient(base_url, session=session, timeout=TIMEOUT_S)
        self.client.set_http_retry_params(retry=False)  # the session's urllib3 Retry does it

    @classmethod
    def from_config(cls, dicom: DicomConfig) -> DicomWebSource:
        """Build the client from ``dicom.source``, ``token_env`` and ``ca_bundle``.

        Raises:
            ConfigError: a referenced environment variable is unset, or the CA file is missing.
        """
        name = str(dicom.source)
        parts = urlsplit(name)
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=Retry(**RETRY))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if parts.username:
            password = expand_env(parts.password or "")
            session.auth = (parts.username, password)
        if dicom.token_env:
            token = os.environ.get(dicom.token_env, "").strip()
            if not token:
                raise ConfigError(
                    f"dicom.token_env names {dicom.token_env}, but that environment variable is "
                    "not set",
                    f"export {dicom.token_env}=<the PACS access token> before running",
                )
            session.headers["Authorization"] = f"Bearer {token}"
        if dicom.ca_bundle is not None:
            if not os.path.isfile(dicom.ca_bundle):
                raise ConfigError(
                    f"dicom.ca_bundle {dicom.ca_bundle} is not a file",
                    "point dicom.ca_bundle at the hospital CA certificate (PEM)",
                )
            session.verify = str(dicom.ca_bundle)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return cls(name, base, session, dicom.query)

    def check(self) -> None:
        """One small study search: fails with a clear UserError when the PACS cannot be used."""
        try:
            self.client.search_for_studies(limit=1, search_filters=self.query)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a UserError
            raise self._user_error(exc) from None

    def search(self) -> list[RemoteInstance]:
        """QIDO-RS: every instance matching ``dicom.query``.

        One paged search at instance level (``/instances``, which also answers study and
        series attributes, ``StudyDate`` filters included) unless the query names a
        study-only attribute such as ``ModalitiesInStudy``; then the matching studies first
        (one unpaged request), and each study's instances (one request per study).
        """
        try:
            if STUDY_ONLY.isdisjoint(self.query):
                rows = self._all(self.client.search_for_instances, _SOP_UID,
                                 search_filters=self.query, fields=["Modality"])  # fmt: skip
            else:
                # unpaged: Orthanc 1.10 applies offset wrongly with ModalitiesInStudy (a second
                # page comes back empty or repeats the first), and it answers all matches at once
                studies = self.client.search_for_studies(
                    search_filters=self.query, fields=["StudyInstanceUID"]
                )
                rows = []
                for uid in sorted({_value(s, _STUDY_UID) for s in studies} - {None}):
                    rows += self._all(self.client.search_for_instances, _SOP_UID,
                                      study_instance_uid=uid, fields=["Modality"])  # fmt: skip
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a UserError
            raise self._user_error(exc) from None
        found = set()
        for r in rows:
            study, series, sop = _value(r, _STUDY_UID), _value(r, _SERIES_UID), _value(r, _SOP_UID)
            if study and series and sop:
                found.add(RemoteInstance(study, series, sop, _value(r, _MODALITY) or ""))
        return sorted(found)

    def _all(self, search, tag: str, **kwargs) -> list[dict]:
        """Every result of a QIDO-RS search, ``PAGE`` at a time.

        Not dicomweb-client's ``get_remaining``: it pages until an empty answer, and a server
        that ignores ``offset`` (Orthanc 1.10 with ``ModalitiesInStudy``) never gives one.
        (Instance-level searches without study-only attributes page correctly on Orthanc.)

        Raises:
            UserError: a full page came back twice (the server ignores ``offset``), so the
                listing cannot be completed; forgetting instances on an incomplete listing
                would delete catalog rows.
        """
        out: dict[str, dict] = {}
        offset = 0
        while True:
            page = search(limit=PAGE, offset=offset, **kwargs)
            new = {v: r for r in page if (v := _value(r, tag)) and v not in out}
            out.update(new)
            if len(page) < PAGE:
                return list(out.values())
            if not new:
                raise UserError(
                    f"the DICOMweb service {self.name} repeats the same {PAGE} results for the "
                    "next page of a search (it ignores QIDO-RS offset)",
                    "narrow dicom.query (e.g. a StudyDate range) so that one search matches "
                    f"fewer than {PAGE} studies",
                )
            offset += len(page)

    def retrieve(self, inst: RemoteInstance) -> bytes:
        """WADO-RS: the instance as stored (raises :class:`RetrieveError`, PHI-free)."""
        url = self.client._get_instances_url(  # noqa: SLF001 - see below
            _Transaction.RETRIEVE, inst.study_uid, inst.series_uid, inst.sop_uid
        )
        try:
            # dicomweb-client's public retrieve_instance parses the bytes into a dataset, outside
            # the ingest's PHI guard and validation; its own GET (URL building, retries, error
            # status) and multipart reader give the bytes as stored, which then go through
            # exactly the validation a file goes through.
            response = self.client._http_get(url, headers={"Accept": _ACCEPT_AS_STORED})  # noqa: SLF001
            parts = list(self.client._decode_multipart_message(response, stream=False))  # noqa: SLF001
        except Exception as exc:  # noqa: BLE001 - one bad instance never stops a batch
            raise RetrieveError(f"WADO-RS retrieve failed ({_describe(exc)})") from None
        if len(parts) != 1 or not parts[0]:
            raise RetrieveError(f"WADO-RS retrieve answered {len(parts)} parts instead of one")
        return parts[0]

    def close(self) -> None:
        self.session.close()

    def _user_error(self, exc: Exception) -> UserError:
        """A UserError naming the source (as written in the config) and the fix."""
        status = _status(exc)
        where = f"the DICOMweb service {self.name}"
        if status == 401:
            return UserError(
                f"{where} refused the credentials (HTTP 401)",
                "check the user and password (${NAME} in dicom.source) or the token named by "
                "dicom.token_env",
            )
        if status == 403:
            return UserError(
                f"{where} denied access (HTTP 403): the account may not search it",
                "ask the PACS administrator to grant this account QIDO-RS/WADO-RS read access",
            )
        if status == 404:
            return UserError(
                f"{where} has no DICOMweb studies resource (HTTP 404)",
                "check the path of dicom.source (Orthanc: http://host:8042/dicom-web)",
            )
        if status is not None and status >= 500:
            return UserError(
                f"{where} failed (HTTP {status}) after retries",
                "try again later, or ask the PACS administrator",
                transient=True,
            )
        if isinstance(exc, requests.exceptions.SSLError):
            return UserError(
                f"{where}: TLS certificate verification failed",
                "set dicom.ca_bundle to the hospital CA certificate (PEM)",
            )
        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return UserError(
                f"{where} cannot be reached ({_describe(exc)})",
                "check the host and port in dicom.source and that the PACS is running",
                transient=True,
            )
        if status is not None:
            return UserError(
                f"{where} answered HTTP {status} to a search",
                "check dicom.query (QIDO-RS attribute names such as ModalitiesInStudy)",
            )
        return UserError(f"{where} gave an unusable answer ({_describe(exc)})")


def _value(dataset: dict, tag: str) -> str | None:
    """The first value of ``tag`` in a DICOM JSON dataset, or None."""
    values = (dataset.get(tag) or {}).get("Value") or []
    return str(values[0]) if values else None


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _describe(exc: Exception) -> str:
    """The error's type and HTTP status: never its message (it carries the request URL)."""
    status = _status(exc)
    if status is not None:
        return f"HTTP {status}"
    if isinstance(exc, requests.exceptions.RetryError):
        return "too many failed attempts"
    return type(exc).__name__
