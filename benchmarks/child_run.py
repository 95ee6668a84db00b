"""Helpers of the benchmarks: ``cmcl run`` in a child process, a JSON result line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: A fixed pseudonym key, so that repeated benchmark runs name the same images the same.
KEY = "7a" * 32


def cmcl_run(config: Path, key_hex: str = KEY) -> None:
    """Run the pipeline on ``config`` in a child process; raises if it fails."""
    env = {**os.environ, "CMCL_PSEUDONYM_KEY": key_hex, "MPLBACKEND": "Agg"}
    subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(config)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def print_json_line(result: dict, out: Path | None) -> None:
    """Print ``result`` as one JSON line and, with ``out``, write it there too."""
    line = json.dumps(result)
    print(line)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(line + "\n")
