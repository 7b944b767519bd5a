"""An audit of a store's history (``repro audit``): which recorded runs were replayed, each one's verdict,
what differed and the likely cause, as a versioned JSON document kept in the store (``audits/``) so the
next audit can compare. Pure: choosing runs, naming causes, finding regressions, and the document's codec
(an audit read back from a store is untrusted input: every field is checked).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from metaflow_repro.errors import BadInput
from metaflow_repro.model import validate as v
from metaflow_repro.model.findings import Choice
from metaflow_repro.model.record import RunRecord, RunStatus, replay_problems

SCHEMA = "repro.audit"
SCHEMA_VERSION = 1
#: the largest audit document read back (a history of many thousand runs stays far below it)
MAX_AUDIT_BYTES = 64 << 20
#: how many earlier audits are read to find each run's last verdict (newest first)
PREVIOUS_AUDITS = 50
#: how many differing artifacts one entry keeps (the count is kept too)
DIFFERENCES_MAX = 50
#: the longest text one field keeps (an error, a comparator's detail)
TEXT_MAX = 2000


class AuditVerdict(Choice):
    """A replayed run's verdict, as ``repro replay`` says it."""

    IDENTICAL = "identical"
    EQUIVALENT = "equivalent"
    DIFFERENT = "different"
    FAILED = "replay failed"


@dataclass(frozen=True)
class Difference:
    """One artifact that differs between the recorded run and its replay."""

    step: str
    task: str  # the foreach index path ("-" outside any foreach)
    artifact: str
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.step}/{self.task}.{self.artifact}"  # end/-.y, as `repro replay` names it
        return f"{where}: {self.detail}" if self.detail else where


@dataclass(frozen=True)
class AuditEntry:
    """One recorded run, replayed."""

    run: str  # the run's REF in the store: <flow folder>/<run id>
    flow: str
    run_id: str
    recorded_at: str  # the recorded run's created_at (ISO 8601, UTC)
    verdict: AuditVerdict
    replay: str = ""  # the replay's record (FlowName/run_id); "" when none was written
    differences: tuple[Difference, ...] = ()
    differences_count: int = 0  # how many differ in all (``differences`` keeps the first DIFFERENCES_MAX)
    causes: tuple[str, ...] = ()  # the likely causes, most likely first
    error: str = ""  # why the replay failed
    #: the replay could not be carried out (no daemon, a store unreachable, a record refused): it says nothing
    #: of the run, so it is never a regression and never the verdict a later audit compares with
    inconclusive: bool = False
    previous: str = ""  # its verdict in the newest earlier audit that replayed it ("" none did)
    previous_audit: str = ""  # when that audit finished
    seconds: float = 0.0

    @property
    def regressed(self) -> bool:
        """It replayed identical in the previous audit and does no longer."""
        return (
            not self.inconclusive
            and self.previous == AuditVerdict.IDENTICAL.value
            and self.verdict is not AuditVerdict.IDENTICAL
        )


@dataclass(frozen=True)
class Selection:
    """Which recorded runs an audit replays (``repro audit``'s options)."""

    flow: str = ""  # a flow class name or identity ("" all)
    since: str = ""  # "90d", "12h", "2w" ("" all)
    tag: str = ""  # a Metaflow tag the run was started with (--tag)
    sample: int = 0  # at most this many, chosen at random (0 all)
    seed: str = ""  # the sample's seed (default: the audit's day, so each night samples anew)


@dataclass(frozen=True)
class Audit:
    started_at: str
    finished_at: str
    store: str
    on: str
    repro_version: str
    metaflow_version: str  # the Metaflow installed beside the repro that audited
    selection: Selection = field(default_factory=Selection)
    entries: tuple[AuditEntry, ...] = ()
    skipped: tuple[str, ...] = ()  # runs selected but not replayable, each with why

    @property
    def regressions(self) -> list[AuditEntry]:
        return [e for e in self.entries if e.regressed]

    def counts(self) -> dict[str, int]:
        """How many runs ended with each verdict (every verdict named, zeros too)."""
        return {verdict.value: sum(1 for e in self.entries if e.verdict is verdict) for verdict in AuditVerdict}


# -- choosing runs -----------------------------------------------------------------------------------

_SINCE = re.compile(r"^([1-9][0-9]{0,5})([hdw])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """``90d`` (days), ``12h`` (hours), ``2w`` (weeks)."""
    m = _SINCE.fullmatch(text or "")
    if m is None:
        raise BadInput(f"--since {text!r}: give a number and a unit, e.g. 90d (days), 12h (hours) or 2w (weeks)")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def recorded_time(record: RunRecord) -> datetime | None:
    """When the run was recorded (its ``created_at``, UTC); None when the record has no readable time."""
    try:
        when = datetime.fromisoformat(record.created_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def run_tags(record: RunRecord) -> set[str]:
    """The tags the run was started with (``--tag T`` / ``--tag=T`` among its recorded run options)."""
    options, tags = list(record.run_options), set()
    for i, option in enumerate(options):
        if option == "--tag" and i + 1 < len(options):
            tags.add(options[i + 1])
        elif option.startswith("--tag="):
            tags.add(option.split("=", 1)[1])
    return tags


def _why_not(record: RunRecord, selection: Selection, cutoff: datetime | None) -> str | None:
    """Why ``record`` is not audited: a str names a run that matched but cannot be replayed; None: it is audited.
    Raises ``LookupError`` for a run the selection does not name (not mentioned)."""
    if record.replay_of:  # a replay is judged against its original, never replayed in turn
        raise LookupError
    if selection.flow and selection.flow not in (record.flow, record.identity):
        raise LookupError
    if selection.tag and selection.tag not in run_tags(record):
        raise LookupError
    when = recorded_time(record)
    if cutoff is not None and (when is None or when < cutoff):
        raise LookupError
    if record.status is not RunStatus.SUCCESS:
        return f"{record.ref}: the recorded run failed; only successful runs are audited"
    problems = replay_problems(record)
    return f"{record.ref}: cannot be replayed: {'; '.join(problems)}" if problems else None


def select(records: Iterable[RunRecord], selection: Selection, now: datetime) -> tuple[list[RunRecord], list[str]]:
    """The original runs (never replays) ``selection`` names, oldest first, and those it names that
    cannot be replayed (each with why). ``--sample K`` keeps K of them chosen with a seeded random, so an
    audit is repeatable: the same seed and history choose the same runs."""
    cutoff = now - parse_since(selection.since) if selection.since else None
    chosen, skipped = [], []
    for record in records:
        try:
            why = _why_not(record, selection, cutoff)
        except LookupError:
            continue
        if why is None:
            chosen.append(record)
        else:
            skipped.append(why)
    chosen.sort(key=lambda r: (r.created_at, r.flow, r.run_id))
    if selection.sample and len(chosen) > selection.sample:
        seed = selection.seed or now.strftime("%Y-%m-%d")
        picked = set(random.Random(seed).sample(range(len(chosen)), selection.sample))
        chosen = [r for i, r in enumerate(chosen) if i in picked]
    return chosen, skipped


# -- why a replay differs ----------------------------------------------------------------------------


def _outside_reads(record: RunRecord, steps: set[str]) -> list[str]:
    """What the record says the differing steps read outside the snapshot and the hosts they contacted
    (``reads``, schema 5; none in older records)."""
    found = []
    for step, reads in sorted(record.reads.items()):
        if step not in steps:
            continue
        if reads.unwatched:
            found.append(f"{step}: its reads were not watched at record time, so what it read is unknown")
            continue
        if reads.files:
            more = reads.files_count - len(reads.files)
            listed = v.cap(reads.files, 5) + (f" and {more} more" if more > 0 else "")
            found.append(f"{step} read files outside the snapshot when recorded ({listed}); a replay reads them anew")
        if hosts := reads.all_hosts():
            more = reads.hosts_count + reads.loopback_count - len(hosts)
            listed = v.cap(hosts, 5) + (f" and {more} more" if more > 0 else "")
            found.append(f"{step} contacted {listed} when recorded; a replay contacts them anew")
    return found


def _seen_nondeterministic(record: RunRecord, differences: Sequence[Difference]) -> list[str]:
    """The differing artifacts the record says were nondeterministic already (``nondeterministic``:
    step -> artifacts, written by ``repro check --repeat``; absent from older records)."""
    known = record.nondeterministic
    hits = sorted({f"{d.step}.{d.artifact}" for d in differences if d.artifact in set(known.get(d.step, ()))})
    return [f"{hit} was already nondeterministic when recorded (repro check --repeat)" for hit in hits]


def likely_causes(
    record: RunRecord,
    verdict: AuditVerdict,
    differences: Sequence[Difference],
    replayed_metaflow: str,
    installed_metaflow: str,
) -> tuple[str, ...]:
    """The likely causes of a replay that is not identical, most likely first, from what the record says:
    outside reads, nondeterminism seen at record time, another Metaflow release. Empty for an identical one."""
    if verdict is AuditVerdict.IDENTICAL:
        return ()
    causes = _seen_nondeterministic(record, differences)
    causes += _outside_reads(record, {d.step for d in differences} or set(record.steps))
    if replayed_metaflow and replayed_metaflow != record.metaflow_version:
        causes.append(f"the replay ran on Metaflow {replayed_metaflow}, the run on {record.metaflow_version}")
    elif installed_metaflow and installed_metaflow != record.metaflow_version:
        causes.append(
            f"recorded under Metaflow {record.metaflow_version}; this machine has {installed_metaflow} "
            "(a replay runs the recorded release from the code package, but the host side is this one)"
        )
    if verdict is AuditVerdict.DIFFERENT and not causes:
        differing = {d.step for d in differences}
        steps = [s for s in (record.step_order or tuple(record.steps)) if s in differing] or sorted(differing)
        causes.append(
            f"nothing recorded explains it: step(s) {', '.join(steps)} may read something the snapshot does not "
            "hold (a file, an environment variable, the clock, an unseeded random generator); "
            "`repro check FLOW --repeat 2` tells nondeterminism apart"
        )
    return tuple(causes)


def previous_verdicts(audits: Iterable[Audit]) -> dict[str, tuple[str, str]]:
    """run REF -> (its verdict, when that audit finished) in the newest audit that replayed it conclusively
    (a replay that could not be carried out says nothing of the run)."""
    found: dict[str, tuple[str, str]] = {}
    for audit in sorted(audits, key=lambda a: a.finished_at, reverse=True):
        for entry in audit.entries:
            if not entry.inconclusive:
                found.setdefault(entry.run, (entry.verdict.value, audit.finished_at))
    return found


# -- the document --------------------------------------------------------------------------------------


def to_dict(audit: Audit) -> dict[str, Any]:
    doc = asdict(audit)
    for entry in doc["entries"]:
        entry["verdict"] = str(entry["verdict"])
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **doc}


def to_json(audit: Audit) -> str:
    return json.dumps(to_dict(audit), indent=1, sort_keys=True) + "\n"


_AUDIT_KEYS = frozenset(
    {"schema", "schema_version", "started_at", "finished_at", "store", "on", "repro_version", "metaflow_version"}
    | {"selection", "entries", "skipped"}
)
_ENTRY_KEYS = frozenset(
    {"run", "flow", "run_id", "recorded_at", "verdict", "replay", "differences", "differences_count", "causes"}
    | {"error", "inconclusive", "previous", "previous_audit", "seconds"}
)
_SELECTION_KEYS = frozenset({"flow", "since", "tag", "sample", "seed"})
_DIFFERENCE_KEYS = frozenset({"step", "task", "artifact", "detail"})
_RUN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(@[A-Za-z0-9_.~@\-]+)?/[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def _text(value: Any, at: v.At) -> str:
    text = v.string(value, at)
    if len(text) > TEXT_MAX:
        at.fail(f"{len(text)} characters", f"at most {TEXT_MAX} characters")
    return text


def _artifact(value: str, at: v.At) -> str:
    """An artifact's name, or "*": a whole task or step that differed (one that ran in only one run)."""
    return value if value == "*" else v.name(value, at)


def _difference(d: Any, at: v.At) -> Difference:
    v.only(v.of_type(d, dict, at), _DIFFERENCE_KEYS, at)
    return Difference(
        step=v.identifier(v.need(d, "step", str, at), at / "step"),
        task=_text(v.need(d, "task", str, at), at / "task"),
        artifact=_artifact(v.need(d, "artifact", str, at), at / "artifact"),
        detail=_text(v.opt(d, "detail", str, "", at), at / "detail"),
    )


def _count(value: Any, at: v.At) -> int:
    n: int = v.of_type(value, int, at)
    if n < 0:
        at.fail(n, "a count (0 or more)")
    return n


def _entry(d: Any, at: v.At) -> AuditEntry:
    v.only(v.of_type(d, dict, at), _ENTRY_KEYS, at)
    seconds = v.opt(d, "seconds", float, 0.0, at)
    if seconds < 0:
        (at / "seconds").fail(seconds, "a duration (0 or more)")
    return AuditEntry(
        run=v.matching(v.need(d, "run", str, at), _RUN, "a run REF (<flow folder>/<run id>)", at / "run"),
        flow=v.identifier(v.need(d, "flow", str, at), at / "flow"),
        run_id=v.name(v.need(d, "run_id", str, at), at / "run_id"),
        recorded_at=_text(v.opt(d, "recorded_at", str, "", at), at / "recorded_at"),
        verdict=v.choice(v.need(d, "verdict", str, at), AuditVerdict, at / "verdict"),
        replay=_text(v.opt(d, "replay", str, "", at), at / "replay"),
        differences=tuple(v.list_of(v.opt(d, "differences", list, [], at), at / "differences", _difference)),
        differences_count=_count(v.opt(d, "differences_count", int, 0, at), at / "differences_count"),
        causes=tuple(v.list_of(v.opt(d, "causes", list, [], at), at / "causes", _text)),
        error=_text(v.opt(d, "error", str, "", at), at / "error"),
        inconclusive=v.opt(d, "inconclusive", bool, False, at),
        previous=_previous(v.opt(d, "previous", str, "", at), at / "previous"),
        previous_audit=_text(v.opt(d, "previous_audit", str, "", at), at / "previous_audit"),
        seconds=float(seconds),
    )


def _previous(value: str, at: v.At) -> str:
    return v.choice(value, AuditVerdict, at).value if value else ""


def _selection(d: Any, at: v.At) -> Selection:
    v.only(v.of_type(d, dict, at), _SELECTION_KEYS, at)
    return Selection(
        flow=_text(v.opt(d, "flow", str, "", at), at / "flow"),
        since=_text(v.opt(d, "since", str, "", at), at / "since"),
        tag=_text(v.opt(d, "tag", str, "", at), at / "tag"),
        sample=_count(v.opt(d, "sample", int, 0, at), at / "sample"),
        seed=_text(v.opt(d, "seed", str, "", at), at / "seed"),
    )


def from_json(data: str | bytes, where: str) -> Audit:
    """Decode and check an audit document (untrusted: read back from a store). ``BadInput`` names
    ``where``, the field and the bad value."""
    at = v.At(where)
    doc = v.load_json(data, at, "an audit document", max_bytes=MAX_AUDIT_BYTES)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BadInput(
            f"{where}: not a repro audit (schema is {doc.get('schema') if isinstance(doc, dict) else None!r})"
        )
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise BadInput(f"{where}: audit schema version {version!r} is not one this repro reads (1..{SCHEMA_VERSION})")
    v.only(doc, _AUDIT_KEYS, at)
    return Audit(
        started_at=_text(v.need(doc, "started_at", str, at), at / "started_at"),
        finished_at=_text(v.need(doc, "finished_at", str, at), at / "finished_at"),
        store=_text(v.need(doc, "store", str, at), at / "store"),
        on=_text(v.need(doc, "on", str, at), at / "on"),
        repro_version=_text(v.opt(doc, "repro_version", str, "", at), at / "repro_version"),
        metaflow_version=_text(v.opt(doc, "metaflow_version", str, "", at), at / "metaflow_version"),
        selection=_selection(v.opt(doc, "selection", dict, {}, at), at / "selection"),
        entries=tuple(v.list_of(v.need(doc, "entries", list, at), at / "entries", _entry)),
        skipped=tuple(v.list_of(v.opt(doc, "skipped", list, [], at), at / "skipped", _text)),
    )
