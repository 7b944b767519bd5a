"""Determinism: N runs of one flow in the same locked environments, judged together.

Pure: it reads the ``Comparison`` of the first run with each other run (``checks/compare``, the
comparators and their tolerances) and says, per artifact, whether the repeats agree: every one
``identical``, some ``equivalent`` (other bytes, values within tolerance), or ``different`` (the
artifact is nondeterministic). ``repro check --repeat`` prints it, ``pytest --repro --repro-repeat``
fails the step of a ``different`` artifact with ``findings``, and a recorded repeat keeps
``nondeterministic()`` in its record so that a later replay can say the difference is not new.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, replace

from metaflow_repro.checks.compare import Comparison, Verdict
from metaflow_repro.model.findings import Finding, Kind, Severity
from metaflow_repro.model.record import NO_FOREACH, RunRecord

#: how the message of a finding about an artifact that differs between repeats begins
NONDETERMINISTIC = "nondeterministic: "

#: what to do about an artifact that differs between runs of the same code in the same environments
HINT = (
    "seed every random number generator the step uses (random.seed, numpy.random.default_rng(seed), "
    "torch.manual_seed); PYTHONHASHSEED is already pinned by repro; pin thread counts "
    "(OMP_NUM_THREADS, MKL_NUM_THREADS) when parallel reductions change the last digits; or accept it with "
    '[tool.repro] nondeterministic = ["{flow}.{step}.{name}"] in pyproject.toml'
)


@dataclass(frozen=True)
class RepeatedArtifact:
    """One artifact that was not identical in every repeat: its worst verdict over the comparisons
    (``different`` over ``equivalent``), the first such comparison's description, and how many of
    the comparisons found it so."""

    step: str
    task: str
    name: str
    verdict: Verdict
    detail: str
    seen: int  # comparisons (first run vs another) with this verdict
    of: int  # comparisons made
    carried_from: str = ""  # the earlier step it was carried over from unchanged (Metaflow passes artifacts on)

    @property
    def label(self) -> str:
        """``start.model``; ``train[2].model`` for a foreach task."""
        return f"{self.step}{'' if self.task in (NO_FOREACH, '*') else f'[{self.task}]'}.{self.name}"

    def line(self) -> str:
        counts = f" (in {self.seen} of {self.of} runs compared with the first)" if self.of > 1 else ""
        carried = f" (carried over from {self.carried_from})" if self.carried_from else ""
        return f"{self.label}: {self.detail}{counts}{carried}"


@dataclass(frozen=True)
class RepeatCheck:
    """The repeats of one flow, compared: ``runs`` (REFs; the first is the one the others are
    compared with), the steps in graph order, and every artifact that was not always identical."""

    flow: str
    runs: tuple[str, ...]
    steps: tuple[str, ...]
    artifacts: tuple[RepeatedArtifact, ...]
    identical: dict[str, int]  # step -> artifacts identical in every repeat

    def of(self, verdict: Verdict) -> list[RepeatedArtifact]:
        return [a for a in self.artifacts if a.verdict is verdict]

    @property
    def deterministic(self) -> bool:
        """No artifact differs (beyond the comparators' tolerances) between the repeats."""
        return not self.of(Verdict.DIFFERENT)

    def nondeterministic(self) -> dict[str, tuple[str, ...]]:
        """step -> the names of its artifacts that differed: what a recorded repeat keeps."""
        out: dict[str, list[str]] = {}
        for a in self.of(Verdict.DIFFERENT):
            names = out.setdefault(a.step, [])
            if a.name not in names:
                names.append(a.name)
        return {step: tuple(sorted(names)) for step, names in out.items()}

    def lines(self) -> list[str]:
        """Per step: how many artifacts are identical, equivalent and different in every repeat, then
        each that differs and each equivalent one, with the comparator's description."""
        out = []
        for step in self.steps:
            mine = [a for a in self.artifacts if a.step == step]
            counts = [(self.identical.get(step, 0), "identical")] + [
                (sum(a.verdict is v for a in mine), v.value) for v in (Verdict.DIFFERENT, Verdict.EQUIVALENT)
            ]
            out.append(f"{step}: " + (", ".join(f"{n} {what}" for n, what in counts if n) or "no artifacts"))
            for verdict in (Verdict.DIFFERENT, Verdict.EQUIVALENT):
                out += [f"  {verdict.value:<10}  {a.line()}" for a in mine if a.verdict is verdict]
        return out


def judge(flow: str, records: Sequence[RunRecord], comparisons: Sequence[Comparison]) -> RepeatCheck:
    """``comparisons``: the first of ``records`` with each of the others, in that order."""
    worst: dict[tuple[str, str, str], RepeatedArtifact] = {}
    identical: dict[tuple[str, str, str], str] = {}
    for other, comparison in zip(records[1:], comparisons):
        for r in comparison.results:
            key = (r.step, r.task, r.name)
            if r.verdict is Verdict.IDENTICAL:
                identical.setdefault(key, r.step)
                continue
            seen = worst.get(key)
            if seen is None or _rank(r.verdict) > _rank(seen.verdict):
                carried = _carried_from(records[0], other, r.step, r.task, r.name)
                worst[key] = RepeatedArtifact(r.step, r.task, r.name, r.verdict, r.detail, 1, len(comparisons), carried)
            elif r.verdict is seen.verdict:
                worst[key] = replace(seen, seen=seen.seen + 1)
    same: dict[str, int] = {}
    for key, step in identical.items():
        if key not in worst:
            same[step] = same.get(step, 0) + 1
    base = records[0]
    steps = list(base.step_order or base.steps)
    order = {s: i for i, s in enumerate(steps)}
    found = sorted(worst.values(), key=lambda a: (order.get(a.step, len(order)), a.task, a.name))
    known = steps + [a.step for a in found if a.step not in order]
    return RepeatCheck(flow, tuple(r.ref for r in records), tuple(dict.fromkeys(known)), tuple(found), same)


def _carried_from(a: RunRecord, b: RunRecord, step: str, task: str, name: str) -> str:
    """The step before ``step`` whose task wrote the very bytes ``step``'s task holds under ``name``, in
    both runs (Metaflow carries artifacts on to later steps); "" when it was made here."""
    for parent in [p for p, nexts in a.graph.items() if step in nexts]:
        if _holds(a, parent, step, task, name) and _holds(b, parent, step, task, name):
            return parent
    return ""


def _holds(record: RunRecord, parent: str, step: str, task: str, name: str) -> bool:
    here = record.steps.get(step)
    mine = here.tasks.get(task) if here else None
    art = mine.artifacts.get(name) if mine else None
    before = record.steps.get(parent)
    if art is None or before is None:
        return False
    return any(t.artifacts.get(name) is not None and t.artifacts[name].sha1 == art.sha1 for t in before.tasks.values())


def _rank(verdict: Verdict) -> int:
    return {Verdict.IDENTICAL: 0, Verdict.EQUIVALENT: 1, Verdict.DIFFERENT: 2}[verdict]


def accepted(flow: str, step: str, name: str, patterns: Sequence[str]) -> bool:
    """Whether ``[tool.repro] nondeterministic`` accepts ``flow.step.name`` (shell-style patterns:
    ``"TrainFlow.start.*"``)."""
    subject = f"{flow}.{step}.{name}"
    return any(fnmatch.fnmatchcase(subject, p) for p in patterns)


def findings(check: RepeatCheck, patterns: Sequence[str] = ()) -> list[Finding]:
    """What fails a step under ``pytest --repro --repro-repeat N``: each artifact that differs between
    the repeats, with what to do about it; one ``patterns`` accepts is a warning instead."""
    out = []
    n = len(check.runs)
    for a in check.of(Verdict.DIFFERENT):
        if a.carried_from:  # the step that made it fails; this one only passed it on
            continue
        ok = accepted(check.flow, a.step, a.name, patterns)
        message = f"{NONDETERMINISTIC}differs between {n} runs of the same code in the same environments: {a.line()}"
        message += (
            f"; accepted by [tool.repro] nondeterministic ({check.flow}.{a.step}.{a.name})"
            if ok
            else "\nhint: " + HINT.format(flow=check.flow, step=a.step, name=a.name)
        )
        out.append(
            Finding(
                Kind.ARTIFACT,
                message,
                step=a.step,
                task=a.task,
                subject=a.name,
                new=a.verdict.value,
                severity=Severity.WARNING if ok else Severity.ERROR,
            )
        )
    return out
