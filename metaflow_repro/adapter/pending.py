"""Runs ``repro run`` started that are not recorded and pushed yet: a marker per run, so that a repro
killed at any moment loses no finished run and leaves no half record behind.

The marker (``REPRO_HOME/pending/<Flow>/<token>.json``, written atomically) goes through three states:

- ``started``: written before Metaflow starts. Metaflow writes the run id beside it
  (``<token>.run-id``) as soon as the run starts. Metaflow's processes die with repro
  (``procgroup``), so a run whose repro is gone either finished before that or never will.
- ``finished``: the instant Metaflow exits with 0; the run id and its duration.
- ``recorded``: the record is saved in ``REPRO_HOME/records`` with every check, and not pushed yet.

It is removed once the run is pushed (or when the run failed: a failed run is not pushed). The record is
saved only whole (pickle checks, interpreter snapshots): a repro stopped before that saves none, and
``repro recover`` (``operations.run.recover``) makes it from the marker. A marker whose owner (the
``repro`` process that wrote it, ``scratch.Owner``) is alive belongs to a run in progress and is left
alone; so is one whose owner runs on another machine or in another container (a shared REPRO_HOME),
until it is a week old (``scratch.FOREIGN_MAX_AGE``). A marker names the folder Metaflow ran in
(``ran_in``): without ``METAFLOW_DATASTORE_SYSROOT_LOCAL``, the run's datastore is the nearest
``.metaflow`` above it (``locate``), which Metaflow may only make once the marker is written.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from metaflow_repro.adapter.scratch import CHILD_VARS, Owner, me
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model import validate as v
from metaflow_repro.settings import Home

#: Metaflow variables that say where a run is (datastore, metadata, profile): kept with a pending run so
#: that it can be read back from another shell. Anything that looks like a credential is never kept.
_LOCATING = re.compile(r"^METAFLOW_[A-Z0-9_]+$")
_SECRET = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|AUTH|CREDENTIAL", re.IGNORECASE)

FORMAT = "repro.pending/1"

STARTED, FINISHED, RECORDED = "started", "finished", "recorded"
STATES = (STARTED, FINISHED, RECORDED)


@dataclass(frozen=True)
class PendingRun:
    """A finished Metaflow run to record: where it is and how ``repro run`` started it."""

    path: str  # the flow file (absolute)
    flow: str  # its FlowSpec class name
    run_id: str  # "" while started (Metaflow writes it to the run-id file beside the marker)
    elapsed: float  # seconds Metaflow ran (0 while started)
    lock_sha256: str  # the lock the run was built from: a run is recovered only against that lock
    store: str = ""  # where the record goes ("": the settings' store)
    metaflow_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # Metaflow's environment: where the run's data is
    identity: str = ""  # set for replays only (otherwise the run's own tags say it)
    cwd: str = ""  # the folder `repro run` ran in: relative config files (--config NAME FILE) are read there
    ran_in: str = ""  # the folder Metaflow ran in (its local datastore: the nearest .metaflow above it)
    state: str = FINISHED  # STARTED, FINISHED or RECORDED (files written before states were all finished)
    owner: str = ""  # the repro process that wrote it (scratch.Owner); "": none known
    move_latest: bool = True  # the push moves the flow's `latest` (pytest --repro-on pushes without)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True)

    def alive(self, written: float | None = None) -> bool:
        """Whether the repro that wrote it still runs (then the run is in progress, not lost).
        ``written``: the marker's mtime; a repro on another machine or in another container is taken
        as running until its marker is older than ``scratch.FOREIGN_MAX_AGE``."""
        owner = Owner.parse(self.owner)
        return owner is not None and owner.alive(written)


#: where Metaflow's local datastore (and local metadata) is; unset: the nearest .metaflow above its folder
SYSROOT_LOCAL = "METAFLOW_DATASTORE_SYSROOT_LOCAL"


def locating_env(extra: Mapping[str, str], ran_in: Path) -> dict[str, str]:
    """The variables that locate a run in Metaflow's datastore: ``METAFLOW_*`` of this process (no
    credentials) and every variable repro passed to the Metaflow process, which runs in ``ran_in``."""
    found = {k: v for k, v in os.environ.items() if _LOCATING.match(k) and not _SECRET.search(k)}
    out = {**found, **{k: v for k, v in extra.items() if not _SECRET.search(k)}}
    for name in CHILD_VARS:  # this process's temporary folder, gone with it
        out.pop(name, None)
    return with_sysroot(out, ran_in)


def with_sysroot(env: Mapping[str, str], ran_in: Path | str) -> dict[str, str]:
    """``env`` and, when it does not name Metaflow's local datastore, the one Metaflow found from the
    folder it ran in (``ran_in``): the nearest ``.metaflow`` above it. Before the run there may be none
    yet (Metaflow makes it): ``locate`` finds it again once the run is over."""
    out = dict(env)
    if SYSROOT_LOCAL in out or not ran_in:
        return out
    here = Path(ran_in).resolve()
    for folder in (here, *here.parents):
        if (folder / ".metaflow").is_dir():
            out[SYSROOT_LOCAL] = str(folder)
            break
    return out


def locate(run: PendingRun) -> PendingRun:
    """``run`` with the local datastore Metaflow used in its ``env`` (from the folder it ran in: an
    older marker's is ``cwd``), so that it reads back from any folder."""
    return replace(run, env=with_sysroot(run.env, run.ran_in or run.cwd))


def path_of(home: Home, flow: str, token: str) -> Path:
    return (
        home.pending
        / v.name(flow, v.At("pending run", "flow"))
        / f"{v.name(token, v.At('pending run', 'file name'))}.json"
    )


def run_id_file(marker: Path) -> Path:
    """Where Metaflow writes the run id of the run ``marker`` is for (``--run-id-file``)."""
    return marker.with_suffix(".run-id")


def start(home: Home, run: PendingRun) -> Path:
    """The marker of a run about to start, owned by this process; its path."""
    path = path_of(home, run.flow, uuid.uuid4().hex)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, replace(run, state=STARTED, owner=str(me())).to_json())
    return path


def save(home: Home, run: PendingRun) -> Path:
    """A marker for ``run`` as it is (tests, and markers of older repros); its path."""
    path = path_of(home, run.flow, run.run_id or uuid.uuid4().hex)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, run.to_json())
    return path


def update(marker: Path, run: PendingRun) -> None:
    atomic_write(marker, run.to_json())


def remove(marker: Path) -> None:
    marker.unlink(missing_ok=True)
    run_id_file(marker).unlink(missing_ok=True)


def started_run_id(marker: Path) -> str:
    """The run id Metaflow wrote beside a started marker; "": the run never started."""
    try:
        text = run_id_file(marker).read_text().strip()
    except OSError:
        return ""
    return v.name(text, v.At(str(run_id_file(marker)), "run id")) if text else ""


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
        run_id=_run_id(doc, at),
        elapsed=float(v.need(doc, "elapsed", (int, float), at)),
        lock_sha256=v.hex_digest(v.need(doc, "lock_sha256", str, at), 64, at / "lock_sha256"),
        store=v.need(doc, "store", str, at),
        metaflow_args=tuple(str(a) for a in args),
        env={str(k): str(x) for k, x in env.items()},
        identity=v.need(doc, "identity", str, at),
        cwd=v.opt(doc, "cwd", str, "", at),
        ran_in=v.opt(doc, "ran_in", str, "", at),
        state=_state(v.opt(doc, "state", str, FINISHED, at), at / "state"),
        owner=v.opt(doc, "owner", str, "", at),
        move_latest=v.opt(doc, "move_latest", bool, True, at),
    )


def _state(value: str, at: v.At) -> str:
    if value not in STATES:
        at.fail(value, "one of " + ", ".join(STATES))
    return value


def _run_id(doc: dict, at: v.At) -> str:
    run_id = v.need(doc, "run_id", str, at)
    if run_id == "" and doc.get("state") == STARTED:
        return ""
    return v.name(run_id, at / "run_id")


def pending(home: Home) -> list[Path]:
    """Every pending run's file, oldest first."""
    if not home.pending.is_dir():
        return []
    found = []
    for path in home.pending.glob("*/*.json"):
        try:
            found.append((path.stat().st_mtime, str(path), path))
        except FileNotFoundError:  # removed meanwhile by the repro that wrote it
            continue
    return [path for _, _, path in sorted(found)]


def written(marker: Path) -> float | None:
    """When ``marker`` was last written (None: it is gone)."""
    try:
        return marker.stat().st_mtime
    except OSError:
        return None


def markers_of(home: Home, flow: str, run_id: str) -> list[Path]:
    """The markers of run ``flow/run_id`` (found by what they say, not by name)."""
    folder = home.pending / v.name(flow, v.At("pending run", "flow"))
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            if json.loads(path.read_text()).get("run_id") == run_id:
                out.append(path)
        except (OSError, ValueError, AttributeError):
            continue
    return out


def waiting(home: Home) -> dict[str, int]:
    """How many runs wait for ``repro recover``, by state (markers of a repro still running left out;
    a marker that cannot be read counts as finished: recover says what is wrong with it)."""
    counts = {state: 0 for state in STATES}
    for path in pending(home):
        try:
            run = parse(path.read_text(), str(path))
        except FileNotFoundError:  # removed meanwhile: its run is done
            continue
        except (OSError, v.Invalid):
            counts[FINISHED] += 1
            continue
        if not run.alive(written(path)):
            counts[run.state] += 1
    return counts
