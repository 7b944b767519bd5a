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
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from metaflow_repro.checks.compare import ReplayCheck
from metaflow_repro.env.engine import relock_command
from metaflow_repro.env.flowfile import FlowDeclarations, load_flow
from metaflow_repro.errors import ReproError
from metaflow_repro.model.findings import DRIFT_KINDS, Finding, Kind, Severity, select
from metaflow_repro.model.interpreter import ExecutorKind
from metaflow_repro.model.lock import Lock, lock_path, read_lock
from metaflow_repro.model.record import NO_FOREACH, RunRecord
from metaflow_repro.operations.check import check_counts, run_repeated
from metaflow_repro.operations.replay import check_where, replay_elsewhere, replay_findings
from metaflow_repro.operations.run import LOCK_SUBJECT, Outcome, RunOptions, run_and_record
from metaflow_repro.report.document import (
    ReportDocument,
    StepOutcome,
    build_flow,
    document,
    recorded_outcome,
    replay_report,
)
from metaflow_repro.settings import Settings, find_pyproject, load_settings
from metaflow_repro.store import open_store


@dataclass
class Options:
    store: str | None = None
    baseline: str | None = None
    update: bool = False
    drift: bool = False
    report_dir: str = "reports"
    platforms: tuple = ()
    allow_other_flow: bool = False  # a baseline of another flow file (same class name) may be compared
    frozen: bool = False  # a stale lock is an error and the flow does not run (REPRO_FROZEN, --repro-frozen)
    on: str = ExecutorKind.LOCAL.value  # also replay each run from the store there: docker | batch (--repro-on)
    hermetic: bool = False  # fail a step that read what a replay cannot give back (--repro-hermetic, REPRO_HERMETIC)
    repeat: int = 1  # runs of each flow, compared for determinism (--repro-repeat)

    @property
    def elsewhere(self) -> bool:
        """Each run is also replayed from the store at another place (``--repro-on``)."""
        return self.on != ExecutorKind.LOCAL.value  # an unknown place is refused by check_where, naming it

    @classmethod
    def from_config(cls, config, settings: Settings | None = None) -> Options:
        """Command line first, then [tool.pytest.ini_options] (repro_*), then the settings
        (REPRO_* variables over [tool.repro], see metaflow_repro.settings; by default those of the rootdir)."""
        settings = settings or load_settings(Path(str(config.rootpath)))

        def pick(opt, ini, name):
            value = config.getoption(opt)
            if value not in (None, False, [], ""):
                return value
            return config.getini(ini) or settings.given(name) or None

        return cls(
            store=pick("repro_store", "repro_store", "store"),
            baseline=pick("repro_baseline", "repro_baseline", "baseline"),
            update=bool(pick("repro_update", "repro_update", "update")),
            drift=bool(pick("repro_drift", "repro_drift", "drift")),
            report_dir=pick("repro_report", "repro_report", "report") or settings.report,
            platforms=tuple(
                config.getoption("repro_platform")
                or (config.getini("repro_platform") or "").split()
                or settings.platforms
            ),
            frozen=bool(config.getoption("repro_frozen") or settings.frozen),
            allow_other_flow=bool(
                config.getoption("repro_allow_other_flow") or config.getini("repro_allow_other_flow")
            ),
            on=pick("repro_on", "repro_on", "on") or ExecutorKind.LOCAL.value,
            hermetic=bool(pick("repro_hermetic", "repro_hermetic", "hermetic")),
            repeat=_repeat(config.getoption("repro_repeat"), config.getini("repro_repeat")),
        )


def _repeat(option: int | None, ini: str) -> int:
    """``--repro-repeat`` (else the ``repro_repeat`` ini key), checked by ``check_where``; 1: run once."""
    if option is not None:
        return option
    try:
        return int(ini or 1)
    except ValueError:
        raise pytest.UsageError(f"repro_repeat = {ini!r}: expected a whole number of runs") from None


#: the user property of a step item whose exception @catch handled (shown as CAUGHT)
CAUGHT_PROPERTY = "repro_caught"

#: the findings that fail a step's own item ([lock] reports spec and resolution drift)
STEP_KINDS = (
    Kind.TASK_FAILED,
    Kind.NOT_RUN,
    Kind.RUNTIME_DRIFT,
    Kind.PICKLE,
    Kind.ARTIFACT,
    Kind.REPLAY,
    Kind.NOT_HERMETIC,
)


def problem_text(f: Finding) -> str:
    return f"{f.kind}: {f.line()}" if f.kind in DRIFT_KINDS else f.message


def step_problems(o: Outcome, step: str) -> tuple[list[str], list[str]]:
    """(reasons the step fails, warnings) — the one place that decides a step's outcome."""
    if o.error:
        return [o.error], []
    mine = [f for f in select(o.findings, kind=STEP_KINDS, step=step)]
    return (
        [problem_text(f) for f in mine if f.severity is Severity.ERROR],
        [f.message for f in mine if f.severity is Severity.WARNING],
    )


def replay_problems(o: Outcome) -> list[str]:
    """What fails [replay] (``--repro-on docker|batch``): the run was not replayed there, the replay
    failed, or its results differ (each difference, with where it ran)."""
    check = o.replay
    if check is None:
        return [f"no run to replay: {o.error or 'the run failed'}"]
    where = f"on {check.on}" + (
        f" ({check.executor.kind}{', image ' + check.executor.image if check.executor.image else ''})"
        if check.executor
        else ""
    )
    if not check.verdict:
        return [f"the replay {where} could not run: {check.error}"]
    if check.passed:
        return []
    lines = [
        f"the replay {where} of {o.record.ref if o.record else o.flow} is {check.verdict}"
        + (f" (recorded as {check.run})" if check.run else "")
    ]
    if check.error:
        lines.append(f"{check.failed_step + ': ' if check.failed_step else ''}{check.error}")
    lines += [
        f.message for f in select(o.findings, kind=Kind.REPLAY) if not check.failed_step or f.step != check.failed_step
    ]
    return lines


def step_skip(o: Outcome) -> str | None:
    """Why the step items (and [pickle], [baseline]) are skipped: a frozen stale lock held the run back."""
    if o.held:
        return f"not run: the lock is stale and frozen (REPRO_FROZEN or --repro-frozen); see {o.flow}::[lock]"
    if any(f.subject == LOCK_SUBJECT for f in select(o.findings, kind=Kind.FLOW_ERROR)):
        return f"not run: the flow's declarations cannot be locked; see {o.flow}::[lock]"
    return None


def lock_problems(o: Outcome) -> list[str]:
    """What fails [lock]: drift of any kind, or declarations that could not be read or locked."""
    lines = [f"{f.kind}: {f.line()}" for f in select(o.findings, kind=DRIFT_KINDS)]
    errors = [f for f in select(o.findings, kind=Kind.FLOW_ERROR) if f.subject == LOCK_SUBJECT]
    lines += [f.message for f in errors]
    if o.error and not o.flow and not errors:
        lines.append(o.error)
    return lines


def lock_advice(o: Outcome, flow_file: str) -> str:
    """What to do about a failing [lock]: the command that fixes it, or "commit" after a re-lock."""
    lock_file = Path(flow_file).stem + ".repro.lock"
    if any(f.subject == LOCK_SUBJECT for f in select(o.findings, kind=Kind.FLOW_ERROR)):
        return "Fix the declaration, then run `repro lock " + flow_file + "` and commit the lock."
    command = relock_command(flow_file, o.findings)
    if o.relocked and command == f"repro lock {flow_file}":
        return f"This run re-locked it: commit the updated lock {lock_file}."
    if o.held:
        return (
            f"The lock is frozen (REPRO_FROZEN or --repro-frozen), so the flow did not run: run "
            f"`{command}` and commit the lock."
        )
    if o.relocked:
        return f"This run re-locked it for this machine: run `{command}` too and commit the updated lock {lock_file}."
    return f"Update it with `{command}` and commit it."


class ReproSession:
    """One pytest run's flows: each run once (also across xdist workers), its outcome kept."""

    def __init__(self, config, uid: str | None = None):
        self.config = config
        self.uid = uid or uuid.uuid4().hex
        self.rootdir = Path(str(config.rootpath))
        self.settings = load_settings(self.rootdir)
        self.options = Options.from_config(config, self.settings)
        self.folder = self.settings.home.pytest_session(self.uid)
        self.outcomes: dict[str, Outcome] = {}
        # read once per flow file and kept for its run: collecting a flow imports it, running it does not again
        self._declarations: dict[str, FlowDeclarations] = {}
        self._settings: dict[Path | None, Settings] = {self.settings.config_file: self.settings}
        self.expected_failures: set[str] = set()  # node ids of items that failed as a strict xfail expects

    def pytest_runtest_logreport(self, report) -> None:
        """pytest's report of one item (also from xdist workers): remember expected failures."""
        if report.when == "call" and getattr(report, "wasxfail", None) is not None and report.skipped:
            self.expected_failures.add(report.nodeid)

    def pytest_report_teststatus(self, report, config):
        """A step item whose exception @catch handled shows as CAUGHT (counted apart from passed)."""
        if report.when == "call" and report.passed and any(k == CAUGHT_PROPERTY for k, _ in report.user_properties):
            return "caught", "c", ("CAUGHT", {"yellow": True})
        return None

    # -- reading, once ---------------------------------------------------------------------------

    def declarations(self, path: Path) -> FlowDeclarations:
        """The flow's declarations (what collection needs: its name and steps), read once: its run
        reuses them instead of importing the flow file again."""
        key = str(Path(path).resolve())
        if key not in self._declarations:
            self._declarations[key] = load_flow(Path(path))
        return self._declarations[key]

    def settings_for(self, path: Path) -> Settings:
        """The settings of the flow at ``path`` (those of its pyproject.toml, as ``repro run`` reads
        them): the session's own when it is the rootdir's file, else read once per file."""
        pyproject = find_pyproject(Path(path))
        if pyproject not in self._settings:
            self._settings[pyproject] = load_settings(Path(path))
        return self._settings[pyproject]

    # -- running, once ---------------------------------------------------------------------------

    def _key(self, path: Path) -> str:
        return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]

    def outcome(self, path: Path) -> Outcome:
        path = Path(path).resolve()
        if str(path) in self.outcomes:
            return self.outcomes[str(path)]
        self.folder.mkdir(parents=True, exist_ok=True)
        result_file = self.folder / f"{self._key(path)}.json"
        with FileLock(str(result_file) + ".lock"):
            if result_file.exists():
                outcome = Outcome.from_json(result_file.read_text())
            else:
                outcome = self._run(path)
                tmp = result_file.with_suffix(".tmp")
                tmp.write_text(outcome.to_json())
                tmp.replace(result_file)
        self.outcomes[str(path)] = outcome
        return outcome

    def all_outcomes(self) -> list[Outcome]:
        """Every flow run in this session, by this process or by xdist workers."""
        found = dict(self.outcomes)
        if self.folder.exists():
            for f in sorted(self.folder.glob("*.json")):
                o = Outcome.from_json(f.read_text())
                found.setdefault(o.path, o)
        return sorted(found.values(), key=lambda o: o.path)

    def store_uri(self) -> str:
        return self.options.store or self.settings.store

    def check_where(self) -> None:
        """``--repro-on docker|batch``: refuse at once (ReproError naming what to set) when that place
        cannot be reached, before any flow runs."""
        if self.options.repeat != 1:
            check_counts(self.options.repeat, None)
        if self.options.elsewhere:
            check_where(self.options.on, open_store(self.store_uri()).uri, self.settings, option="--repro-on")

    def _run(self, path: Path) -> Outcome:
        try:
            outcome = self._run_here(path)
        except Exception as exc:
            return Outcome(
                path=str(path),
                error=f"internal error while running the flow: {type(exc).__name__}: {exc}",
                error_code=3,
                lock=_committed_lock(path),
            )
        if self.options.elsewhere and outcome.ok and outcome.record is not None:
            self._replay_elsewhere(outcome, outcome.record)
        return outcome

    def _replay_elsewhere(self, outcome: Outcome, record: RunRecord) -> None:
        """``--repro-on``: replay the run just pushed there; its differences fail the steps, [replay] the rest."""
        on = self.options.on
        self.progress(f"{outcome.flow}: replaying run {record.run_id} on {on}")
        try:
            check = replay_elsewhere(record, on, self.store_uri(), self.settings, log=self.progress)
        except Exception as exc:  # not a ReproError (those are in the check): the run here stays recorded
            check = ReplayCheck(on=on, error=f"internal error: {type(exc).__name__}: {exc}", error_code=3)
        outcome.replay = check
        outcome.findings += replay_findings(check)
        self.progress(f"{outcome.flow}: replay on {on}: {check.verdict or 'not run'}")

    def _run_here(self, path: Path) -> Outcome:
        o = self.options
        decl = self._declarations.get(str(path))  # what collection read (none for the repro_run fixture)
        try:  # a flow the repro_run fixture runs reads its settings now (a test may have set REPRO_*)
            settings = self.settings_for(path) if decl is not None else load_settings(Path(path))
        except ReproError as exc:  # the flow's own [tool.repro] is bad input, for this flow only
            outcome = Outcome(path=str(Path(path).resolve()))
            if decl is not None:
                outcome.flow, outcome.steps = decl.name, list(decl.steps)
            return outcome.fail(exc)
        elsewhere = o.elsewhere  # pushed to be replayed from the store; a new baseline only with update
        options = RunOptions(
            store=o.store,
            push=o.update or elsewhere,
            move_latest=o.update,
            baseline=o.baseline,
            drift=True,
            resolution_drift=o.drift,
            platforms=tuple(o.platforms),
            frozen=o.frozen,  # else a stale or missing lock is re-locked, and [lock] fails
            capture=True,
            allow_other_flow=o.allow_other_flow,
            settings=settings,
            hermetic=o.hermetic,
        )
        if o.repeat > 1:  # N runs at once, the first's outcome with what differed between them
            return run_repeated(
                path, options, o.repeat, settings.nondeterministic, log=self.progress, declarations=decl
            )
        return run_and_record(path, options, log=self.progress, declarations=decl)

    def progress(self, message: str) -> None:
        """One line of progress on pytest's terminal (not under -q, not from xdist workers)."""
        config = self.config
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or config.get_verbosity() < 0 or hasattr(config, "workerinput"):
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.ensure_newline()
                reporter.write_line(f"repro: {message}")
        else:
            reporter.ensure_newline()
            reporter.write_line(f"repro: {message}")

    # -- reporting -------------------------------------------------------------------------------

    def document(self) -> ReportDocument:
        flows = []
        for o in self.all_outcomes():
            lock = o.lock
            steps = list(o.record.steps) if o.record else (o.steps or (list(lock.steps) if lock else []))
            file = os.path.relpath(o.path, self.rootdir)
            outcomes = {step: self.step_outcome(o, step, f"{file}::{o.flow}::{step}") for step in steps}
            flows.append(
                build_flow(
                    o.flow or Path(o.path).stem,
                    file,
                    o.record,
                    lock,
                    outcomes,
                    o.comparison,
                    o.findings,
                    o.baseline,
                    store=o.pushed or (self.options.store or self.settings.store if o.baseline else None),
                    replay=replay_report(o.replay) if o.replay else None,
                )
            )
        return document(flows)

    def step_outcome(self, o: Outcome, step: str, nodeid: str) -> tuple[StepOutcome, str]:
        """A step's line in the reports: passed, failed, not run (never started), or expected failure."""
        skip = step_skip(o)
        if skip:
            return StepOutcome.NOT_RUN, skip
        problems, _ = step_problems(o, step)
        if not problems:  # passed, caught (@catch), or not run because a switch took another branch
            return recorded_outcome(o.record, step) or (StepOutcome.PASSED, "")
        if nodeid in self.expected_failures:
            return StepOutcome.EXPECTED_FAILURE, "\n".join(problems)
        mine = select(o.findings, step=step, severity=Severity.ERROR)
        if mine and all(f.kind is Kind.NOT_RUN for f in mine):
            return StepOutcome.NOT_RUN, "\n".join(problems)
        return StepOutcome.FAILED, "\n".join(problems)

    def report_folder(self) -> Path:
        folder = Path(self.options.report_dir)
        return folder if folder.is_absolute() else self.rootdir / folder


def _committed_lock(path: Path) -> Lock | None:
    """The flow's lock file as committed, for the report of a flow whose run ended in an internal error."""
    try:
        return read_lock(lock_path(Path(path)))
    except ReproError:
        return None


class RunHandle:
    """What the ``repro_run`` fixture gives a user's test."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        self.record = outcome.record
        self.ok = outcome.ok

    def _blob(self, step: str, name: str, task: str) -> bytes:
        from metaflow_repro.operations.run import blob_source

        if self.record is None:
            raise LookupError(f"{self.outcome.path}: no run: {self.outcome.error}")
        if step not in self.record.steps:
            raise LookupError(f"{self.record.flow} has no step {step!r} (steps: {', '.join(self.record.steps)})")
        tasks = self.record.steps[step].tasks
        if task not in tasks or name not in tasks[task].artifacts:
            raise LookupError(f"{self.record.flow}.{step} has no artifact {name!r} in task {task!r}")
        data = blob_source(self.record, None)(tasks[task].artifacts[name].sha1)
        if data is None:
            raise LookupError(f"artifact {step}/{task}.{name} is not available")
        return data

    def artifact(self, step: str, name: str, task: str = NO_FOREACH):
        """Unpickle one artifact in this process (verified against its recorded sha1 first). When this
        interpreter lacks a module the artifact needs, the error names the step's environment and
        points at ``artifact_in_env``."""
        import pickle

        data = self._blob(step, name, task)
        assert self.record is not None, "_blob refuses a run without a record"
        try:
            return pickle.loads(data)
        except ImportError as exc:
            env_id = self.record.steps[step].env_id
            env = self.record.envs.get(env_id)
            where = (
                f"env {env_id[:12]} (Python {env.python}, {len(env.packages)} packages)"
                if env
                else f"env {env_id[:12]}"
            )
            raise ArtifactNotLoadable(
                f"{self.record.flow}.{step}.{name} cannot be unpickled in this test's interpreter: {exc}. It was "
                f"written in {where}, which has that module. Load it there instead: "
                f"repro_run.artifact_in_env({step!r}, {name!r}) returns it as a plain value (lists, dicts, "
                f"numbers, strings)"
            ) from exc

    def artifact_in_env(self, step: str, name: str, task: str = NO_FOREACH):
        """Unpickle one artifact inside the step's own environment and return it as a plain value:
        JSON-like data as is, objects with ``to_dict()`` / ``tolist()`` (DataFrames, arrays) through
        those, anything else as its ``repr``."""
        import subprocess

        from metaflow_repro.adapter.codepackage import import_paths
        from metaflow_repro.operations.run import code_dir, env_pythons

        data = self._blob(step, name, task)
        assert self.record is not None, "_blob refuses a run without a record"
        settings = load_settings(Path(self.outcome.path))
        env_id = self.record.steps[step].env_id
        python = env_pythons(self.record, settings).get(env_id)
        if python is None:
            raise LookupError(
                f"{self.record.flow}.{step}: its environment {env_id[:12]} is not built here; "
                f"`repro env build {Path(self.outcome.path).name} --step {step}` builds it"
            )
        code = code_dir(settings, self.record.code_sha256)
        paths = import_paths(code) if code else []
        proc = subprocess.run([python, "-c", _PLAIN_VALUE, *paths], input=data, capture_output=True)
        if proc.returncode != 0:
            raise ArtifactNotLoadable(
                f"{self.record.flow}.{step}.{name} does not load in its own environment "
                f"{env_id[:12]} ({python}):\n{proc.stderr.decode(errors='replace')[-2000:]}"
            )
        return json.loads(proc.stdout)


class ArtifactNotLoadable(ImportError):
    """An artifact that cannot be unpickled where it was asked for (``RunHandle.artifact``)."""


#: runs in a step's environment (Python 3.7+, standard library only): pickle on stdin -> JSON on stdout
_PLAIN_VALUE = r"""
import json, pickle, sys
for entry in reversed(sys.argv[1:]):
    sys.path.insert(0, entry)
value = pickle.loads(sys.stdin.buffer.read())
def plain(v):
    for attr in ("to_dict", "tolist"):
        f = getattr(v, attr, None)
        if callable(f):
            try:
                return f(orient="list") if attr == "to_dict" and hasattr(v, "columns") else f()
            except Exception:
                pass
    return v
def default(v):
    p = plain(v)
    return p if p is not v else repr(v)
sys.stdout.write(json.dumps(plain(value), default=default))
"""


#: where pytest keeps this plugin's session (``config.stash[SESSION]``; absent without --repro)
SESSION = pytest.StashKey[ReproSession]()


def session_of(config) -> ReproSession:
    """The session of ``config``, made on first use (the repro_run fixture works without --repro)."""
    if SESSION not in config.stash:
        config.stash[SESSION] = ReproSession(config)
    return config.stash[SESSION]
