"""Run the stdlib-only artifact probe inside an environment's interpreter (one process per call)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from metaflow_extensions.repro.plugins import artifact_probe
from metaflow_repro.errors import InfraError

PROBE = Path(artifact_probe.__file__)


def run(python: str, request: dict, timeout: float = 1800) -> dict:
    proc = subprocess.run(
        [str(python), "-I", str(PROBE)], input=json.dumps(request), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise InfraError(f"artifact probe failed in {python}:\n{proc.stderr.strip()[-3000:]}")
    return json.loads(proc.stdout)
