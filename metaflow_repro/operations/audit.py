"""`repro audit`: replay a selection of a store's recorded runs, N at a time (here, in containers, or each
as a replay on AWS Batch), and keep the results in the store (``audits/<sha256>.json``) so the next audit
can say which run that replayed identical no longer does.

Each run goes through the replay operation as `repro replay REF --on PLACE` does (``replay.replay``:
``load_request`` -> ``place.run`` -> ``judge``); the audit adds the choice of runs, the likely causes
(``model/audit``) and the comparison with the previous audits."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata

from metaflow_repro import __version__
from metaflow_repro.errors import BadInput, ReproError
from metaflow_repro.model import validate as v
from metaflow_repro.model.audit import (
    DIFFERENCES_MAX,
    MAX_AUDIT_BYTES,
    PREVIOUS_AUDITS,
    TEXT_MAX,
    Audit,
    AuditEntry,
    AuditVerdict,
    Difference,
    Selection,
    from_json,
    likely_causes,
    previous_verdicts,
    select,
    to_json,
)
from metaflow_repro.model.record import RunRecord
from metaflow_repro.operations.records import listing, open_named
from metaflow_repro.operations.replay import ReplayResult, ReplayVerdict, check_where, replay
from metaflow_repro.settings import Settings
from metaflow_repro.store import Store, layout
from metaflow_repro.store.base import StoreObjectMissing
from metaflow_repro.store.snapshot import StoreObjectCorrupt

Log = Callable[[str], None]
#: called as each replay ends: (runs done, runs in all, the entry)
Progress = Callable[[int, int, AuditEntry], None]


@dataclass(frozen=True)
class AuditOptions:
    selection: Selection = field(default_factory=Selection)
    on: str = "local"
    jobs: int = 1
    image: str | None = None


@dataclass(frozen=True)
class AuditRun:
    audit: Audit
    key: str  # where the audit was kept in the store
    broken: tuple[str, ...]  # records the store holds that could not be read (each with why)

    @property
    def exit_code(self) -> int:
        """1 when a run that replayed identical in the previous audit no longer does; else 3 when a replay
        could not be carried out (infrastructure, a record refused: see its error); else 0."""
        if self.audit.regressions:
            return 1
        return 3 if any(e.inconclusive for e in self.audit.entries) else 0


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _metaflow_version() -> str:
    try:
        return metadata.version("metaflow")
    except metadata.PackageNotFoundError:  # pragma: no cover - metaflow is a dependency
        return ""


def audit(
    settings: Settings,
    store_uri: str | None,
    options: AuditOptions,
    log: Log,
    progress: Progress | None = None,
) -> AuditRun:
    """Choose the runs, replay them ``options.jobs`` at a time, judge each against its record and its
    previous audit, and keep the audit in the store (written whole, under the sha256 of its bytes)."""
    if options.jobs < 1:
        raise BadInput(f"-j {options.jobs}: give 1 or more replays at a time")
    store = open_named(settings, store_uri)
    store.require_existing()
    check_where(options.on, store.uri, settings)  # before anything is replayed
    started = _now()
    found = listing(store)
    chosen, skipped = select(found.records, options.selection, started)
    if not chosen:
        raise BadInput(
            f"store {store.uri}: no recorded run matches {_described(options.selection)}"
            + (f" ({len(skipped)} matched but cannot be replayed: {v.cap(skipped, 5, '; ')})" if skipped else "")
        )
    earlier = previous_verdicts(load_audits(store))
    log(f"auditing {len(chosen)} run(s) of {store.uri} on {options.on}, {options.jobs} at a time")
    installed = _metaflow_version()
    entries = _replay_all(chosen, store, settings, options, installed, progress)
    entries = [_with_previous(e, earlier) for e in entries]
    done = Audit(
        started_at=started.isoformat(timespec="seconds"),
        finished_at=_now().isoformat(timespec="microseconds"),
        store=store.uri,
        on=options.on,
        repro_version=__version__,
        metaflow_version=installed,
        selection=options.selection,
        entries=tuple(sorted(entries, key=lambda e: (e.recorded_at, e.run))),
        skipped=tuple(skipped),
    )
    return AuditRun(done, save_audit(store, done), tuple(f"{key}: {why}" for key, why in found.broken))


def _described(selection: Selection) -> str:
    parts = [
        f"--flow {selection.flow}" if selection.flow else "",
        f"--since {selection.since}" if selection.since else "",
        f"--tag {selection.tag}" if selection.tag else "",
    ]
    return " ".join(p for p in parts if p) or "(the store holds no original runs)"


def _replay_all(
    chosen: list[RunRecord],
    store: Store,
    settings: Settings,
    options: AuditOptions,
    installed: str,
    progress: Progress | None,
) -> list[AuditEntry]:
    """``options.jobs`` at a time. On Batch the first run replays alone: it stages in the store the tools and
    environments the others share, which replays started together would each upload at once (Batch staging
    finds an object missing and puts it: the uv binary and an interpreter snapshot are tens of MB each). Here
    and in containers a build of the same env waits on its file lock instead, so nothing waits."""
    entries: list[AuditEntry] = []

    def finished(entry: AuditEntry) -> None:
        entries.append(entry)
        if progress is not None:
            progress(len(entries), len(chosen), entry)

    first, rest = (chosen[:1], chosen[1:]) if options.jobs > 1 and options.on == "batch" else ([], chosen)
    for record in first:
        finished(replay_one(record, store, settings, options, installed))
    if not rest:
        return entries
    with ThreadPoolExecutor(max_workers=min(options.jobs, len(rest))) as pool:
        running = [pool.submit(replay_one, r, store, settings, options, installed) for r in rest]
        for done in as_completed(running):
            finished(done.result())
    return entries


def replay_one(
    record: RunRecord, store: Store, settings: Settings, options: AuditOptions, installed: str
) -> AuditEntry:
    """One recorded run, replayed as `repro replay REF --on PLACE` does, as an audit entry. A replay that
    cannot run (bad input, infrastructure) is an entry with its error, never the end of the audit."""
    ref = f"{layout.flow_dir(record.flow, record.identity)}/{record.run_id}"
    lines: list[str] = []
    began = time.monotonic()
    entry = AuditEntry(ref, record.flow, record.run_id, record.created_at, AuditVerdict.FAILED)
    try:
        result = replay(ref, store.uri, settings, on=options.on, log=lines.append, image=options.image)
    except ReproError as exc:
        return replace(entry, error=_cut(str(exc)), inconclusive=True, seconds=round(time.monotonic() - began, 3))
    return replace(_judged(entry, record, result, installed), seconds=round(time.monotonic() - began, 3))


def _judged(entry: AuditEntry, record: RunRecord, result: ReplayResult, installed: str) -> AuditEntry:
    verdict = AuditVerdict(result.verdict.value)
    differing = [r for r in (result.comparison.results if result.comparison else ()) if r.verdict.value == "different"]
    differences = tuple(Difference(r.step, r.task, r.name, _cut(r.detail)) for r in differing[:DIFFERENCES_MAX])
    failure = result.failure
    error = ""
    if result.verdict is ReplayVerdict.FAILED and failure is not None:
        error = (f"step {failure.step} failed: " if failure.step else "") + failure.error
    replayed_metaflow = result.replayed.metaflow_version if result.replayed else ""
    return replace(
        entry,
        verdict=verdict,
        replay=result.replayed.ref if result.replayed else "",
        differences=differences,
        differences_count=len(differing),
        causes=likely_causes(record, verdict, differences, replayed_metaflow, installed),
        error=_cut(error),
    )


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 30] + f"... ({len(text) - TEXT_MAX + 30} more)"


def _with_previous(entry: AuditEntry, earlier: dict[str, tuple[str, str]]) -> AuditEntry:
    if entry.run not in earlier:
        return entry
    verdict, when = earlier[entry.run]
    return replace(entry, previous=verdict, previous_audit=when)


# -- audits in the store ---------------------------------------------------------------------------------


def save_audit(store: Store, done: Audit) -> str:
    """Keep ``done`` in the store under the sha256 of its bytes (one object, written whole: a local store
    writes a temporary name and renames it, S3 puts an object at once). Returns its key."""
    data = to_json(done).encode()
    key = layout.audit(hashlib.sha256(data).hexdigest())
    store.put_bytes(key, data)
    return key


def load_audits(store: Store, limit: int = PREVIOUS_AUDITS) -> list[Audit]:
    """The newest ``limit`` audits of the store, each checked: its bytes must hash to its key and decode
    as an audit (else ``StoreObjectCorrupt``, exit 3, naming the key). Keys of no audit shape are ignored."""
    infos = [i for i in store.list(layout.AUDITS) if layout.parse_as(i.key, layout.Kind.AUDIT)]
    audits = []
    for info in sorted(infos, key=lambda i: i.modified, reverse=True)[:limit]:
        if info.size > MAX_AUDIT_BYTES:  # never downloaded: no audit repro writes is that large
            raise StoreObjectCorrupt(
                f"store object {store.uri}/{info.key} is corrupt: {info.size} bytes, more than an audit's "
                f"{MAX_AUDIT_BYTES}; delete it"
            )
        try:
            audits.append(read_audit(store, info.key))
        except StoreObjectMissing:
            continue  # deleted since it was listed
    return audits


def read_audit(store: Store, key: str) -> Audit:
    parsed = layout.parse_as(key, layout.Kind.AUDIT)
    if parsed is None:
        raise BadInput(f"{key} is not an audit's key ({layout.audit('<sha256>')})")
    where = f"{store.uri}/{key}"
    data = store.get_bytes(key)
    if hashlib.sha256(data).hexdigest() != parsed.digest:
        raise StoreObjectCorrupt(
            f"store object {where} is corrupt: its bytes do not match the sha256 its key names; "
            "delete it (the next audit then compares with the audit before it)"
        )
    try:
        return from_json(data, where)
    except BadInput as exc:
        raise StoreObjectCorrupt(f"store object {where} is corrupt: {exc}") from None
