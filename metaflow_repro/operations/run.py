"""The one pipeline every run goes through: lock check -> run -> inspect -> record -> pickle matrix ->
save locally -> push -> compare with a baseline.

``repro run``, ``pytest --repro`` and ``repro replay`` all call ``run_and_record``; they differ only in
their ``RunOptions``. Its result, an ``Outcome``, is plain data (JSON codec included, so pytest-xdist
workers can share it); every check's result in it is a typed ``Finding``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.adapter import blobs as blobstore
from metaflow_repro.adapter import lineage, pending, s3_inputs, scratch
from metaflow_repro.adapter import metaflow as runs
from metaflow_repro.adapter import reads as file_reads
from metaflow_repro.adapter.codepackage import import_paths
from metaflow_repro.adapter.flowfolder import check_flow_folder
from metaflow_repro.checks import drift, hermetic, pickles
from metaflow_repro.checks.compare import Comparison, ReplayCheck, compare
from metaflow_repro.env import pycache
from metaflow_repro.env.engine import Flow, current_lock, environments, flow_lock, open_flow, spec_drift
from metaflow_repro.env.flowfile import FlowDeclarations, load_flow
from metaflow_repro.env.interpreter_snapshot import snapshot_interpreters
from metaflow_repro.errors import BadInput, InfraError, ReproError
from metaflow_repro.executors.batch import batch_executor, runs_on_batch
from metaflow_repro.fsutil import space_note
from metaflow_repro.model.findings import Finding, Kind, Severity
from metaflow_repro.model.inspection import RunInspection
from metaflow_repro.model.interpreter import Executor
from metaflow_repro.model.lock import Lock, parse_lock
from metaflow_repro.model.platforms import local_platform_name
from metaflow_repro.model.record import RunRecord, RunStatus, from_json
from metaflow_repro.model.validate import cap
from metaflow_repro.settings import Settings, check_metaflow_args, environ_for, load_settings
from metaflow_repro.store import Store, layout, open_store
from metaflow_repro.store.base import StoreObjectMissing
from metaflow_repro.store.snapshot import (
    fetch_artifact,
    load_record,
    local_record_path,
    parse_ref,
    push,
    read_latest,
    record_at,
    save_local,
)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class RunOptions:
    """How ``run_and_record`` runs one flow."""

    store: str | None = None  # where records go and baselines come from (default: the settings' store)
    push: bool = False  # save the record locally and push the snapshot to the store
    move_latest: bool = True  # a push moves the flow's `latest` to this run (False: pushed only to be replayed)
    baseline: RunRecord | str | None = None  # compare with this run: a record, a REF, or "latest"
    drift: bool = False  # check spec and runtime drift before running
    resolution_drift: bool = False  # ... and re-resolve every lock (network)
    platforms: tuple[str, ...] = ()  # platforms every lock must cover (spec drift otherwise)
    frozen: bool | None = False  # a stale lock is an error; None: frozen when the flow has a lock
    metaflow_args: tuple[str, ...] = ()  # options for Metaflow's `run`
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the Metaflow process
    capture: bool = False  # capture Metaflow's output (pytest) instead of streaming it
    pickle_checks: bool = True
    settings: Settings | None = None  # default: read from the flow's folder
    allow_other_flow: bool = False  # compare with a baseline recorded from another flow file
    identity: str = ""  # the flow's identity when it is not where it was recorded (replays)
    cwd: Path | None = None  # the Metaflow process's current folder (None: ours; a replay: its own folder)
    hermetic: bool = False  # strict mode (also the ``hermetic`` setting): reads a replay cannot give back fail
    resume: tuple[str, ...] = ()  # (origin run id, step): Metaflow's `resume` from that step (bisect), not `run`
    executor: Executor | None = None  # a replay's: what ran it, as its place found (None: found here)


@dataclass
class Outcome:
    """What became of one flow: its run's record and every finding, or why there is no run."""

    path: str
    flow: str = ""
    steps: list[str] = field(default_factory=list)
    record: RunRecord | None = None
    findings: list[Finding] = field(default_factory=list)
    comparison: Comparison | None = None
    baseline: str | None = None  # the baseline's REF
    error: str = ""  # the flow could not be checked or run at all
    error_code: int = 0  # the exit code that error stands for
    exit_code: int = 0  # the Metaflow process's exit code
    output: str = ""  # Metaflow's output, when captured
    saved: str = ""  # where the record was saved in REPRO_HOME
    pushed: str = ""  # the store it was pushed to
    relocked: bool = False  # the lock was stale (or missing) and was re-locked before the run
    held: bool = False  # the lock was stale and frozen, so the flow did not run
    replay: ReplayCheck | None = None  # the run replayed elsewhere from the store (pytest --repro-on)
    lock: Lock | None = None  # the flow's lock as the run left it (re-locked, or as committed); None: unread
    note: str = ""  # `repro recover`: why a pending run was dropped (it never started, or did not finish)

    @property
    def ok(self) -> bool:
        return bool(self.record and self.record.status is RunStatus.SUCCESS and not self.error)

    def fail(self, exc: ReproError, subject: str = "") -> Outcome:
        """Record why the flow could not be checked or run; ``subject="lock"``: its declarations
        could not be read or locked (what fails ``[lock]``)."""
        self.error, self.error_code = str(exc), exc.exit_code
        self.findings.append(Finding(Kind.FLOW_ERROR, str(exc), subject=subject))
        return self

    def to_json(self) -> str:
        return json.dumps(
            {
                "path": self.path,
                "flow": self.flow,
                "steps": self.steps,
                "record": json.loads(self.record.to_json()) if self.record else None,
                "findings": [f.to_dict() for f in self.findings],
                "comparison": self.comparison.to_dict() if self.comparison else None,
                "baseline": self.baseline,
                "error": self.error,
                "error_code": self.error_code,
                "exit_code": self.exit_code,
                "output": self.output,
                "saved": self.saved,
                "pushed": self.pushed,
                "relocked": self.relocked,
                "held": self.held,
                "replay": self.replay.to_dict() if self.replay else None,
                "lock": self.lock.to_toml() if self.lock else None,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        d = json.loads(text)
        return cls(
            path=d["path"],
            flow=d["flow"],
            steps=d["steps"],
            record=from_json(json.dumps(d["record"]), d["path"]) if d["record"] else None,
            findings=[Finding.from_dict(f) for f in d["findings"]],
            comparison=Comparison.from_dict(d["comparison"]) if d["comparison"] else None,
            baseline=d["baseline"],
            error=d["error"],
            error_code=d["error_code"],
            exit_code=d["exit_code"],
            output=d["output"],
            saved=d["saved"],
            pushed=d["pushed"],
            relocked=d.get("relocked", False),
            held=d.get("held", False),
            replay=ReplayCheck.from_dict(d["replay"]) if d.get("replay") else None,
            lock=parse_lock(d["lock"], Path(d["path"])) if d.get("lock") else None,
        )


def run_and_record(
    path: Path, options: RunOptions | None = None, log: Log = _quiet, declarations: FlowDeclarations | None = None
) -> Outcome:
    """Run the flow at ``path`` once under repro's environments and check everything about it.

    Bad input and infrastructure failures end up in ``outcome.error`` (with their exit code), never
    raised, so that callers can report them per flow (the CLI raises them again). ``declarations``:
    the flow's, when the caller already read them with ``options.metaflow_args`` (pytest does, to
    collect it): the flow file is then not imported again."""
    options = options or RunOptions()
    path = Path(path)
    outcome = Outcome(path=str(path.resolve()))
    try:
        check_metaflow_args(list(options.metaflow_args))  # before anything runs: repro's own options, NUL bytes
        decl = declarations if declarations is not None else load_flow(path, options.metaflow_args)
        outcome.flow, outcome.steps = decl.name, list(decl.steps)
        _run(path, decl, options, outcome, log)
    except _LockFailed as exc:
        outcome.fail(exc.error, subject=LOCK_SUBJECT)
    except ReproError as exc:
        outcome.fail(exc)
    return outcome


#: the ``subject`` of a FLOW_ERROR finding when the flow's declarations could not be read or locked
LOCK_SUBJECT = "lock"


class _LockFailed(Exception):
    def __init__(self, error: ReproError):
        super().__init__(str(error))
        self.error = error


def _lock_for_run(flow, frozen: bool, outcome: Outcome, log: Log) -> None:
    """Make sure the lock covers this machine before Metaflow starts: a stale or missing lock is
    re-locked here (so a declaration that cannot be locked is a lock error, not a run failure), or,
    when frozen, the flow is held back (``outcome.held``) and nothing runs."""
    stale = spec_drift(flow, [local_platform_name()])
    if not stale:
        return
    if frozen:
        outcome.held = True
        known = {(f.step, f.message) for f in outcome.findings}
        outcome.findings += [f for f in stale if (f.step, f.message) not in known]
        raise BadInput(
            f"{flow.path.name}: the lock does not match the flow ({flow.lock_file.name}) and is frozen "
            f"(REPRO_FROZEN), so the flow does not run: "
            + cap((f.line() for f in stale), sep="; ")
            + f". Run `repro lock {flow.path.name}` (with network access) and commit the lock."
        )
    try:
        current_lock(flow, offline=flow.settings.offline, log=log, frozen=frozen)
    except ReproError as exc:
        raise _LockFailed(exc) from None
    outcome.lock = flow.lock
    outcome.relocked = True


def _s3_datastore(env: dict[str, str]) -> bool | None:
    """Whether the Metaflow process gets an S3 datastore, when its environment says (a replay's does);
    None: Metaflow's own setting in this process decides, as it will in the Metaflow process."""
    kind = env.get("METAFLOW_DEFAULT_DATASTORE")
    return None if kind is None else kind == "s3"


@dataclass(frozen=True)
class _Before:
    """What is settled before Metaflow starts: the store (when records go there or a baseline comes
    from it), the baseline, and whether the lock is frozen."""

    store: Store | None
    baseline: RunRecord | None
    frozen: bool


def _run(path: Path, decl: FlowDeclarations, options: RunOptions, outcome: Outcome, log: Log) -> None:
    settings = options.settings or load_settings(path)
    check_flow_folder(path, settings.home.root)  # before anything is locked, built or packaged
    try:
        flow = open_flow(path, settings, options.metaflow_args, s3_datastore=_s3_datastore(options.env), decl=decl)
    except ReproError as exc:  # a declaration that cannot be merged or a lock that cannot be read
        raise _LockFailed(exc) from None
    outcome.lock = flow.lock
    before = _before_run(flow, options, settings, outcome, log)
    _lock_for_run(flow, before.frozen, outcome, log)
    # Metaflow's and the read-back's temporary files and client cache under REPRO_HOME/tmp (issue 22 item 13)
    env = {
        **scratch.child_env(settings.home),
        # the archive bound as this flow's settings say: Metaflow's runtime and the read-back read the environment only
        **environ_for(archive_max_bytes=settings.archive_max_bytes),
        **options.env,
        **(environ_for(frozen=True) if before.frozen else {}),
    }
    # a pushed run is marked before Metaflow starts, so that a repro killed from here on loses no run
    marker = _mark_pending(flow, options, env, settings, before.store) if options.push else None
    try:
        run_id, elapsed = _start(flow, options, env, outcome, log, marker)
    except BaseException:  # no run: nothing to record (a run Metaflow started keeps its marker: recover)
        if marker is not None:
            _drop_unstarted(marker)
        raise
    flow.lock = flow_lock(flow.path, flow.name)  # Metaflow's process re-locks a lock it finds stale
    outcome.lock = flow.lock
    done = _Finished(flow, run_id, elapsed, env, options, settings, before.store)
    _record(done, before.baseline, outcome, log, marker)


def _drop_unstarted(marker: Path) -> None:
    """Remove the marker of a run Metaflow never started. One whose run id Metaflow wrote stays, even if
    ``_start`` failed after it (its update to finished hit a full disk, Ctrl-C just after Metaflow exited):
    ``repro recover`` records the run if it finished and drops it if not."""
    try:
        started = pending.started_run_id(marker)
    except ReproError:  # an unreadable run id: recover says what is wrong with it
        return
    if not started:
        pending.remove(marker)


def _before_run(flow: Flow, options: RunOptions, settings: Settings, outcome: Outcome, log: Log) -> _Before:
    """Drift checks, the store and the baseline: everything that may refuse the run before it starts
    (a baseline of another flow is refused here, before anything is locked or run)."""
    if options.drift:
        outcome.findings += drift.check(flow, resolution=options.resolution_drift, platforms=list(options.platforms))
    frozen = settings.frozen or (flow.lock is not None if options.frozen is None else options.frozen)
    store = open_store(options.store or settings.store) if (options.push or options.baseline is not None) else None
    baseline = options.baseline
    identity = options.identity or runs.expected_identity(flow, options.metaflow_args, options.env)
    if isinstance(baseline, str):
        assert store is not None, "opened above: a baseline is given"
        baseline = load_baseline(store, flow.name, identity, baseline)
    if baseline is not None:
        outcome.baseline = baseline.ref
        check_same_identity(baseline, flow.name, identity, options.allow_other_flow)
    if options.resolution_drift:  # input drift: the runs of other flows the recorded run read, then and now
        recorded = (
            baseline
            if baseline is not None
            else latest_record(store or open_store(options.store or settings.store), flow, identity, log)
        )
        if recorded is not None:
            outcome.findings += drift.check_inputs(recorded, lineage.latest_runs(recorded))
            outcome.findings += drift.check_s3_inputs(recorded)
    return _Before(store=store, baseline=baseline, frozen=frozen)


def _start(
    flow: Flow, options: RunOptions, env: dict[str, str], outcome: Outcome, log: Log, marker: Path | None = None
) -> tuple[str, float]:
    """Run the flow with Metaflow; (run id, seconds). A process that started no run is an error.
    ``marker``: the run's pending marker, marked finished the instant Metaflow exits with 0."""
    log(f"{flow.name}: building environments and running the flow with Metaflow")
    code, run_id, elapsed, output = runs.run_flow(
        flow.path,
        runs.environment_name(flow),
        list(options.metaflow_args),
        env=env,
        capture=options.capture,
        run_id_file=pending.run_id_file(marker) if marker is not None else None,
        cwd=options.cwd,
        resume=options.resume,
    )
    if marker is not None and code == 0 and run_id:
        _marker_finished(marker, run_id, elapsed, flow.lock_file)
    outcome.exit_code, outcome.output = code, output[-20000:]
    log(
        f"{flow.name}: "
        + (f"run {run_id} " if run_id else "Metaflow ")
        + f"ended in {elapsed:.1f} s (exit code {code})"
    )
    if run_id is None and code == 0:
        raise BadInput(
            f"{flow.path.name}: running it started no Metaflow run. Does the file end with "
            f'`if __name__ == "__main__":` and `{flow.name}()`?'
        )
    if run_id is None:
        check_space(flow.settings, f"{flow.path.name}: the flow did not start", output)
        tail = f":\n{output[-4000:]}" if output else "; see its output above"
        raise _MetaflowFailed(f"{flow.path.name}: the flow did not start (exit code {code}){tail}", code)
    return run_id, elapsed


#: what a process that ran out of disk space says (``OSError: [Errno 28] No space left on device``)
_NO_SPACE = ("No space left on device", "[Errno 28]", "Disk quota exceeded")


def check_space(settings: Settings, what: str, output: str = "") -> None:
    """Raise an InfraError naming the file system when ``what`` (a run or a process that failed) failed
    for want of disk space: only when its ``output`` (or its failed tasks' logs) says so (ENOSPC), never
    from free space alone (root writes into a file system's reserved blocks: a step that fails on a
    nearly full disk is a failed step). A full disk is never reported as a failed step."""
    if any(marker in output for marker in _NO_SPACE):
        raise InfraError(
            f"{what}: no space left on device; {space_note(settings.home.root)} (REPRO_HOME: {settings.home.root}). "
            "Free some space there and run again; `repro recover` then records a run that finished."
        )


@dataclass(frozen=True)
class _Finished:
    """A Metaflow run that finished, and how it was run: what reading it back and recording it need
    (right after the run, or later by ``recover`` from its pending-run file)."""

    flow: Flow
    run_id: str
    elapsed: float
    env: dict[str, str]
    options: RunOptions
    settings: Settings
    store: Store | None  # where the record goes (None: not pushed)


def _mark_pending(
    flow: Flow, options: RunOptions, env: dict[str, str], settings: Settings, store: Store | None
) -> Path:
    """The pending marker of a run about to start (``adapter/pending``): what ``repro recover`` needs to
    record it if this repro is stopped before the run is recorded and pushed."""
    ran_in = Path(options.cwd or os.getcwd()).resolve()  # where Metaflow runs: its .metaflow is found from there
    return pending.start(
        settings.home,
        pending.PendingRun(
            path=str(flow.path),
            flow=flow.name,
            run_id="",
            elapsed=0.0,
            lock_sha256=runs.lock_sha256(flow.lock_file),
            store=store.uri if store is not None else "",
            metaflow_args=tuple(options.metaflow_args),
            env=pending.locating_env(env, ran_in),
            identity=options.identity,
            cwd=os.getcwd(),
            ran_in=str(ran_in),
            move_latest=options.move_latest,
        ),
    )


def _marker_finished(marker: Path, run_id: str, elapsed: float, lock_file: Path) -> None:
    """The run finished: its id and duration, and the lock as Metaflow's process left it (it re-locks a
    stale lock it finds)."""
    run = pending.locate(pending.parse(marker.read_text(), str(marker)))  # the .metaflow Metaflow made
    done = replace(run, state=pending.FINISHED, run_id=run_id, elapsed=round(elapsed, 3))
    pending.update(marker, replace(done, lock_sha256=runs.lock_sha256(lock_file)) if lock_file.is_file() else done)


def _marker_recorded(marker: Path | None) -> None:
    if marker is not None:
        run = pending.parse(marker.read_text(), str(marker))
        pending.update(marker, replace(run, state=pending.RECORDED))


def _record(
    done: _Finished, baseline: RunRecord | None, outcome: Outcome, log: Log, marker: Path | None = None
) -> None:
    """Read the finished run back, record it, check its pickles, push it, compare it with the baseline.
    ``marker``: its pending marker. The record is saved only whole, after its checks (the marker then
    says so), and the marker is removed once the push is done. If the checks fail or repro is stopped
    before, no record is saved and the marker stays: ``repro recover`` makes the record again."""
    flow, options, settings, store = done.flow, done.options, done.settings, done.store
    record, found = _read_back(done, log)
    outcome.record = record
    outcome.findings += task_findings(found, flow.decl.steps, record.status is RunStatus.SUCCESS)
    if options.hermetic or settings.hermetic:
        outcome.findings += hermetic.findings(record, settings.hermetic_allow)
    if record.status is not RunStatus.SUCCESS:  # a failed run is not pushed
        check_space(settings, f"run {record.ref} failed", _failed_logs(found) + outcome.output)
        if marker is not None:
            pending.remove(marker)
        return
    try:
        record, keep = _finish(record, flow, options, settings, outcome, log)
    except ReproError as exc:
        if marker is None:
            raise
        raise type(exc)(
            f"{exc}\nRun {record.ref} finished but is not recorded: `repro recover` records and pushes it"
        ) from None
    if options.push:
        assert store is not None, "opened before the run: options.push is set"
        outcome.saved = str(save_local(record, settings))
        _marker_recorded(marker)
        _push(record, store, settings, keep, outcome, log, options.move_latest)
        if marker is not None:
            pending.remove(marker)
    if baseline is not None:
        check_same_flow(baseline, record, options.allow_other_flow)
        log(f"{flow.name}: comparing with {baseline.ref}")
        outcome.comparison = compare_runs(baseline, record, store, settings)
        outcome.findings += outcome.comparison.findings()


def _failed_logs(found: RunInspection) -> str:
    """What the failed tasks wrote to stderr (the evidence of a full disk, if any)."""
    return "\n".join(t.stderr for tasks in found.steps.values() for t in tasks if not t.successful)


def _push(
    record: RunRecord, store: Store, settings: Settings, keep: dict, outcome: Outcome, log: Log, latest: bool
) -> None:
    try:
        push(record, store, settings, keep, log=log, latest=latest)
    except ReproError as exc:
        raise type(exc)(
            f"{exc}\nThe run is recorded in {outcome.saved}, but its push to {store.uri} did not "
            f"finish and the store shows no record of it. Complete it with: repro recover "
            f"(or repro store push {outcome.saved})"
        ) from None
    outcome.pushed = store.uri


def _read_back(done: _Finished, log: Log) -> tuple[RunRecord, RunInspection]:
    """The finished run as Metaflow's client reads it, and its record."""
    flow, run_id, env, options, settings = done.flow, done.run_id, done.env, done.options, done.settings
    try:
        found = runs.inspect(
            flow.name,
            run_id,
            flow.decl.parameters,
            # the local metadata Metaflow wrote where it ran (a replay runs it in its own folder; on Batch the
            # datastore is S3 but the metadata is still local): found from that folder, not from this one
            env=pending.with_sysroot(env, options.cwd or os.getcwd()),
            info=flow.decl.parameter_info,
            inputs_dir=settings.home.inputs / "sha256",
            lineage_dir=settings.home.inputs / "sha1",
        )
    except InfraError as exc:
        check_space(settings, f"run {flow.name}/{run_id} cannot be read back from Metaflow", str(exc))
        raise
    assert flow.lock is not None, "the run built its environments from the flow's lock"
    record = runs.build_record(flow, flow.lock, run_id, found, done.elapsed, args=options.metaflow_args)
    if options.identity:
        record = replace(record, identity=options.identity)
    data, outside = file_reads.collect(
        found.task_reports(),
        flow.path.parent,
        settings.home.code_package(record.code_sha256),
        settings.home,
        settings.input_max_bytes,
        f"run {flow.name}/{run_id}",
    )
    record = replace(record, data_files=data, reads=outside)
    left = settings.input_max_bytes - sum(f.size for f in data.values() if f.stored)  # one budget for both
    s3 = s3_inputs.collect(found.task_reports(), settings.home, left, f"run {flow.name}/{run_id}", log)
    record = replace(record, s3_inputs=s3)
    if runs_on_batch(options.metaflow_args):  # `run --with batch`: every step was an AWS Batch job, in this image
        ran = options.executor or batch_executor(options.metaflow_args, options.env, settings.home, log, done.store)
        record = replace(record, executor=ran)
    return record, found


def _finish(
    record: RunRecord, flow: Flow, options: RunOptions, settings: Settings, outcome: Outcome, log: Log
) -> tuple[RunRecord, dict[str, bytes]]:
    """The pickle matrix and (for a push) the interpreter snapshots; (the record, the artifact copies
    the store keeps)."""
    keep: dict[str, bytes] = {}
    if options.pickle_checks:
        log(f"{flow.name}: checking that every artifact unpickles where it is read")
        record, keep = finish_record(record, flow, settings, code_dir(settings, record.code_sha256))
        outcome.record = record
        outcome.findings += pickles.findings(record.pickle_checks)
    if options.push:
        record = replace(record, interpreters=snapshot_interpreters(record, settings, log=log))
        record = replace(record, bytecode=env_bytecode(record, settings))
        outcome.record = record
    return record, keep


def env_bytecode(record: RunRecord, settings: Settings) -> dict[str, str]:
    """env id -> the bytecode object (``env/pycache``) of each PyPI env of the record built here, packed
    once per env, so that a replay elsewhere restores the ``.pyc`` files instead of compiling them."""
    envs = environments(settings)
    out = dict(record.bytecode)
    for env_id, pl in sorted(record.envs.items()):
        built = envs.get(env_id) if env_id not in out and not pl.is_conda else None
        sha = pycache.pack(built.path, env_id, settings.home) if built is not None else ""
        if sha:
            out[env_id] = sha
    return out


# -- recording runs repro was stopped before recording ---------------------------------------------


def recover(settings: Settings, store_uri: str | None = None, log: Log = _quiet) -> list[Outcome]:
    """Finish every run ``repro run`` started whose repro is gone (killed, or its push failed), from its
    pending marker (``adapter/pending``): a run that finished is read back from Metaflow's datastore and
    recorded exactly as ``repro run`` would have, then pushed; a run recorded here but not pushed is
    pushed. A run that never started or did not finish (its Metaflow processes died with repro) is
    dropped, its ``note`` says so. A run whose flow file or lock changed since is refused (its record
    would name the wrong lock); its marker stays until the user deletes it. Markers of a repro still
    running are left alone."""
    outcomes = []
    for path in pending.pending(settings.home):
        outcome = Outcome(path=str(path))
        try:
            run = pending.parse(path.read_text(), str(path))
            if run.alive(pending.written(path)):
                continue  # a run in progress (here, or of a repro on another machine or container)
            outcome.path = run.path
            _recover_one(path, run, settings, store_uri, outcome, log)
        except ReproError as exc:
            outcome.fail(exc)
        outcomes.append(outcome)
    return outcomes


def _recover_one(
    path: Path, run: pending.PendingRun, settings: Settings, store_uri: str | None, outcome: Outcome, log: Log
) -> None:
    if run.state == pending.RECORDED:
        outcome.flow = run.flow
        log(f"{run.flow}: pushing run {run.run_id} (recorded here, not pushed)")
        saved = settings.home.record(run.flow, run.run_id)
        outcome.record = push_saved(str(saved), store_uri or run.store or None, settings, log, latest=run.move_latest)
        outcome.saved, outcome.pushed = str(saved), store_uri or run.store or settings.store
        pending.remove(path)
        return
    if run.state == pending.STARTED:
        run = replace(run, run_id=pending.started_run_id(path))
        if not run.run_id:
            pending.remove(path)
            outcome.note = f"{run.flow}: a run of {run.path} that never started (repro was stopped first): dropped"
            return
    run = pending.locate(run)  # its datastore as Metaflow found it, whatever folder recover runs in
    flow, mine = _flow_as_run(path, run, outcome)
    store = open_store(store_uri or run.store or mine.store)
    options = RunOptions(
        store=store.uri,
        push=True,
        move_latest=run.move_latest,
        metaflow_args=run.metaflow_args,
        env=run.env,
        identity=run.identity,
    )
    log(f"{run.flow}: recording run {run.run_id} (finished, not recorded: repro was stopped)")
    _record(_Finished(flow, run.run_id, run.elapsed, run.env, options, mine, store), None, outcome, log, path)
    if outcome.record is not None and outcome.record.status is not RunStatus.SUCCESS:
        outcome.note = (
            f"{run.flow}/{run.run_id} did not finish (repro was stopped while it ran, and its Metaflow "
            "processes with it): not recorded, dropped"
        )


def _flow_as_run(path: Path, run: pending.PendingRun, outcome: Outcome) -> tuple[Flow, Settings]:
    """The flow of a pending run, as it was when it ran: (flow, its settings); refused if its flow file
    is gone or its lock changed."""
    flow_path = Path(run.path)
    if not flow_path.is_file():
        raise BadInput(f"{path}: run {run.flow}/{run.run_id}: its flow file {run.path} is gone; delete {path}")
    mine = load_settings(flow_path)  # the flow's own settings (its pyproject.toml), as `repro run` read them
    with _as_when_run(run):  # configs resolve as they did: same folder, same METAFLOW_FLOW_CONFIG*
        flow = open_flow(flow_path, mine, run.metaflow_args)
    outcome.flow, outcome.steps, outcome.lock = flow.name, list(flow.decl.steps), flow.lock
    if flow.name != run.flow or not flow.lock_file.is_file() or runs.lock_sha256(flow.lock_file) != run.lock_sha256:
        raise BadInput(
            f"{path}: run {run.flow}/{run.run_id}: {flow.lock_file.name} changed since the run, so it "
            f"cannot be recorded with the lock it ran with; delete {path} and run the flow again"
        )
    return flow, mine


def load_baseline(store: Store, flow: str, identity: str, ref: str) -> RunRecord:
    """``latest`` is the latest run of this flow's identity (class and flow file, or @project name and
    branch), never of another file's class of the same name; a store of version 1 records (keyed by
    class name alone, no identity) gives its class's ``latest``."""
    if ref != "latest":
        return load_record(store, parse_ref(ref))
    folder = layout.identity_key(identity)
    try:
        run_id = read_latest(store, folder)
    except StoreObjectMissing:
        folder = flow  # exactly runs/<Flow>/latest: records of version 1
        try:
            run_id = read_latest(store, folder)
        except StoreObjectMissing:
            raise BadInput(
                f"store {store.uri} has no runs of flow {identity} (no {layout.latest(layout.identity_key(identity))}"
                "); record one with --repro-update (pytest) or `repro run`"
            ) from None
    key = layout.record(folder, run_id)
    try:
        data = store.get_bytes(key)
    except StoreObjectMissing:
        raise BadInput(f"store {store.uri} has no run {flow}/{run_id} (no {key})") from None
    return record_at(store, key, data, flow, run_id)


@contextlib.contextmanager
def _as_when_run(run: pending.PendingRun) -> Iterator[None]:
    """The current folder and Metaflow config variables the pending ``run`` was started with."""
    saved_cwd = os.getcwd()
    names = [k for k in run.env if k.startswith("METAFLOW_FLOW_CONFIG")]
    saved = {k: os.environ.get(k) for k in names}
    try:
        if run.cwd and Path(run.cwd).is_dir():
            os.chdir(run.cwd)
        os.environ.update({k: run.env[k] for k in names})
        yield
    finally:
        os.chdir(saved_cwd)
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def latest_record(store: Store, flow, identity: str | None = None, log: Log = _quiet) -> RunRecord | None:
    """This flow's latest recorded run in ``store`` (its identity's, see ``load_baseline``; by default
    the identity a run without options would have); None: none, or the store cannot be reached (said
    through ``log``: input drift is then not checked, the other drift kinds still are)."""
    try:
        return load_baseline(store, flow.name, identity or runs.expected_identity(flow), "latest")
    except BadInput:
        return None
    except InfraError as exc:
        log(f"{flow.name}: input drift not checked: store {store.uri} cannot be read ({exc})")
        return None


class _MetaflowFailed(ReproError):
    """The Metaflow process failed before a run started; its exit code is passed on unchanged."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code or 3  # no exit code, but no run either: something broke


def task_findings(found: RunInspection, steps, finished: bool) -> list[Finding]:
    """A failed task, or a step that never ran because an earlier one failed."""
    out = []
    for step, tasks in found.steps.items():
        for t in tasks:
            if not t.successful:
                why = t.stderr.strip() or (
                    "it left no logs: it failed before its step ran (on AWS Batch: the job failed before the "
                    "task started; Metaflow's output above says why)"
                )
                out.append(
                    Finding(
                        Kind.TASK_FAILED,
                        f"task {t.task_id} ({t.foreach}) failed:\n{why}",
                        step=step,
                        task=t.foreach,
                    )
                )
    if not finished:
        out += [
            Finding(Kind.NOT_RUN, "not run: an earlier step failed", step=step)
            for step in steps
            if step not in found.steps
        ]
    return out


# -- post-processing: pickle matrix, artifact copies ---------------------------------------------


def artifact_max_bytes(settings: Settings) -> int:
    return settings.artifact_max_bytes


def env_pythons(record: RunRecord, settings: Settings) -> dict[str, str]:
    envs = environments(settings)
    out = {protocol.DISABLED: sys.executable}
    for env_id in record.envs:
        built = envs.get(env_id)
        if built is not None:
            out[env_id] = str(built.python)
    return out


def _user_blobs(record: RunRecord) -> set[str]:
    return {
        a.sha1
        for s in record.steps.values()
        for t in s.tasks.values()
        for n, a in t.artifacts.items()
        if not pickles.is_internal(n)
    }


def finish_record(record: RunRecord, flow, settings: Settings, code: Path | None) -> tuple[RunRecord, dict]:
    """Add pickle checks and mark which artifact blobs get a copy in the store."""
    wanted = _user_blobs(record)
    data = blobstore.load(record.flow, record.datastore["type"], record.datastore["root"], wanted) if wanted else {}
    checks = pickles.check(
        record, flow.decl.graph, data, env_pythons(record, settings), sys_path=import_paths(code) if code else []
    )
    limit = artifact_max_bytes(settings)
    keep = {sha: blob for sha, blob in data.items() if len(blob) <= limit}
    steps = {}
    for name, s in record.steps.items():
        tasks = {
            k: replace(t, artifacts={n: replace(a, stored=a.sha1 in keep) for n, a in t.artifacts.items()})
            for k, t in s.tasks.items()
        }
        steps[name] = replace(s, tasks=tasks)
    return replace(record, steps=steps, pickle_checks=checks), keep


def code_dir(settings: Settings, code_sha: str) -> Path | None:
    folder = settings.home.code_folder(code_sha)
    return folder if folder.is_dir() else None


# -- comparing -----------------------------------------------------------------------------------


def blob_source(record: RunRecord, store: Store | None):
    """Where a record's artifact blobs can be read: the store's copies, else the run's datastore."""
    cache: dict[str, bytes | None] = {}

    def get(sha1: str):
        if sha1 in cache:
            return cache[sha1]
        data = fetch_artifact(store, sha1) if store is not None else None
        root = record.datastore.get("root")
        if data is None and root and (record.datastore.get("type") != "local" or Path(root).exists()):
            try:
                data = blobstore.load(record.flow, record.datastore["type"], root, [sha1]).get(sha1)
            except Exception:
                data = None
        cache[sha1] = data
        return data

    return get


ALLOW_OTHER_FLOW = "--allow-other-flow (pytest: --repro-allow-other-flow)"


def check_same_flow(a: RunRecord, b: RunRecord, allow_other_flow: bool = False) -> None:
    """Runs of two different flows are never compared; runs of one class name in two flow files only
    when asked to."""
    check_same_identity(a, b.flow, b.identity, allow_other_flow, b.ref)


def check_same_identity(a: RunRecord, flow: str, identity: str, allow_other_flow: bool, ref: str = "") -> None:
    """``a`` (a baseline) is a run of ``flow`` with ``identity`` (the run compared with it, ``ref``,
    or the flow about to run): a different class is refused always, another identity unless allowed."""
    ref = ref or f"this run of {identity or flow}"
    if a.flow != flow:
        raise BadInput(
            f"{a.ref} and {ref} are runs of different flows ({a.flow}, {flow}); diff compares two runs of one flow"
        )
    if allow_other_flow or not a.identity or not identity or a.identity == identity:
        return
    raise BadInput(
        f"{a.ref} and {ref} are runs of different flows: {a.identity} and {identity} (same class "
        f"name, another flow file or @project branch). Compare them anyway with {ALLOW_OTHER_FLOW}."
    )


def compare_runs(a: RunRecord, b: RunRecord, store: Store | None, settings: Settings) -> Comparison:
    code = code_dir(settings, b.code_sha256) or code_dir(settings, a.code_sha256)
    return compare(
        a,
        b,
        blob_source(a, store),
        blob_source(b, store),
        env_pythons(b, settings),
        sys_path=import_paths(code) if code else [],
    )


# -- completing a push that failed ---------------------------------------------------------------


def push_saved(path_or_ref: str, store_uri: str | None, settings: Settings, log: Log, latest: bool = True) -> RunRecord:
    """Push a record kept in REPRO_HOME (after a push that failed); artifact copies come from the datastore.
    The run's pending marker, if any, is removed once it is pushed."""
    ref = parse_ref(path_or_ref)
    if ref.path is None:
        assert ref.flow is not None and ref.run_id is not None, "parse_ref gives a path, or a flow and a run id"
        ref = parse_ref(str(_local_record(settings, ref.flow, ref.run_id)))
    record = load_record(None, ref)
    store = open_store(store_uri or settings.store)
    keep = (
        blobstore.load(
            record.flow, record.datastore["type"], record.datastore["root"], record.artifact_shas(stored_only=True)
        )
        if record.artifact_shas()
        else {}
    )
    push(record, store, settings, keep, log=log, latest=latest)
    for marker in pending.markers_of(settings.home, record.flow, record.run_id):
        pending.remove(marker)
    return record


def _local_record(settings: Settings, flow: str, run_id: str) -> Path:
    """The record of ``flow/run_id`` kept in REPRO_HOME; ``latest``: the newest one recorded here."""
    folder = local_record_path(settings, flow, "latest").parent
    if run_id == "latest":
        found = []
        for f in folder.glob("*.json") if folder.is_dir() else []:
            try:
                doc = json.loads(f.read_text())
                if not doc.get("replay_of"):  # a replay is never its flow's latest
                    found.append((doc.get("created_at", ""), f.stat().st_mtime, f))
            except (OSError, ValueError):
                continue
        if not found:
            raise BadInput(
                f"{flow}/latest: no run of {flow} is recorded here ({folder}); `repro run FLOW.py` records one"
            )
        return max(found, key=lambda t: (str(t[0]), t[1]))[2]
    path = local_record_path(settings, flow, run_id)
    if not path.is_file():
        raise BadInput(
            f"{flow}/{run_id}: that run is not recorded here ({path} does not exist); "
            f"`repro store push` pushes runs that `repro run` recorded on this machine"
        )
    return path


def problems_of(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]
