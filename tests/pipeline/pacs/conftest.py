"""A real PACS for the tests: Orthanc on free loopback ports, with its DICOMweb plugin.

The fixture writes a configuration (authentication on, remote access off, storage in a
temporary folder, the calling AE title ``CMCL`` registered for DIMSE), starts Debian's
``Orthanc`` binary and waits for its REST API. Without the binary or the plugin (``apt-get
install orthanc orthanc-dicomweb``; ``.ci/run`` installs them) the tests skip with that reason.
The session's cohort is uploaded once; tests only read it (a test that needs a change uploads
its own instance).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from pipeline.synthetic.cohort import make_synthetic_cohort

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


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Orthanc on free loopback ports with a temporary storage folder (see the module docs)."""
    if not Path(ORTHANC).is_file():
        pytest.skip("Orthanc is not installed (apt-get install -y orthanc orthanc-dicomweb)")
    if not DICOMWEB_PLUGIN.is_file():
        pytest.skip(f"the Orthanc DICOMweb plugin {DICOMWEB_PLUGIN} is missing "
                    "(apt-get install -y orthanc-dicomweb)")  # fmt: skip
    folder = tmp_path_factory.mktemp("orthanc")
    server = Orthanc(free_port(), free_port(), folder)
    config = folder / "orthanc.json"
    config.write_text(json.dumps(_config(folder, server.http_port, server.dicom_port)))
    log = (folder / "orthanc.log").open("w")
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
                pytest.fail(f"Orthanc did not start:\n{said}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@dataclass(frozen=True)
class Uploaded:
    """The synthetic cohort as uploaded: the files Orthanc stored, copied to ``folder``."""

    folder: Path
    stored: int
    refused: int


@pytest.fixture(scope="session")
def uploaded(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    """A small synthetic cohort (broken files and an MR series included) uploaded to Orthanc;
    ``folder`` holds exactly the files Orthanc accepted, for the folder-source comparison."""
    root = tmp_path_factory.mktemp("cohort")
    info = make_synthetic_cohort(root / "cohort", n_patients=10, n_broken=4, mr_patients=1,
                                 mr_slices=4, workers=1)  # fmt: skip
    folder = root / "stored"
    stored = refused = 0
    for f in sorted(p for p in info.dicom_dir.rglob("*") if p.is_file()):
        if orthanc.upload(f):
            target = folder / f.relative_to(info.dicom_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
            stored += 1
        else:
            refused += 1
    return Uploaded(folder, stored, refused)
