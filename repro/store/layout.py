"""Object keys in a store (DESIGN.md "Store layout"). Pure."""

from __future__ import annotations

import re

from repro.errors import BadInput

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def package(sha256: str, filename: str) -> str:
    return f"packages/sha256/{sha256[:2]}/{sha256}/{filename}"


def lock(env_id: str) -> str:
    return f"locks/{env_id}.toml"


def code(sha256: str) -> str:
    return f"code/{sha256}.tar.gz"


def artifact(sha1: str) -> str:
    return f"artifacts/sha1/{sha1[:2]}/{sha1}"


def input_blob(sha256: str) -> str:
    """An input a run read (an IncludeFile's bytes), by the sha256 of its contents."""
    return f"inputs/sha256/{sha256[:2]}/{sha256}"


def _safe(part: str, what: str) -> str:
    if not _SAFE.match(part or ""):
        raise BadInput(f"{what} {part!r} may only contain letters, digits, '_', '-' and '.'")
    return part


def record(flow: str, run_id: str) -> str:
    return f"runs/{_safe(flow, 'flow name')}/{_safe(run_id, 'run id')}/record.json"


def latest(flow: str) -> str:
    return f"runs/{_safe(flow, 'flow name')}/latest"
