"""The report document: typed, versioned, and the single source of its JSON schema.

``build_flow`` turns a run (record, lock, findings, comparison) into a ``FlowReport``;
``json_schema()`` derives the JSON schema from these dataclasses, and the committed
``report.schema.json`` is checked against it by a test (``python -m repro.report.document``
rewrites it). Pure: no disk, no network.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from metaflow_extensions.repro.plugins.protocol import DISABLED
from repro.checks.compare import Comparison, Verdict
from repro.model import platforms as plats
from repro.model.findings import DRIFT_KINDS, Choice, Finding, Kind, select
from repro.model.record import PickleStatus, RunStatus

if typing.TYPE_CHECKING:
    from repro.operations.run import ReplayCheck

SCHEMA = "repro.report"
SCHEMA_VERSION = 1


class StepOutcome(Choice):
    PASSED = "passed"
    FAILED = "failed"
    NOT_RUN = "not run"
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


@dataclass(frozen=True)
class DriftReport:
    spec: list[str]
    resolution: list[str]
    runtime: list[str]
    against: list[str]
    input: list[str] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.spec or self.resolution or self.runtime or self.against or self.input)


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


@dataclass(frozen=True)
class ReportDocument:
    schema: str = field(metadata={"description": "always 'repro.report'", "const": SCHEMA})
    schema_version: int = field(
        metadata={"description": "bumped when a field is renamed or removed", "const": SCHEMA_VERSION}
    )
    generated_at: str = field(metadata={"description": "ISO 8601, UTC"})
    flows: list[FlowReport]

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]


def plain(value: Any) -> Any:
    """A document (or any part of it) as JSON-ready data: dicts, lists, strings, numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
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
    order = list(record.steps) if record else (list(lock.steps) if lock else list(outcomes))
    by_step = comparison.by_step() if comparison else {}
    steps = []
    for step in order:
        s = record.steps.get(step) if record else None
        sl = lock.steps.get(step) if lock else None
        pl = sl.platforms.get(local) if sl else None
        env = record.envs.get(s.env_id) if (record and s) else None
        if env is not None:  # what the run used, whatever the lock says now
            python, packages = env.python, len(env.packages)
        elif pl is not None:
            python, packages = pl.python, len(pl.packages)
        else:
            python, packages = ("user's" if (s and s.disabled) or (sl and sl.disabled) else ""), 0
        checks = [c for c in (record.pickle_checks if record else ()) if c.step == step]
        default = StepOutcome.PASSED if s and s.tasks else StepOutcome.NOT_RUN
        outcome, message = outcomes.get(step, (default, ""))
        steps.append(
            StepReport(
                step=step,
                env_id=s.env_id if s else (pl.env_id if pl else (DISABLED if sl and sl.disabled else "")),
                python=python,
                packages=packages,
                tasks=len(s.tasks) if s else 0,
                fingerprints=sorted({t.fingerprint for t in s.tasks.values()}) if s else [],
                outcome=outcome,
                message=message,
                artifacts=ArtifactCounts(**by_step[step]) if step in by_step else None,
                pickle=PickleCounts(**{k.value: sum(1 for c in checks if c.status is k) for k in PickleStatus}),
            )
        )
    failed = any(s.outcome in (StepOutcome.FAILED, StepOutcome.NOT_RUN) for s in steps) or (
        (record is None or record.status is not RunStatus.SUCCESS)
        and not any(s.outcome is StepOutcome.EXPECTED_FAILURE for s in steps)
    )
    expected = any(s.outcome is StepOutcome.EXPECTED_FAILURE for s in steps)
    failed = failed or (replay is not None and not replay.passed)
    status = FlowStatus.FAILED if failed else (FlowStatus.EXPECTED_FAILURE if expected else FlowStatus.PASSED)
    return FlowReport(
        flow=flow,
        file=file,
        run=record.ref if record else None,
        status=status,
        steps=steps,
        pickle=[
            PickleRow(
                step=c.step,
                task=c.task,
                artifact=c.artifact,
                reader_env=c.reader_env,
                reader_steps=list(c.reader_steps),
                status=PickleStatus(c.status),
                detail=c.detail,
                static=c.static,
            )
            for c in (record.pickle_checks if record else ())
        ],
        baseline=None
        if comparison is None
        else BaselineReport(
            ref=baseline or comparison.a,
            same=comparison.same,
            results=[ArtifactRow(r.step, r.task, r.name, r.verdict, r.detail) for r in comparison.results],
            code_changed=comparison.code_changed,
            code=comparison.code_a or None,
        ),
        drift=drift_report(findings) if findings is not None else None,
        store=store,
        replay=replay,
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
        "repro/report/document.py.",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=1) + "\n"


if __name__ == "__main__":  # regenerate the committed schema: python -m repro.report.document > ...
    sys.stdout.write(schema_text())
