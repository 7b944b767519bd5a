"""Runs Metaflow finished that repro has not recorded yet.

Between Metaflow's ``Done!`` and the local record being saved, repro reads the run back (a second or
two): a repro killed then would lose a finished run. So as soon as Metaflow exits successfully, a
``PendingRun`` (what is needed to read the run back from Metaflow's datastore) is written atomically to
``REPRO_HOME/pending/<Flow>/<run id>.json``, and removed once the record is saved. ``repro recover``
records what is left (``pipeline.recover``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model import validate as v
from metaflow_repro.settings import Home

#: Metaflow variables that say where a run is (datastore, metadata, profile): kept with a pending run so
#: that it can be read back from another shell. Anything that looks like a credential is never kept.
_LOCATING = re.compile(r"^METAFLOW_[A-Z0-9_]+$")
_SECRET = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|AUTH|CREDENTIAL", re.IGNORECASE)

FORMAT = "repro.pending/1"


@dataclass(frozen=True)
class PendingRun:
    """A finished Metaflow run to record: where it is and how ``repro run`` started it."""

    path: str  # the flow file (absolute)
    flow: str  # its FlowSpec class name
    run_id: str
    elapsed: float  # seconds Metaflow ran
    lock_sha256: str  # the lock the run was built from: a run is recovered only against that lock
    store: str = ""  # where the record goes ("": the settings' store)
    metaflow_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # Metaflow's environment: where the run's data is
    identity: str = ""  # set for replays only (otherwise the run's own tags say it)
    cwd: str = ""  # the folder `repro run` ran in: relative config files (--config NAME FILE) are read there

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True)


def locating_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The variables that locate a run in Metaflow's datastore: ``METAFLOW_*`` of this process (no
    credentials) and every variable repro passed to the Metaflow process."""
    found = {k: v for k, v in os.environ.items() if _LOCATING.match(k) and not _SECRET.search(k)}
    out = {**found, **{k: v for k, v in extra.items() if not _SECRET.search(k)}}
    if "METAFLOW_DATASTORE_SYSROOT_LOCAL" not in out:  # Metaflow's local datastore: .metaflow above the cwd
        here = Path.cwd().resolve()
        for folder in (here, *here.parents):
            if (folder / ".metaflow").is_dir():
                out["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(folder)
                break
    return out


def path_of(home: Home, flow: str, run_id: str) -> Path:
    return (
        home.pending
        / v.name(flow, v.At("pending run", "flow"))
        / f"{v.name(run_id, v.At('pending run', 'run_id'))}.json"
    )


def save(home: Home, run: PendingRun) -> Path:
    path = path_of(home, run.flow, run.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, run.to_json())
    return path


def parse(text: str, where: str) -> PendingRun:
    """A pending run read back, validated like anything read from disk."""
    at = v.At(where)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise v.Invalid(at, text[:40], f"{where}: not a pending run ({exc}); delete it") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise v.Invalid(at, doc, f"{where}: not a pending run of this repro ({FORMAT}); delete it")
    env: Any = v.need(doc, "env", dict, at)
    args: Any = v.need(doc, "metaflow_args", list, at)
    return PendingRun(
        path=v.need(doc, "path", str, at),
        flow=v.identifier(v.need(doc, "flow", str, at), at / "flow"),
        run_id=v.name(v.need(doc, "run_id", str, at), at / "run_id"),
        elapsed=float(v.need(doc, "elapsed", (int, float), at)),
        lock_sha256=v.hex_digest(v.need(doc, "lock_sha256", str, at), 64, at / "lock_sha256"),
        store=v.need(doc, "store", str, at),
        metaflow_args=tuple(str(a) for a in args),
        env={str(k): str(x) for k, x in env.items()},
        identity=v.need(doc, "identity", str, at),
        cwd=v.opt(doc, "cwd", str, "", at),
    )


def pending(home: Home) -> list[Path]:
    """Every pending run's file, oldest first."""
    if not home.pending.is_dir():
        return []
    return sorted(home.pending.glob("*/*.json"), key=lambda p: (p.stat().st_mtime, str(p)))
