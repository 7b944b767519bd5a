"""Compare two runs artifact by artifact: identical (same sha1), equivalent (bytes differ but a
comparator finds the values equal), or different (with a short description).

Semantic comparisons load both pickles in the step's own environment, in a subprocess, and only
blobs whose sha1 matches the record are ever unpickled.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro import hooks
from metaflow_repro.adapter.blobs import verify_sha1
from metaflow_repro.checks.pickles import is_internal
from metaflow_repro.env import probes as envprobe
from metaflow_repro.errors import IntegrityError
from metaflow_repro.model.findings import Choice, Finding, Kind, Severity
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.outcomes import CATCH_ARTIFACT, switch_taken
from metaflow_repro.model.record import NO_FOREACH, ArtifactRecord, Caught, RunRecord, TaskRecord


class Verdict(Choice):
    IDENTICAL = "identical"  # same bytes (sha1)
    EQUIVALENT = "equivalent"  # other bytes, equal values according to a comparator
    DIFFERENT = "different"


Blobs = Callable[[str], "bytes | None"]


@dataclass(frozen=True)
class ArtifactResult:
    step: str
    task: str
    name: str
    verdict: Verdict
    detail: str = ""

    def finding(self, against: str) -> Finding:
        severity = Severity.ERROR if self.verdict is Verdict.DIFFERENT else Severity.OK
        message = (
            f"different from {against}: {self.task}.{self.name}: {self.detail}"
            if self.verdict is Verdict.DIFFERENT
            else f"{self.task}.{self.name}: {self.verdict}"
        )
        return Finding(
            Kind.ARTIFACT,
            message,
            step=self.step,
            task=self.task,
            subject=self.name,
            new=self.verdict.value,
            severity=severity,
        )


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    results: tuple[ArtifactResult, ...]
    code_a: str = ""  # sha256 of the code package each run ran ("" when unknown)
    code_b: str = ""

    @property
    def code_changed(self) -> bool:
        """The two runs ran different code: their code packages differ."""
        return bool(self.code_a and self.code_b and self.code_a != self.code_b)

    def code_note(self) -> str:
        """One line saying the code differs, or ""."""
        if not self.code_changed:
            return ""
        return (
            f"{self.a} ran other code than {self.b}: code package {self.code_a[:12]} vs {self.code_b[:12]} "
            "(differences may come from the code, not the environment)"
        )

    def count(self, verdict: Verdict | str) -> int:
        return sum(1 for r in self.results if r.verdict == verdict)

    @property
    def same(self) -> bool:
        """No artifact differs (identical or equivalent)."""
        return self.count(Verdict.DIFFERENT) == 0

    @property
    def verdict(self) -> Verdict:
        """The run as a whole: identical, equivalent (some values equal with other bytes), or different."""
        if not self.same:
            return Verdict.DIFFERENT
        return Verdict.EQUIVALENT if self.count(Verdict.EQUIVALENT) else Verdict.IDENTICAL

    def by_step(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: {v.value: 0 for v in Verdict})
        for r in self.results:
            out[r.step][Verdict(r.verdict).value] += 1
        return dict(out)

    def findings(self) -> list[Finding]:
        return [r.finding(self.a) for r in self.results]

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "code_a": self.code_a,
            "code_b": self.code_b,
            "results": [
                {"step": r.step, "task": r.task, "name": r.name, "verdict": r.verdict.value, "detail": r.detail}
                for r in self.results
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        return cls(
            d["a"],
            d["b"],
            tuple(
                ArtifactResult(r["step"], r["task"], r["name"], Verdict(r["verdict"]), r["detail"])
                for r in d["results"]
            ),
            d.get("code_a", ""),
            d.get("code_b", ""),
        )


#: the artifacts whose bytes differ, to compare by value: [((step, task, name), artifact in a, artifact in b)]
Differing = list[tuple[tuple[str, str, str], ArtifactRecord, ArtifactRecord]]


def compare(
    a: RunRecord,
    b: RunRecord,
    blobs_a: Blobs,
    blobs_b: Blobs,
    pythons: dict[str, str],
    sys_path: Sequence[str] = (),
    options: dict | None = None,
) -> Comparison:
    """``pythons``: env id (or "disabled") -> interpreter that can load the step's artifacts."""
    options = {"rel_tol": 1e-9, "abs_tol": 0.0, **(options or {})}
    pending: dict[str, Differing] = defaultdict(list)  # env -> what to compare by value in it
    # an IncludeFile artifact is a descriptor naming the run's own datastore: compare the file's contents
    included = set(a.include_files) | set(b.include_files)
    pair = _Pair(a.ref, b.ref, included, caught_pickles(a), caught_pickles(b))
    results = [_compare_included(name, a, b) for name in sorted(included)]
    results += [
        ArtifactResult(step, "*", "*", Verdict.DIFFERENT, f"step {step} did not run in {a.ref}")
        for step in b.steps
        if step not in a.steps
    ]
    for step, sa in a.steps.items():
        sb = b.steps.get(step)
        if sb is None:
            results.append(ArtifactResult(step, "*", "*", Verdict.DIFFERENT, f"step {step} did not run in {b.ref}"))
            continue
        differing: Differing = []
        took = _switch_took(step, a, b)
        if took:
            results.append(took)
            continue
        for key in sorted(set(sa.tasks) | set(sb.tasks)):
            results += _compare_task(step, key, sa.tasks.get(key), sb.tasks.get(key), pair, differing)
        if differing:
            pending[sb.env_id if sb.env_id in pythons else sa.env_id] += differing
    results += _semantic(pending, blobs_a, blobs_b, pythons, list(sys_path), options, a.ref, b.ref)
    order = {s: i for i, s in enumerate([*a.steps, *(s for s in b.steps if s not in a.steps)])}
    results.sort(key=lambda r: (order.get(r.step, 1 << 30), r.task, r.name))
    return Comparison(a=a.ref, b=b.ref, results=tuple(results), code_a=a.code_sha256, code_b=b.code_sha256)


def _compare_included(name: str, a: RunRecord, b: RunRecord) -> ArtifactResult:
    """An IncludeFile parameter's contents: identical when both runs read a file with one sha256."""
    fa, fb = a.include_files.get(name), b.include_files.get(name)
    if fa is not None and fb is not None and fa.sha256 == fb.sha256:
        return ArtifactResult(_start_step(a), NO_FOREACH, name, Verdict.IDENTICAL)
    if fa is not None and fb is not None:
        detail = f"sha256 {fa.sha256[:10]} -> {fb.sha256[:10]}, {fa.size} -> {fb.size} bytes"
    else:
        detail = f"only in {a.ref if fb is None else b.ref}"
    return ArtifactResult(_start_step(a), NO_FOREACH, name, Verdict.DIFFERENT, "IncludeFile contents: " + detail)


def _start_step(record: RunRecord) -> str:
    """The step that reads a run's parameters: the first of its graph order (records of version 1 have
    no order: their first step)."""
    order = record.step_order or tuple(record.steps)
    return order[0] if order else ""


@dataclass(frozen=True)
class _Pair:
    """What every task comparison of two runs needs: their refs, the IncludeFile parameters (compared by
    contents instead), and each run's caught exceptions by the sha1 of their pickles."""

    ref_a: str
    ref_b: str
    included: set[str]
    caught_a: dict[str, Caught]
    caught_b: dict[str, Caught]


def caught_pickles(record: RunRecord) -> dict[str, Caught]:
    """sha1 -> the exception @catch handled, for every pickle of one (Metaflow's ``_catch_exception`` and
    the user's ``var``, in the task that caught it and in every later task that carries it on). Such a
    pickle holds a traceback with the paths the run ran from, so it is compared by the exception's type."""
    out = {}
    for s in record.steps.values():
        for t in s.tasks.values():
            if t.caught is None:
                continue
            for name in {CATCH_ARTIFACT, t.caught.var} - {""}:
                if name in t.artifacts:
                    out[t.artifacts[name].sha1] = t.caught
    return out


def _compare_caught(step: str, key: str, name: str, x: Caught | None, y: Caught | None, pair: _Pair) -> ArtifactResult:
    """A caught exception in either run: identical when both caught one of the same type."""
    if x is not None and y is not None and x.type == y.type:
        return ArtifactResult(step, key, name, Verdict.IDENTICAL)
    if x is not None and y is not None:
        detail = f"@catch caught {x.short_type} in {pair.ref_a}, {y.short_type} in {pair.ref_b} ({y.message})"
    else:
        caught, ref, other = (x, pair.ref_a, pair.ref_b) if x is not None else (y, pair.ref_b, pair.ref_a)
        assert caught is not None, "only called when one run caught an exception"
        detail = f"@catch caught {caught.short_type} ({caught.message}) in {ref}; in {other} the step raised none"
    return ArtifactResult(step, key, name, Verdict.DIFFERENT, detail)


def _switch_took(step: str, a: RunRecord, b: RunRecord) -> ArtifactResult | None:
    """A step that ran in one run only because a switch took another branch in the other; None otherwise
    (a run that failed before it: its tasks are compared one by one)."""
    if bool(a.steps[step].tasks) == bool(b.steps[step].tasks):
        return None
    ran, other = (a, b) if a.steps[step].tasks else (b, a)
    took = switch_taken(other, step)
    if took is None:
        return None
    detail = f"step {step} ran in {ran.ref} but not in {other.ref}: the switch in {took[0]} took {took[1]} there"
    return ArtifactResult(step, "*", "*", Verdict.DIFFERENT, detail)


def _compare_task(
    step: str,
    key: str,
    ta: TaskRecord | None,
    tb: TaskRecord | None,
    pair: _Pair,
    differing: Differing,
) -> list[ArtifactResult]:
    """One task (by key) of both runs: what is decided by sha1 alone; artifacts whose bytes differ
    are appended to ``differing``, for a comparison by value."""
    if ta is None or tb is None:
        only_in = pair.ref_a if tb is None else pair.ref_b
        return [ArtifactResult(step, key, "*", Verdict.DIFFERENT, f"task {key} exists only in {only_in}")]
    results = []
    for name in sorted(set(ta.artifacts) | set(tb.artifacts)):
        if is_internal(name) or name in pair.included:
            continue
        x, y = ta.artifacts.get(name), tb.artifacts.get(name)
        cx = pair.caught_a.get(x.sha1) if x is not None else None
        cy = pair.caught_b.get(y.sha1) if y is not None else None
        if cx is not None or cy is not None:
            results.append(_compare_caught(step, key, name, cx, cy, pair))
        elif x is None or y is None:
            results.append(
                ArtifactResult(step, key, name, Verdict.DIFFERENT, f"only in {pair.ref_a if y is None else pair.ref_b}")
            )
        elif x.sha1 == y.sha1:
            results.append(ArtifactResult(step, key, name, Verdict.IDENTICAL))
        else:
            differing.append(((step, key, name), x, y))
    return results


class _BuiltinComparators:
    @hooks.hookimpl(trylast=True)
    def repro_artifact_comparators(self) -> list[str]:
        from metaflow_repro.comparators import BUILTIN

        return list(BUILTIN)


def comparator_paths() -> list[str]:
    """The comparator modules to try, in order: the plugins' (``repro_artifact_comparators``), then the
    built-ins (pandas, numpy, numbers with tolerance, ``==``)."""
    pm = hooks.with_builtins("repro-comparators", _BuiltinComparators())
    return [path for paths in pm.hook.repro_artifact_comparators() for path in paths]


def _describe_bytes(x, y) -> str:
    return f"sha1 {x.sha1[:10]} -> {y.sha1[:10]}, {x.type or '?'} {x.size} -> {y.size} bytes"


def _semantic(pending, blobs_a, blobs_b, pythons, sys_path, options, ref_a, ref_b) -> list[ArtifactResult]:
    out = []
    comparators = comparator_paths()
    with tempfile.TemporaryDirectory(prefix="repro-compare-") as tmp:
        for env, items in pending.items():
            python = pythons.get(env)
            requests = {}
            for (step, key, name), x, y in items:
                try:
                    da, db = blobs_a(x.sha1), blobs_b(y.sha1)
                    if da is not None:
                        verify_sha1(da, x.sha1, f"{ref_a} {step}/{key}.{name}")
                    if db is not None:
                        verify_sha1(db, y.sha1, f"{ref_b} {step}/{key}.{name}")
                except IntegrityError as exc:
                    out.append(ArtifactResult(step, key, name, Verdict.DIFFERENT, str(exc)))
                    continue
                if da is None or db is None or python is None:
                    why = "blob not available" if python else f"environment {env[:12]} not built here"
                    out.append(
                        ArtifactResult(
                            step,
                            key,
                            name,
                            Verdict.DIFFERENT,
                            f"{_describe_bytes(x, y)} ({why}: no semantic comparison)",
                        )
                    )
                    continue
                pa, pb = Path(tmp) / x.sha1, Path(tmp) / f"{y.sha1}.b"
                pa.write_bytes(da)
                pb.write_bytes(db)
                requests[f"{step}\0{key}\0{name}"] = (pa, pb)
            if not requests:
                continue
            answers = envprobe.run(python, protocol.compare_request(sys_path, comparators, options, requests))
            for rid, ans in answers.items():
                step, key, name = rid.split("\0")
                out.append(ArtifactResult(step, key, name, Verdict(ans[protocol.VERDICT]), ans[protocol.DETAIL]))
    return out


@dataclass(frozen=True)
class ReplayCheck:
    """A run replayed elsewhere from the store (``pytest --repro --repro-on docker|batch``): where it
    ran, the verdict, and why it could not be judged. Its artifact differences are the outcome's
    ``Kind.REPLAY`` findings."""

    on: str  # where it was asked to run: docker | batch
    verdict: str = ""  # identical | equivalent | different | replay failed; "" when it could not start
    executor: Executor | None = None  # where the replay's record says it ran
    run: str = ""  # the replay's record (FlowName/run_id); "" when none was written
    comparison: Comparison | None = None
    error: str = ""  # why the replay failed or could not run
    error_code: int = 0  # that error's exit code (2 bad input, 3 infrastructure or replay failed)
    failed_step: str = ""  # the step whose task failed in the replay

    @property
    def passed(self) -> bool:
        return self.verdict in ("identical", "equivalent")

    def to_dict(self) -> dict:
        return {
            "on": self.on,
            "verdict": self.verdict,
            "executor": self.executor.to_dict() if self.executor else None,
            "run": self.run,
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "error": self.error,
            "error_code": self.error_code,
            "failed_step": self.failed_step,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ReplayCheck:  # our own session file, written by to_dict
        ex = d.get("executor")
        return cls(
            on=d["on"],
            verdict=d["verdict"],
            executor=Executor(ExecutorKind(ex["kind"]), ex["image"]) if ex else None,
            run=d["run"],
            comparison=Comparison.from_dict(d["comparison"]) if d["comparison"] else None,
            error=d["error"],
            error_code=d["error_code"],
            failed_step=d["failed_step"],
        )
