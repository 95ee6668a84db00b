"""A run's files as ``cmcl_artifacts`` rows: name, path in the run folder, sha256, size, kind.

The sha256 recorded here is what :func:`pipeline.model.onnx_export.load_session` checks before
it loads a model, so a swapped or corrupted file is never used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from db.records import ArtifactRow


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_artifact(path: Path, run_dir: Path, kind: str) -> ArtifactRow:
    """The artifact row of ``path``, a file inside the run folder ``run_dir``."""
    path = Path(path)
    return ArtifactRow(
        name=path.name,
        relpath=str(path.relative_to(run_dir)),
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        kind=kind,
    )
