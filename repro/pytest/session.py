"""What `pytest --repro` decides: run each flow once, check it, remember the outcome, report.

The pytest hooks (``pytest_plugin``) and items (``pytest_items``) only ask this object. A flow
runs once per pytest session, also across pytest-xdist workers: the first worker that needs it
runs it under a file lock and leaves the outcome as JSON for the others and for the controller.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from repro.runs import drift as drift_mod
from repro.report import render as report
from repro.runs import metaflow as runs
from repro.runs.compare import ArtifactResult, Comparison
from repro.settings import load_settings
from repro.env.engine import open_flow
from repro.env.flowfile import load_flow
from repro.errors import ReproError
from repro.model.record import PickleStatus, RunRecord, RunStatus, from_json


@dataclass
class Options:
    store: str | None = None
    baseline: str | None = None
    update: bool = False
    drift: bool = False
    report_dir: str = "reports"
    platforms: tuple = ()

    @classmethod
    def from_config(cls, config) -> "Options":
        """Command line first, then [tool.pytest.ini_options] (repro_*), then [tool.repro]."""
        table = load_settings(Path(str(config.rootpath))).raw

        def pick(opt, ini):
            value = config.getoption(opt)
            if value not in (None, False, [], ""):
                return value
            return config.getini(ini) or table.get(ini.removeprefix("repro_")) or None

        return cls(store=pick("repro_store", "repro_store"), baseline=pick("repro_baseline", "repro_baseline"),
                   update=bool(pick("repro_update", "repro_update")), drift=bool(pick("repro_drift", "repro_drift")),
                   report_dir=pick("repro_report", "repro_report") or "reports",
                   platforms=tuple(config.getoption("repro_platform") or
                                   (config.getini("repro_platform") or "").split() or table.get("platforms", ())))


@dataclass
class FlowOutcome:
    path: str
    flow: str = ""
    steps: list = field(default_factory=list)
    error: str = ""  # the flow could not be checked or run at all (bad declaration, lock error)
    record: RunRecord | None = None
    output: str = ""
    step_failures: dict = field(default_factory=dict)  # step -> message
    comparison: Comparison | None = None
    baseline: str | None = None
    drift: drift_mod.Drift = field(default_factory=drift_mod.Drift)
    pushed: bool = False

    def to_json(self) -> str:
        return json.dumps({
            "path": self.path, "flow": self.flow, "steps": self.steps, "error": self.error,
            "record": json.loads(self.record.to_json()) if self.record else None, "output": self.output,
            "step_failures": self.step_failures, "baseline": self.baseline, "pushed": self.pushed,
            "comparison": None if self.comparison is None else {
                "a": self.comparison.a, "b": self.comparison.b,
                "results": [r.__dict__ for r in self.comparison.results]},
            "drift": self.drift.as_dict(),
        })

    @classmethod
    def from_json(cls, text: str) -> "FlowOutcome":
        d = json.loads(text)
        comparison = None
        if d["comparison"]:
            c = d["comparison"]
            comparison = Comparison(c["a"], c["b"], tuple(ArtifactResult(**r) for r in c["results"]))
        return cls(path=d["path"], flow=d["flow"], steps=d["steps"], error=d["error"],
                   record=from_json(json.dumps(d["record"]), d["path"]) if d["record"] else None,
                   output=d["output"], step_failures=d["step_failures"], comparison=comparison,
                   baseline=d["baseline"], drift=drift_mod.Drift(**d["drift"]), pushed=d["pushed"])


def step_problems(o: FlowOutcome, step: str) -> tuple[list[str], list[str]]:
    """(reasons the step fails, warnings) — the one place that decides a step's outcome."""
    if o.error:
        return [o.error], []
    problems, notes = [], []
    if step in o.step_failures:
        problems.append(o.step_failures[step])
    problems += [f"runtime drift: {line}" for line in o.drift.runtime if line.startswith(f"{step} ")]
    for c in (o.record.pickle_checks if o.record else ()):
        if step in c.reader_steps:
            what = f"artifact '{c.artifact}' (from {c.step}/{c.task})"
            why = "; ".join(x for x in (c.detail, c.static) if x)
            if c.status == PickleStatus.FAILS:
                problems.append(f"pickle: {what} cannot be unpickled in this step's environment: {why}")
            elif c.status == PickleStatus.WARNING:
                notes.append(f"{what} loads with a warning: {why}")
    if o.comparison is not None:
        problems += [f"different from {o.baseline}: {r.task}.{r.name}: {r.detail}"
                     for r in o.comparison.results if r.step == step and r.verdict == "different"]
    return problems, notes


class ReproSession:
    def __init__(self, config, uid: str | None = None):
        self.config = config
        self.options = Options.from_config(config)
        self.uid = uid or uuid.uuid4().hex
        self.rootdir = Path(str(config.rootpath))
        self.settings = load_settings(self.rootdir)
        self.folder = self.settings.home / "pytest" / self.uid
        self.outcomes: dict[str, FlowOutcome] = {}

    # -- running, once ---------------------------------------------------------------------------

    def _key(self, path: Path) -> str:
        return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]

    def outcome(self, path: Path) -> FlowOutcome:
        path = Path(path).resolve()
        if str(path) in self.outcomes:
            return self.outcomes[str(path)]
        self.folder.mkdir(parents=True, exist_ok=True)
        result_file = self.folder / f"{self._key(path)}.json"
        with FileLock(str(result_file) + ".lock"):
            if result_file.exists():
                outcome = FlowOutcome.from_json(result_file.read_text())
            else:
                outcome = self._run(path)
                tmp = result_file.with_suffix(".tmp")
                tmp.write_text(outcome.to_json())
                tmp.replace(result_file)
        self.outcomes[str(path)] = outcome
        return outcome

    def all_outcomes(self) -> list[FlowOutcome]:
        """Every flow run in this session, by this process or by xdist workers."""
        found = dict(self.outcomes)
        if self.folder.exists():
            for f in sorted(self.folder.glob("*.json")):
                o = FlowOutcome.from_json(f.read_text())
                found.setdefault(o.path, o)
        return sorted(found.values(), key=lambda o: o.path)

    def _run(self, path: Path) -> FlowOutcome:
        from repro.runs.pipeline import code_dir, compare_runs, finish_record
        from repro.store.snapshot import load_record, parse_ref, push, save_local
        from repro.store import open_store

        outcome = FlowOutcome(path=str(path))
        try:
            decl = load_flow(path)
            outcome.flow, outcome.steps = decl.name, list(decl.steps)
            flow = open_flow(path)
            settings = flow.settings
            outcome.drift = drift_mod.check(flow, resolution=self.options.drift)
            if self.options.platforms:
                from repro.env.engine import spec_drift

                outcome.drift.spec += [f"{d.step}: {line}" for d in spec_drift(flow, list(self.options.platforms))
                                       for line in d.lines if "platform" in line]
            store = open_store(self.options.store or settings.store) \
                if (self.options.baseline or self.options.update) else None
            baseline = None
            if self.options.baseline:
                ref = f"{flow.name}/latest" if self.options.baseline == "latest" else self.options.baseline
                baseline = load_record(store, parse_ref(ref))
                outcome.baseline = baseline.ref
            # A committed lock is used as is (a stale one is an error); a flow without one gets one.
            frozen = {"REPRO_FROZEN": "1"} if flow.lock is not None else {}
            code, run_id, elapsed, output = runs.run_flow(flow.path, runs.environment_name(flow), [],
                                                          env=frozen, capture=True)
            outcome.output = output[-20000:]
            if run_id is None:
                outcome.error = f"the flow did not start (exit code {code}):\n{output[-4000:]}"
                return outcome
            flow = open_flow(path)
            raw = runs.inspect(flow.name, run_id, flow.decl.parameters)
            record = runs.build_record(flow, flow.lock, run_id, raw, elapsed)
            for step, tasks in raw["steps"].items():
                bad = [t for t in tasks if not t["successful"]]
                if bad:
                    outcome.step_failures[step] = "\n".join(
                        f"task {t['task_id']} ({t['foreach']}) failed:\n{t['stderr'].strip()}" for t in bad)
            for step in flow.decl.steps:
                if step not in raw["steps"] and record.status != RunStatus.SUCCESS:
                    outcome.step_failures.setdefault(step, "not run: an earlier step failed")
            if record.status == RunStatus.SUCCESS:
                record, keep = finish_record(record, flow, settings, code_dir(settings, record.code_sha256))
                if self.options.update:
                    save_local(record, settings)
                    push(record, store, settings, keep)
                    outcome.pushed = True
                if baseline is not None:
                    outcome.comparison = compare_runs(baseline, record, store, settings)
            outcome.record = record
        except ReproError as exc:
            outcome.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - recorded once, so no item re-runs the flow
            outcome.error = f"internal error while running the flow: {type(exc).__name__}: {exc}"
        return outcome

    # -- reporting -------------------------------------------------------------------------------

    def document(self) -> dict:
        flows = []
        for o in self.all_outcomes():
            lock = None
            try:
                lock = open_flow(Path(o.path)).lock
            except ReproError:
                pass
            steps = list(o.record.steps) if o.record else (o.steps or (list(lock.steps) if lock else []))
            outcomes = {}
            for step in steps:
                problems, _ = step_problems(o, step)
                outcomes[step] = {"outcome": "failed" if problems else "passed", "message": "\n".join(problems)}
            file = os.path.relpath(o.path, self.rootdir)
            flows.append(report.flow_report(o.flow or Path(o.path).stem, file, o.record, lock, outcomes,
                                            o.comparison, o.drift, o.baseline))
        return report.document(flows)

    def report_folder(self) -> Path:
        folder = Path(self.options.report_dir)
        return folder if folder.is_absolute() else self.rootdir / folder


class RunHandle:
    """What the ``repro_run`` fixture gives a user's test."""

    def __init__(self, outcome: FlowOutcome):
        self.outcome = outcome
        self.record = outcome.record
        self.ok = bool(outcome.record and outcome.record.status == RunStatus.SUCCESS and not outcome.error)

    def artifact(self, step: str, name: str, task: str = "-"):
        """Unpickle one artifact in this process (verified against its recorded sha1 first)."""
        import pickle

        from repro.runs.pipeline import blob_source

        if self.record is None:
            raise LookupError(f"{self.outcome.path}: no run: {self.outcome.error}")
        a = self.record.steps[step].tasks[task].artifacts[name]
        data = blob_source(self.record, None)(a.sha1)
        if data is None:
            raise LookupError(f"artifact {step}/{task}.{name} is not available")
        return pickle.loads(data)
