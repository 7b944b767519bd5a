"""The report document: typed, versioned, and the single source of its JSON schema.

``build_flow`` turns a run (record, lock, findings, comparison) into a ``FlowReport``;
``json_schema()`` derives the JSON schema from these dataclasses, and the committed
``report.schema.json`` is checked against it by a test (``python -m metaflow_repro.report.document``
rewrites it). Pure: no disk, no network.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from metaflow_extensions.repro.plugins.protocol import DISABLED
from metaflow_repro.checks.compare import Comparison, Verdict
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.findings import DRIFT_KINDS, Choice, Finding, Kind, select
from metaflow_repro.model.outcomes import caught_message, not_taken, not_taken_reason, switch_taken
from metaflow_repro.model.record import PickleCheck, PickleStatus, RunStatus, StepReads

if typing.TYPE_CHECKING:
    from metaflow_repro.checks.compare import ReplayCheck

SCHEMA = "metaflow_repro.report"
SCHEMA_VERSION = 1


class StepOutcome(Choice):
    PASSED = "passed"
    FAILED = "failed"
    #: never started: an earlier step failed, or a switch took another branch (the message says which)
    NOT_RUN = "not run"
    #: the step raised and ``@catch`` handled it: the run went on (the message names the exception)
    CAUGHT = "caught"
    #: failed, as the test run expects (a strict xfail, e.g. scenarios/expected.toml)
    EXPECTED_FAILURE = "expected failure"


class FlowStatus(Choice):
    PASSED = "passed"
    FAILED = "failed"
    #: something failed, and every failure was expected
    EXPECTED_FAILURE = "expected failure"


@dataclass(frozen=True)
class ArtifactCounts:
    identical: int = 0
    equivalent: int = 0
    different: int = 0


@dataclass(frozen=True)
class PickleCounts:
    ok: int = 0
    warning: int = 0
    fails: int = 0


@dataclass(frozen=True)
class StepReport:
    step: str
    env_id: str = field(metadata={"description": "sha256 of the resolved set, or 'disabled'"})
    python: str = field(metadata={"description": "the exact interpreter version of the step's environment"})
    packages: int = field(metadata={"description": "packages in the step's environment, stated and transitive"})
    tasks: int
    fingerprints: list[str]
    outcome: StepOutcome
    message: str
    artifacts: ArtifactCounts | None = field(metadata={"description": "against the baseline; null without one"})
    pickle: PickleCounts = field(
        metadata={"description": "checks of the artifacts this step writes, each in every environment that reads it"}
    )


@dataclass(frozen=True)
class PickleRow:
    step: str
    task: str
    artifact: str
    reader_env: str
    reader_steps: list[str]
    status: PickleStatus
    detail: str
    static: str

    @property
    def problem(self) -> bool:
        """Whether the reader cannot load the artifact, or loads it with other module versions."""
        return self.status is not PickleStatus.OK

    @property
    def internal(self) -> bool:
        """Metaflow's own artifacts: checked like any other, not shown to people."""
        from metaflow_repro.checks.pickles import is_internal

        return is_internal(self.artifact)


@dataclass(frozen=True)
class ArtifactRow:
    step: str
    task: str
    name: str
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class BaselineReport:
    ref: str
    same: bool
    results: list[ArtifactRow]
    code_changed: bool = field(
        default=False,
        metadata={"description": "the baseline ran other code: its code package differs from this run's"},
    )
    code: str | None = field(
        default=None, metadata={"description": "sha256 of the baseline's code package; null if unknown"}
    )

    def changes(self) -> list[ArtifactRow]:
        """The artifacts that are not identical to the baseline's (equivalent or different)."""
        return [r for r in self.results if r.verdict is not Verdict.IDENTICAL]


@dataclass(frozen=True)
class DriftReport:
    spec: list[str]
    resolution: list[str]
    runtime: list[str]
    against: list[str]
    input: list[str] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.spec or self.resolution or self.runtime or self.against or self.input)

    def lines(self) -> list[tuple[str, str]]:
        """Every drift line with its kind (the field it stands in), kind by kind."""
        return [(f.name, line) for f in dataclasses.fields(self) for line in getattr(self, f.name)]


@dataclass(frozen=True)
class ReplayReport:
    on: str = field(metadata={"description": "where the run was also replayed from the store: docker or batch"})
    executor: str | None = field(
        metadata={"description": "where the replay's record says it ran (local, docker, batch); null if it did not run"}
    )
    image: str = field(metadata={"description": "the container image the replay ran in (an image id or name), or ''"})
    run: str | None = field(metadata={"description": "FlowName/run_id of the replay's record; null if none"})
    verdict: str | None = field(
        metadata={
            "description": "identical, equivalent, different or 'replay failed'; null if the replay could not start"
        }
    )
    passed: bool
    differences: list[ArtifactRow] = field(metadata={"description": "the artifacts that differ in the replay"})
    error: str = field(metadata={"description": "why the replay failed or could not start, or ''"})


@dataclass(frozen=True)
class OutsideReads:
    step: str
    files: list[str] = field(metadata={"description": "absolute paths of the files, the first 100"})
    count: int = field(metadata={"description": "how many files in all"})
    unwatched: bool = field(metadata={"description": "the step's interpreter has no audit hooks (Python 3.7)"})
    hosts: list[str] = field(
        default_factory=list,
        metadata={"description": "network endpoints it contacted elsewhere (host:port), the first 100"},
    )
    hosts_count: int = field(default=0, metadata={"description": "how many endpoints elsewhere in all"})
    loopback: list[str] = field(
        default_factory=list,
        metadata={"description": "network endpoints it contacted on its own machine (host:port), the first 100"},
    )
    loopback_count: int = field(default=0, metadata={"description": "how many loopback endpoints in all"})

    def line(self) -> str:
        """``train read 2 files outside the snapshot and contacted 127.0.0.1:8765; a replay cannot give
        these back``."""
        return StepReads(
            tuple(self.files),
            self.count,
            self.unwatched,
            tuple(self.hosts),
            self.hosts_count,
            tuple(self.loopback),
            self.loopback_count,
        ).describe(self.step)


@dataclass(frozen=True)
class DataFileRow:
    path: str = field(metadata={"description": "relative to the flow's folder"})
    size: int
    sha256: str
    read_by: list[str]
    stored: bool = field(metadata={"description": "its bytes are in the snapshot (else: past input-max-bytes)"})


@dataclass(frozen=True)
class FlowReport:
    flow: str = field(metadata={"description": "FlowSpec class name"})
    file: str
    run: str | None = field(metadata={"description": "FlowName/run_id of the run, if one started"})
    status: FlowStatus
    steps: list[StepReport]
    pickle: list[PickleRow]
    baseline: BaselineReport | None
    drift: DriftReport | None
    store: str | None = field(
        metadata={"description": "the store the run was pushed to or the baseline read from; null if none was used"}
    )
    replay: ReplayReport | None = field(
        default=None,
        metadata={"description": "the run replayed elsewhere (pytest --repro-on docker|batch); null without one"},
    )
    outside: list[OutsideReads] = field(
        default_factory=list,
        metadata={"description": "per step, the files it read outside the snapshot and the flow's folder"},
    )
    data_files: list[DataFileRow] = field(
        default_factory=list,
        metadata={"description": "files of the flow's folder the steps read that the code package lacks"},
    )

    # -- what the renderers show, decided here (none of it is part of the JSON document) ------------

    @property
    def passed(self) -> bool:
        return self.status is FlowStatus.PASSED

    def steps_passed(self) -> int:
        return sum(1 for s in self.steps if s.outcome is StepOutcome.PASSED)

    def _shown_pickle(self) -> list[PickleRow]:
        """The checks people see: Metaflow's internal artifacts left out, the worst first."""
        return sorted((p for p in self.pickle if not p.internal), key=lambda p: _SEVERITY[p.status])

    def pickle_problems(self) -> list[PickleRow]:
        return [p for p in self._shown_pickle() if p.problem]

    def pickle_ok(self) -> list[PickleRow]:
        return [p for p in self._shown_pickle() if not p.problem]

    def pickle_hidden(self) -> int:
        """How many checks of Metaflow's internal artifacts are not shown."""
        return sum(1 for p in self.pickle if p.internal)

    def drift_lines(self) -> list[tuple[str, str]]:
        return self.drift.lines() if self.drift else []

    def outside_lines(self) -> list[str]:
        """One line per step that read files a replay cannot give back, then each data file not kept."""
        lines = [r.line() for r in self.outside]
        return lines + [
            f"{d.path} ({d.size} bytes, read by {', '.join(d.read_by)}) is larger than input-max-bytes: "
            "recorded, not kept; a replay cannot give it back"
            for d in self.data_files
            if not d.stored
        ]


@dataclass(frozen=True)
class ReportDocument:
    schema: str = field(metadata={"description": "always 'metaflow_repro.report'", "const": SCHEMA})
    schema_version: int = field(
        metadata={"description": "bumped when a field is renamed or removed", "const": SCHEMA_VERSION}
    )
    generated_at: str = field(metadata={"description": "ISO 8601, UTC"})
    flows: list[FlowReport]

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportDocument:
        """A document read back from its JSON; a field it lacks takes its default (counts are zero)."""
        return _decode(cls, data)  # type: ignore[no-any-return]

    def status_counts(self) -> dict[FlowStatus, int]:
        """How many flows ended in each status, every status listed (in the order of ``FlowStatus``)."""
        return {status: sum(1 for f in self.flows if f.status is status) for status in FlowStatus}

    def failed(self) -> int:
        return self.status_counts()[FlowStatus.FAILED]

    def pickle_problems(self) -> int:
        return sum(len(f.pickle_problems()) for f in self.flows)

    def stores(self) -> list[str]:
        return sorted({f.store for f in self.flows if f.store})


#: the order pickle checks are shown in: what fails first
_SEVERITY = {PickleStatus.FAILS: 0, PickleStatus.WARNING: 1, PickleStatus.OK: 2}


def plain(value: Any) -> Any:
    """A document (or any part of it) as JSON-ready data: dicts, lists, strings, numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _decode(tp: Any, value: Any) -> Any:
    """``plain`` backwards: JSON-ready data as the typed value ``tp`` describes."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _decode(inner, value)
    if origin is list:
        return [_decode(typing.get_args(tp)[0], v) for v in value]
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        known = [f.name for f in dataclasses.fields(tp) if f.name in value]
        return tp(**{name: _decode(hints[name], value[name]) for name in known})  # type: ignore[operator]
    return value


# -- building ------------------------------------------------------------------------------------


def drift_report(findings: list[Finding]) -> DriftReport:
    lines = {k: [f.line() for f in select(findings, kind=k)] for k in DRIFT_KINDS}
    return DriftReport(
        spec=lines[Kind.SPEC_DRIFT],
        resolution=lines[Kind.RESOLUTION_DRIFT],
        runtime=lines[Kind.RUNTIME_DRIFT],
        against=lines[Kind.AGAINST_DRIFT],
        input=lines[Kind.INPUT_DRIFT],
    )


def build_flow(
    flow: str,
    file: str,
    record=None,
    lock=None,
    outcomes: dict[str, tuple[StepOutcome, str]] | None = None,
    comparison: Comparison | None = None,
    findings: list[Finding] | None = None,
    baseline: str | None = None,
    store: str | None = None,
    replay: ReplayReport | None = None,
) -> FlowReport:
    """One flow's part of a report. ``outcomes``: step -> (outcome, message), decided by the caller."""
    outcomes = outcomes or {}
    local = plats.local_platform_name()
    by_step = comparison.by_step() if comparison else {}
    steps = [
        _step_report(step, record, lock, local, outcomes.get(step), by_step.get(step))
        for step in _step_order(record, lock, outcomes)
    ]
    return FlowReport(
        flow=flow,
        file=file,
        run=record.ref if record else None,
        status=flow_status(
            steps,
            record is not None and record.status is RunStatus.SUCCESS,
            replay,
            not_taken(record) if record else {},
        ),
        steps=steps,
        pickle=[_pickle_row(c) for c in (record.pickle_checks if record else ())],
        baseline=None if comparison is None else _baseline_report(comparison, baseline),
        drift=drift_report(findings) if findings is not None else None,
        store=store,
        replay=replay,
        outside=_outside(record),
        data_files=_data_files(record),
    )


def _outside(record) -> list[OutsideReads]:
    """What each step read outside the snapshot, in the record's step order."""
    reads = getattr(record, "reads", None) or {}
    if not reads:
        return []
    order = [s for s in record.step_order if s in reads] + sorted(set(reads) - set(record.step_order))
    return [
        OutsideReads(
            s,
            list(r.files),
            r.files_count,
            r.unwatched,
            list(r.hosts),
            r.hosts_count,
            list(r.loopback),
            r.loopback_count,
        )
        for s, r in ((s, reads[s]) for s in order)
    ]


def _data_files(record) -> list[DataFileRow]:
    files = getattr(record, "data_files", None) or {}
    return [DataFileRow(p, f.size, f.sha256, list(f.read_by), f.stored) for p, f in sorted(files.items())]


def flow_status(
    steps: list[StepReport], run_succeeded: bool, replay: ReplayReport | None, not_taken: Collection[str] = ()
) -> FlowStatus:
    """A flow passes when every step passed (or caught its exception), its run succeeded and its replay
    elsewhere (if any) passed; a failed run whose failures were all expected is an expected failure. A
    step that never ran is no pass, unless it is one of ``not_taken``: a switch took another branch."""
    expected = any(s.outcome is StepOutcome.EXPECTED_FAILURE for s in steps)
    failed = (
        any(
            s.outcome is StepOutcome.FAILED or (s.outcome is StepOutcome.NOT_RUN and s.step not in not_taken)
            for s in steps
        )
        or (not run_succeeded and not expected)
        or (replay is not None and not replay.passed)
    )
    if failed:
        return FlowStatus.FAILED
    return FlowStatus.EXPECTED_FAILURE if expected else FlowStatus.PASSED


def _step_order(record, lock, outcomes: dict[str, tuple[StepOutcome, str]]) -> list[str]:
    """The run's steps; without a run, the lock's; without a lock, the steps the caller decided about."""
    if record:
        return list(record.steps)
    return list(lock.steps) if lock else list(outcomes)


def _interpreter(s, sl, pl, env) -> tuple[str, int]:
    """The step's Python and package count: what the run used, whatever the lock says now; else the lock's."""
    if env is not None:
        return env.python, len(env.packages)
    if pl is not None:
        return pl.python, len(pl.packages)
    return ("user's" if (s and s.disabled) or (sl and sl.disabled) else ""), 0


def _env_id(s, sl, pl) -> str:
    if s:
        return s.env_id  # type: ignore[no-any-return]
    if pl:
        return pl.env_id  # type: ignore[no-any-return]
    return DISABLED if sl and sl.disabled else ""


def _step_sources(step: str, record, lock, local: str) -> tuple[Any, Any, Any, Any]:
    """What a step's line is read from: its record, its lock, the lock for this platform, the env it used."""
    s = record.steps.get(step) if record else None
    sl = lock.steps.get(step) if lock else None
    pl = sl.platforms.get(local) if sl else None
    env = record.envs.get(s.env_id) if (record and s) else None
    return s, sl, pl, env


def _step_report(
    step: str,
    record,
    lock,
    local: str,
    decided: tuple[StepOutcome, str] | None,
    artifacts: dict[str, int] | None,
) -> StepReport:
    s, sl, pl, env = _step_sources(step, record, lock, local)
    python, packages = _interpreter(s, sl, pl, env)
    checks = [c for c in (record.pickle_checks if record else ()) if c.step == step]
    outcome, message = decided or recorded_outcome(record, step) or (StepOutcome.NOT_RUN, "")
    return StepReport(
        step=step,
        env_id=_env_id(s, sl, pl),
        python=python,
        packages=packages,
        tasks=len(s.tasks) if s else 0,
        fingerprints=sorted({t.fingerprint for t in s.tasks.values()}) if s else [],
        outcome=outcome,
        message=message,
        artifacts=ArtifactCounts(**artifacts) if artifacts is not None else None,
        pickle=PickleCounts(**{k.value: sum(1 for c in checks if c.status is k) for k in PickleStatus}),
    )


def recorded_outcome(record, step: str) -> tuple[StepOutcome, str] | None:
    """A step's outcome as its record alone tells it: not run because a switch took another branch,
    caught (an exception @catch handled), or passed; None when the record has no task of it otherwise."""
    if record is None:
        return None
    took = switch_taken(record, step)
    if took:
        return StepOutcome.NOT_RUN, not_taken_reason(*took)
    caught = caught_message(record, step)
    if caught:
        return StepOutcome.CAUGHT, caught
    s = record.steps.get(step)
    return (StepOutcome.PASSED, "") if s and s.tasks else None


def _pickle_row(c: PickleCheck) -> PickleRow:
    return PickleRow(
        step=c.step,
        task=c.task,
        artifact=c.artifact,
        reader_env=c.reader_env,
        reader_steps=list(c.reader_steps),
        status=PickleStatus(c.status),
        detail=c.detail,
        static=c.static,
    )


def _baseline_report(comparison: Comparison, baseline: str | None) -> BaselineReport:
    return BaselineReport(
        ref=baseline or comparison.a,
        same=comparison.same,
        results=[ArtifactRow(r.step, r.task, r.name, r.verdict, r.detail) for r in comparison.results],
        code_changed=comparison.code_changed,
        code=comparison.code_a or None,
    )


def replay_report(check: ReplayCheck) -> ReplayReport:
    """A run's replay elsewhere (``Outcome.replay``) as the report shows it."""
    results = check.comparison.results if check.comparison else ()
    return ReplayReport(
        on=check.on,
        executor=check.executor.kind.value if check.executor else None,
        image=check.executor.image if check.executor else "",
        run=check.run or None,
        verdict=check.verdict or None,
        passed=check.passed,
        differences=[
            ArtifactRow(r.step, r.task, r.name, r.verdict, r.detail) for r in results if r.verdict is Verdict.DIFFERENT
        ],
        error=check.error,
    )


def document(flows: list[FlowReport]) -> ReportDocument:
    return ReportDocument(
        schema=SCHEMA,
        schema_version=SCHEMA_VERSION,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        flows=flows,
    )


# -- the JSON schema, derived from the dataclasses above --------------------------------------------


def _schema_of(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _schema_of(args[0])
        if set(inner) == {"type"} and isinstance(inner["type"], str):
            return {"type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if origin is list:
        return {"type": "array", "items": _schema_of(typing.get_args(tp)[0])}
    if isinstance(tp, type) and issubclass(tp, Enum):
        return {"enum": [m.value for m in tp]}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        props = {}
        for f in dataclasses.fields(tp):
            prop = _schema_of(hints[f.name])
            if "const" in f.metadata:
                prop = {"const": f.metadata["const"]}
            if "description" in f.metadata:
                prop["description"] = f.metadata["description"]
            props[f.name] = prop
        return {
            "type": "object",
            "required": [f.name for f in dataclasses.fields(tp)],
            "properties": props,
            "additionalProperties": False,
        }
    simple = {str: "string", int: "integer", bool: "boolean", float: "number"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no JSON schema for {tp!r}")


def json_schema() -> dict[str, Any]:
    schema = _schema_of(ReportDocument)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA}/{SCHEMA_VERSION}",
        "title": "repro report",
        "description": "What `pytest --repro` and `repro report --format json` write. Stable: fields are only "
        "added, never renamed or removed, within a schema_version. Generated from "
        "metaflow_repro/report/document.py.",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=1) + "\n"


if __name__ == "__main__":  # regenerate the committed schema: python -m metaflow_repro.report.document > ...
    sys.stdout.write(schema_text())
