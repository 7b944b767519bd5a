"""The flow files a command names: each path is a flow file, or a folder whose flow files (``*.py``
that define a flow) are all taken, in name order. Shared by the commands that take several flows
(lock, env, drift)."""

from __future__ import annotations

from pathlib import Path

from metaflow_repro.env.flowfile import is_flow_candidate
from metaflow_repro.errors import BadInput


def flow_files(paths: list[str]) -> list[Path]:
    out = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.py") if is_flow_candidate(f))
            if not found:
                raise BadInput(f"{p}: no flow files (*.py) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise BadInput(f"{p}: no such flow file or folder")
    return out
