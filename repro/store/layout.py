"""Object keys in a store (the table: docs/architecture.md, "Store layout"). Pure."""

from __future__ import annotations

import re

from repro.errors import BadInput

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: a flow's folder under runs/: its class name (records of version 1) or its identity key
FLOW_DIR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(@[A-Za-z0-9_.~@\-]+)?$")


def package(sha256: str, filename: str) -> str:
    return f"packages/sha256/{sha256[:2]}/{sha256}/{filename}"


def lock(env_id: str) -> str:
    return f"locks/{env_id}.toml"


def code(sha256: str) -> str:
    return f"code/{sha256}.tar.gz"


def python_snapshot(sha256: str) -> str:
    """An interpreter snapshot (its install prefix, without site-packages), by the tarball's sha256."""
    return f"pythons/{sha256}.tar.gz"


def python_manifest(sha256: str) -> str:
    """The snapshot's manifest (version, prefix, executable, fingerprint) beside it."""
    return f"pythons/{sha256}.json"


def artifact(sha1: str) -> str:
    return f"artifacts/sha1/{sha1[:2]}/{sha1}"


def input_blob(sha256: str) -> str:
    """An input a run read (an IncludeFile's bytes), by the sha256 of its contents."""
    return f"inputs/sha256/{sha256[:2]}/{sha256}"


def input_artifact(sha1: str) -> str:
    """An artifact of another flow's run that a step read (input lineage), by Metaflow's sha1 of its pickle."""
    return f"inputs/sha1/{sha1[:2]}/{sha1}"


def _safe(part: str, what: str) -> str:
    if not _SAFE.match(part or ""):
        raise BadInput(f"{what} {part!r} may only contain letters, digits, '_', '-' and '.'")
    return part


def identity_key(identity: str) -> str:
    """The folder of a flow identity under runs/: ``PlayListFlow:flows/a.py`` -> ``PlayListFlow@flows~a.py``,
    ``F:@proj/main`` -> ``F@@proj~main``."""
    cls, _, where = identity.partition(":")
    return f"{cls}@" + re.sub(r"[^A-Za-z0-9_.~@\-]", "_", where.replace("/", "~"))


def flow_dir(flow: str, identity: str = "") -> str:
    """Where a run's record goes: per identity (a class name alone for version 1 records)."""
    return identity_key(identity) if identity else flow


def _flow(name: str) -> str:
    if not FLOW_DIR.match(name or ""):
        raise BadInput(f"flow {name!r} is neither a flow class name nor a flow identity (Class@path~of~flow.py)")
    return name


def record(flow: str, run_id: str) -> str:
    """``flow``: a ``flow_dir`` (identity key, or class name)."""
    return f"runs/{_flow(flow)}/{_safe(run_id, 'run id')}/record.json"


def latest(flow: str) -> str:
    return f"runs/{_flow(flow)}/latest"
