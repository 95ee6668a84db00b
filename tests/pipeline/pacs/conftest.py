"""The PACS tests' fixtures: a real Orthanc for the session and the cohort uploaded to it.

Without the Orthanc binary or its DICOMweb plugin the tests skip with that reason, unless
``CMCL_TEST_ORTHANC=required`` (``.ci/run`` installs both and sets it): then they fail. The
session's cohort is uploaded once; tests only read it (a test that needs a change brings its
own instance).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.synthetic.cohort import make_synthetic_cohort
from tests.pipeline.pacs.orthanc import (
    CALLING_AET,
    PASSWORD,
    Orthanc,
    free_port,
    missing,
    running_orthanc,
)

__all__ = ["CALLING_AET", "PASSWORD", "Orthanc", "Uploaded", "free_port"]


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Orthanc on free loopback ports with a temporary storage folder."""
    why = missing()
    if why and os.environ.get("CMCL_TEST_ORTHANC") == "required":
        pytest.fail(f"CMCL_TEST_ORTHANC=required but {why}")
    if why:
        pytest.skip(why)
    try:
        with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
            yield server
    except RuntimeError as err:
        pytest.fail(str(err))


@dataclass(frozen=True)
class Uploaded:
    """The synthetic cohort as uploaded: the files Orthanc stored, copied to ``folder``."""

    folder: Path
    stored: int
    refused: int
    mr_slices: int


@pytest.fixture(scope="session")
def uploaded(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    """A small synthetic cohort (broken files and an MR series included) uploaded to Orthanc;
    ``folder`` holds exactly the files Orthanc accepted, for the folder-source comparison."""
    root = tmp_path_factory.mktemp("cohort")
    mr_slices = 4
    info = make_synthetic_cohort(root / "cohort", n_patients=10, n_broken=4, mr_patients=1,
                                 mr_slices=mr_slices, workers=1)  # fmt: skip
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
    return Uploaded(folder, stored, refused, mr_slices)
