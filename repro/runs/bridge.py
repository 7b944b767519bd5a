"""What repro's Metaflow extension asks of repro, on the host, before any task starts."""

from __future__ import annotations

import os
from pathlib import Path

from repro.settings import load_settings
from repro.env.engine import Log, build_flow, flow_from_class


def prepare(flow_cls, flow_file: str, s3_datastore: bool, log: Log) -> tuple[dict, dict]:
    """Lock (or reuse the committed lock) and build every step's environment.

    Returns ({step: {"python", "env_id", "spec_id", "pycache_prefix"} or None if disabled},
    {"code": folder for extracted code packages}).
    ``REPRO_FROZEN=1`` turns a stale lock into an error instead of a re-lock (for CI).
    """
    path = Path(flow_file)
    frozen = _flag("REPRO_FROZEN")
    offline = _flag("REPRO_OFFLINE")  # replays: build from the package cache only
    settings = load_settings(path)
    flow = flow_from_class(flow_cls, path, settings, s3_datastore=s3_datastore)
    built = build_flow(flow, frozen=frozen or offline, offline=offline, log=log)
    out = {}
    for step, env in built.items():
        if env is None:
            out[step] = None
            continue
        python = flow.lock.steps[step].platforms[env.platform].python
        out[step] = {
            "python": str(env.python),
            "env_id": env.env_id,
            "spec_id": flow.specs[step].spec_id,
            # PYTHONPYCACHEPREFIX exists from 3.8 on; 3.7 keeps the user's bytecode setting
            "pycache_prefix": str(settings.home / "pycache") if _minor(python) >= (3, 8) else "",
        }
    return out, {"code": str(settings.home / "code")}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)
