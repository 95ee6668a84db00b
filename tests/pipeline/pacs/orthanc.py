"""A real PACS on this machine: Orthanc on free loopback ports, with its DICOMweb plugin.

:func:`running_orthanc` writes a configuration (authentication on, remote access off, storage
in the given folder, the calling AE title ``CMCL`` registered for DIMSE), starts Debian's
``Orthanc`` binary (``apt-get install orthanc orthanc-dicomweb``) and waits for its REST API.
Used by the tests' fixture and by ``benchmarks/ingest_throughput.py --pacs``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD, PACS_AET, CALLING_AET = "cmcl", "s3cret-pacs-pw", "ORTHANC", "CMCL"
START_TIMEOUT_S = 30


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its ports and REST helpers."""

    http_port: int
    dicom_port: int
    folder: Path

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def dicomweb_source(self, password_ref: str = "${PACS_PASSWORD}") -> str:
        """``dicom.source`` of its DICOMweb service (the password as an environment reference)."""
        return f"http://{USER}:{password_ref}@127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dimse_source(self) -> str:
        return f"dimse://{PACS_AET}@127.0.0.1:{self.dicom_port}"

    def upload(self, path: Path) -> bool:
        """POST /instances; True when Orthanc stored the file (a broken one gets HTTP 400)."""
        r = requests.post(f"{self.rest}/instances", data=path.read_bytes(), auth=(USER, PASSWORD))
        return r.status_code == 200


def _config(folder: Path, http_port: int, dicom_port: int) -> dict:
    return {
        "Name": "cmcl-test",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": PACS_AET,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {"cmcl": [CALLING_AET, "127.0.0.1", free_port()]},
        "DicomCheckModalityHost": True,
    }


def missing() -> str | None:
    """Why Orthanc cannot run here, or None."""
    if not Path(ORTHANC).is_file():
        return "Orthanc is not installed (apt-get install -y orthanc orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.is_file():
        return (f"the Orthanc DICOMweb plugin {DICOMWEB_PLUGIN} is missing "
                "(apt-get install -y orthanc-dicomweb)")  # fmt: skip
    return None


@contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    """Orthanc with its storage, configuration and log in ``folder``, stopped on exit.

    Raises:
        RuntimeError: it did not answer within ``START_TIMEOUT_S`` (its log's tail included).
    """
    folder.mkdir(parents=True, exist_ok=True)
    server = Orthanc(free_port(), free_port(), folder)
    config = folder / "orthanc.json"
    config.write_text(json.dumps(_config(folder, server.http_port, server.dicom_port)))
    with (folder / "orthanc.log").open("w") as log:
        proc = subprocess.Popen([ORTHANC, str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    if requests.get(f"{server.rest}/system", auth=(USER, PASSWORD), timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = (folder / "orthanc.log").read_text()[-2000:]
                    raise RuntimeError(f"Orthanc did not start:\n{said}")
                time.sleep(0.1)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
