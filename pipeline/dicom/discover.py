"""Discovery: every file under ``dicom.source``, in a deterministic order, and what was missed.

Files and folders whose name starts with "." are skipped; symlinked folders are not followed
(no cycles). A folder that cannot be listed is skipped with a warning that does not name it
(folder names may embed patient names) and counted, so the caller knows the listing is
incomplete and must not conclude that files under it have vanished.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class Discovery:
    """What a walk of the source folder found.

    Attributes:
        files: ``(path, relpath)`` pairs of strings (relpath '/'-separated, relative to the
            source), depth first with names sorted in each folder, so every scan sees the same
            order. Plain strings, not ``Path`` objects: at hundreds of thousands of files a
            ``Path`` and its cached parts cost ~0.5 KiB each in the scanning process.
        unlisted: folders that could not be listed (their files are unknown, not gone).
    """

    files: list[tuple[str, str]] = field(default_factory=list)
    unlisted: int = 0

    @property
    def complete(self) -> bool:
        """Whether every folder under the source was listed."""
        return self.unlisted == 0


def discover(source: Path) -> Discovery:
    """Walk ``source`` recursively (see the module docstring for what is skipped)."""
    found = Discovery()
    _walk(Path(source), "", found)
    return found


def _walk(folder: Path, prefix: str, found: Discovery) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        logger.warning("a folder under dicom.source could not be listed (%s)", type(exc).__name__)
        found.unlisted += 1
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        rel = prefix + e.name
        if e.is_dir(follow_symlinks=False):
            _walk(Path(e.path), rel + "/", found)
        elif e.is_file():
            found.files.append((e.path, rel))
