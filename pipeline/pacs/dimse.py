"""A DIMSE source: C-FIND at study then image level, C-GET of one instance (pynetdicom).

For archives without DICOMweb: ``dicom.source: dimse://AET@host:port`` names the PACS (its AE
title, host and port) and ``dicom.calling_aet`` is ours, which the PACS must know (Orthanc:
``DicomModalities``). C-GET brings the instance back over the same association (no C-MOVE
destination to open), as the sender encoded it; ``dicom.query`` holds study-level matching
keys (e.g. ``{ModalitiesInStudy: DX, StudyDate: 20240101-20241231}``).

Every retrieve opens its own association, so retrieves may run in parallel threads. Nothing
here logs or raises with an identifier: pynetdicom's own log (which can quote identifiers at
DEBUG) is quietened by the CLI, and messages name the source as the config writes it.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from db.errors import UserError
from pipeline.config import DicomConfig
from pipeline.errors import ConfigError
from pipeline.pacs.source import RemoteInstance, RetrieveError

TIMEOUT_S = 30
# An association holds at most 128 presentation contexts: C-GET and the storage classes an
# image can arrive as (sorted by UID: CR, DX, MR, CT, secondary capture, ... come first).
_STORAGE = StoragePresentationContexts[:120]
_SUCCESS, _PENDING = 0x0000, (0xFF00, 0xFF01)


class DimseSource:
    """A DICOM archive reached over DIMSE (see the module docstring)."""

    def __init__(self, name: str, host: str, port: int, called: str, calling: str, query: dict):
        self.name = name
        self.host, self.port, self.called, self.calling = host, port, called, calling
        self.query = dict(query)

    @classmethod
    def from_config(cls, dicom: DicomConfig) -> DimseSource:
        """Parse ``dimse://AET@host:port``.

        Raises:
            ConfigError: the AE title, host or port is missing, or a query key is unknown.
        """
        name = str(dicom.source)
        parts = urlsplit(name)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.username or not parts.hostname or port is None:
            raise ConfigError(
                f"dicom.source {name} is not dimse://AET@host:port",
                "write the PACS's AE title, host and port, e.g. dimse://ORTHANC@pacs:4242",
            )
        for keyword in dicom.query:
            if tag_for_keyword(keyword) is None:
                raise ConfigError(
                    f"dicom.query has {keyword}, which is not a DICOM attribute keyword",
                    "use study-level keywords such as ModalitiesInStudy or StudyDate",
                )
        return cls(name, parts.hostname, port, parts.username, dicom.calling_aet, dicom.query)

    def _associate(self, model: str, retrieve: bool = False, handlers: list | None = None):
        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
        ae.connection_timeout = 5
        ae.add_requested_context(model)
        roles = []
        if retrieve:
            for cx in _STORAGE:
                ae.add_requested_context(cx.abstract_syntax)
                roles.append(build_role(cx.abstract_syntax, scp_role=True))
        assoc = ae.associate(self.host, self.port, ae_title=self.called, ext_neg=roles or None,
                             evt_handlers=handlers or [])  # fmt: skip
        if assoc.is_established:
            return assoc
        where = f"the DIMSE source {self.name}"
        if assoc.is_rejected:
            raise UserError(
                f"{where} refused the association (calling AE title {self.calling})",
                "register dicom.calling_aet with the PACS (Orthanc: DicomModalities) and check "
                "the called AE title in dicom.source",
            )
        raise UserError(
            f"{where} cannot be reached",
            "check the host and port in dicom.source and that the PACS is running",
            transient=True,
        )

    def check(self) -> None:
        """Associate for C-FIND and run one study query."""
        self._find(self._study_query())

    def search(self) -> list[RemoteInstance]:
        """C-FIND the studies matching ``dicom.query``, then each study's instances (one
        association for all of them)."""
        assoc = self._associate(StudyRootQueryRetrieveInformationModelFind)
        try:
            return self._search(assoc)
        finally:
            assoc.release()

    def _search(self, assoc) -> list[RemoteInstance]:
        studies = {s.get("StudyInstanceUID", "") for s in self._find(self._study_query(), assoc)}
        found: list[RemoteInstance] = []
        for uid in sorted(filter(None, studies)):
            q = Dataset()
            q.QueryRetrieveLevel = "IMAGE"
            q.StudyInstanceUID = uid
            q.SeriesInstanceUID = q.SOPInstanceUID = q.Modality = ""
            for r in self._find(q, assoc):
                series, sop = str(r.get("SeriesInstanceUID", "")), str(r.get("SOPInstanceUID", ""))
                if series and sop:
                    found.append(RemoteInstance(str(uid), series, sop, str(r.get("Modality", ""))))
        return sorted(set(found))

    def retrieve(self, inst: RemoteInstance) -> bytes:
        """C-GET one instance; the bytes as the PACS encoded them (raises RetrieveError)."""
        got: list[bytes] = []
        lock = threading.Lock()

        def on_store(event) -> int:
            with lock:
                got.append(event.encoded_dataset(include_meta=True))
            return _SUCCESS

        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID, q.SeriesInstanceUID = inst.study_uid, inst.series_uid
        q.SOPInstanceUID = inst.sop_uid
        try:
            assoc = self._associate(StudyRootQueryRetrieveInformationModelGet, retrieve=True,
                                    handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
        except UserError:
            raise RetrieveError("the C-GET association was refused or failed") from None
        code = None
        try:
            for status, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
                code = getattr(status, "Status", None)  # the last status is the final one
        finally:
            assoc.release()
        if code != _SUCCESS or len(got) != 1:
            shown = "none" if code is None else f"0x{int(code):04X}"
            raise RetrieveError(f"C-GET delivered {len(got)} instances (status {shown})")
        return got[0]

    def close(self) -> None:
        """Nothing to release: every request opens and releases its own association."""

    def _study_query(self) -> Dataset:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = ""
        for keyword, value in self.query.items():
            setattr(q, keyword, value)
        return q

    def _find(self, query: Dataset, assoc=None) -> list[Dataset]:
        own = assoc is None
        assoc = self._associate(StudyRootQueryRetrieveInformationModelFind) if own else assoc
        out: list[Dataset] = []
        try:
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                code = getattr(status, "Status", None)
                if code in _PENDING and identifier is not None:
                    out.append(identifier)
                elif code is None:  # aborted, or no answer within the timeout
                    raise UserError(
                        f"the DIMSE source {self.name} ended the association without answering "
                        f"a C-FIND from the calling AE title {self.calling}",
                        "register dicom.calling_aet with the PACS (Orthanc: DicomModalities), "
                        "allow it to query, and check that the PACS is running",
                    )
                elif code != _SUCCESS:
                    raise UserError(
                        f"the DIMSE source {self.name} refused a C-FIND (status 0x{code:04X})",
                        "check dicom.query and that dicom.calling_aet may query the PACS",
                    )
        finally:
            if own:
                assoc.release()
        return out
