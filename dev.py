#!/usr/bin/env python3
"""One-file setup and entry point: `python3 dev.py demo` and `python3 dev.py test`.

Both commands first make sure the virtual environment `.venv/` exists and holds this package
with its runtime, CPU-runtime and development extras (idempotent: a stamp file records the hash
of pyproject.toml, so a second call installs nothing). PyTorch is installed first, pinned to
the CPU build (torch==2.13.0), so that pip never pulls a multi-GB CUDA build; see the README's
"GPU installs" for CUDA machines.

Only the Python standard library is used here, so this runs on a fresh Python 3.11.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".cmcl-installed"
TORCH = os.environ.get("CMCL_TORCH_SPEC", "torch==2.13.0")
EXTRAS = os.environ.get("CMCL_EXTRAS", "cpu,dev")


def _run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def _wanted_stamp() -> str:
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    h.update(f"{TORCH}|{EXTRAS}|{sys.version_info[:2]}".encode())
    return h.hexdigest()


def setup() -> None:
    """Create .venv and install the package (editable) unless already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"Python >= 3.11 is required (this is {sys.version.split()[0]})")
    if not PY.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    want = _wanted_stamp()
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check"]
    _run(pip + ["--upgrade", "pip"])
    _run(pip + [TORCH])  # first: the CPU build, so nothing below pulls a CUDA build
    _run(pip + ["-e", f".[{EXTRAS}]"], cwd=ROOT)
    STAMP.write_text(want + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        print("usage: python3 dev.py {setup|demo|test|cmcl} [args...]")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    setup()
    env = dict(os.environ)
    if cmd == "setup":
        return 0
    if cmd == "demo":
        return subprocess.call([str(BIN / "cmcl"), "demo", *rest], env=env)
    if cmd == "test":
        return subprocess.call([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env)
    if cmd == "cmcl":
        return subprocess.call([str(BIN / "cmcl"), *rest], env=env)
    print(f"unknown command {cmd!r}; use setup, demo, test or cmcl", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
