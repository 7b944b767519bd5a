"""`repro replay`: rebuild a recorded run from the store alone, run it again through the same
pipeline as any run, and compare the results with the record.

Three stages: ``load_request`` reads and checks the record once and asks the place (an executor,
``metaflow_repro.executors``) whether it can run it; the place runs it (``prepare`` pulls and verifies
everything into a frozen ``ReplayPlan``, ``execute`` runs it, both wherever the flow runs: here, or
in a container that calls ``run_here``) and hands back a verdict-less ``RunResult``; ``judge``
compares it with the original, once, on the host."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro import executors
from metaflow_repro.adapter import lineage, s3_inputs
from metaflow_repro.adapter.codepackage import extract_tar
from metaflow_repro.checks.compare import Comparison, ReplayCheck, Verdict
from metaflow_repro.env import pycache, pythons
from metaflow_repro.env.engine import environments
from metaflow_repro.env.flowfile import flow_name, parameter_names
from metaflow_repro.env.interpreter_snapshot import check_location, restore
from metaflow_repro.errors import EXIT_DRIFT, EXIT_INFRA, EXIT_OK, BadInput, InfraError, ReproError
from metaflow_repro.executors.base import Place, ReplayArgs, ReplayPlan, ReplayRequest
from metaflow_repro.model.findings import Choice, Finding, Kind
from metaflow_repro.model.interpreter import ZSTD, Executor, ExecutorKind
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.model.record import RunRecord, RunStatus, check_replayable, replay_problems
from metaflow_repro.model.replay import RunFailure, RunResult
from metaflow_repro.model.validate import cap
from metaflow_repro.operations.env import refetch_from
from metaflow_repro.operations.run import Log, Outcome, RunOptions, check_same_flow, compare_runs, run_and_record
from metaflow_repro.paths import inside
from metaflow_repro.settings import Settings, check_metaflow_args, environ_for, load_settings, spec_environ
from metaflow_repro.store import Store, layout, open_store
from metaflow_repro.store.snapshot import (
    fetch_verified,
    load_record,
    parse_ref,
    pull,
    pull_data_files,
    pull_input_artifacts,
    pull_inputs,
    pull_s3_inputs,
    push_replay_record,
    python_snapshot_key,
    save_local,
)

UNROUTABLE_INDEX = "http://127.0.0.1:9/simple"  # proves a replay never needs a package index
#: where the recorded Metaflow finds the code package's own list of its extensions (.mf_meta/INFO), as in a
#: task: without it, it walks every metaflow_extensions on sys.path, and Metaflow before 2.19 refuses both the
#: package's metaflow_extensions/__init__.py and an installed repro beside the recorded one ("Conflicts")
EXTRACTED_ROOT = "METAFLOW_EXTRACTED_ROOT"


class ReplayVerdict(Choice):
    """A replay's result as a whole. A replay that could not run is not a difference in results."""

    IDENTICAL = "identical"  # every artifact has the recorded bytes
    EQUIVALENT = "equivalent"  # some bytes differ, their values are equal (comparators)
    DIFFERENT = "different"  # the replay ran and some result differs
    FAILED = "replay failed"  # the replay did not start, or a step raised: nothing to compare

    @property
    def exit_code(self) -> int:
        return {"identical": EXIT_OK, "equivalent": EXIT_OK, "different": EXIT_DRIFT}.get(self.value, EXIT_INFRA)


@dataclass(frozen=True)
class ReplayResult:
    original: RunRecord
    replayed: RunRecord | None  # None: the run never started
    comparison: Comparison | None  # None: the replay failed
    workdir: Path
    verdict: ReplayVerdict
    failure: RunFailure | None = None
    saved: str = ""  # the replay's record in REPRO_HOME
    recorded: str = ""  # its key in the store ("" when it could not be written there)

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code


def check_where(on: str, store_uri: str, settings: Settings, option: str = "--on") -> None:
    """Refuse, before anything runs, a replay ``on`` a place this machine cannot reach, naming what to
    set (each place says what it needs: ``Place.check``)."""
    executors.for_place(on, option).check(store_uri, settings, option)


def replay_elsewhere(record: RunRecord, on: str, store_uri: str, settings: Settings, log: Log = print) -> ReplayCheck:
    """Replay ``record`` (pushed to ``store_uri``) ``on`` docker or batch, through ``replay`` as
    `repro replay REF --on` does, and say how it went as data: the verdict, where the replay's record
    says it ran, the comparison. Never raises a ReproError: bad input and infrastructure failures
    become its ``error`` (with their exit code)."""
    ref = f"{layout.flow_dir(record.flow, record.identity)}/{record.run_id}"
    try:
        result = replay(ref, store_uri, settings, on=on, log=log)
    except ReproError as exc:
        return ReplayCheck(on=on, error=str(exc), error_code=exc.exit_code)
    failure = result.failure
    return ReplayCheck(
        on=on,
        verdict=result.verdict.value,
        executor=result.replayed.executor if result.replayed else None,
        run=result.replayed.ref if result.replayed else "",
        comparison=result.comparison,
        error="" if failure is None else (failure.error + (f" (its logs: {failure.logs})" if failure.logs else "")),
        error_code=0 if failure is None else result.exit_code,
        failed_step=failure.step if failure else "",
    )


def replay_findings(check: ReplayCheck) -> list[Finding]:
    """The steps a replay elsewhere fails: each artifact that differs there, and the step that failed."""
    where = f"replayed on {check.on}" + (f" ({check.run})" if check.run else "")
    found = [
        Finding(
            Kind.REPLAY,
            f"{where}: {r.task}.{r.name} differs: {r.detail}",
            step=r.step,
            task=r.task,
            subject=r.name,
            new=r.verdict.value,
        )
        for r in (check.comparison.results if check.comparison else ())
        if r.verdict is Verdict.DIFFERENT
    ]
    if check.failed_step:
        found.append(Finding(Kind.REPLAY, f"{where}: the step failed: {check.error}", step=check.failed_step))
    return found


def replay(
    ref_text: str,
    store_uri: str | None,
    settings: Settings,
    on: str = ExecutorKind.LOCAL.value,
    log: Log = print,
    extra_args: tuple[str, ...] = (),
    keep: bool = False,
    image: str | None = None,
    executor: Executor | None = None,
) -> ReplayResult:
    """Replay a recorded run; ``extra_args`` (``repro replay REF -- ...``) add to or override the
    recorded run options and parameters (and are recorded in the replay's own record). The working
    folder (code, datastore) is removed after the verdict unless ``keep``, or the replay failed (its
    logs live there). ``executor``: what the replay's record says ran it (default: the place's)."""
    place = executors.for_place(on)
    place.check_args(extra_args, image)  # before any place is checked, fetched or built
    store = open_store(store_uri or settings.store)
    place.check(store.uri, settings)
    request = load_request(ref_text, store, settings, place, executor or place.executor(), extra_args, image)
    workdirs: list[Path] = []
    result = None
    try:
        run = place.run(request, lambda r: run_here(r, log, workdirs), log)
        result = judge(request, run, log)
        return result
    finally:
        leave_workdirs(workdirs, result, keep, log)


def leave_workdirs(workdirs: list[Path], result: ReplayResult | None, keep: bool, log: Log) -> None:
    """Remove a replay's working folders, unless asked to keep them or the replay failed: a failed replay
    keeps its folder, since the logs command it prints reads the datastore there."""
    failed = result is not None and result.verdict is ReplayVerdict.FAILED
    for workdir in workdirs:
        if keep or failed:
            log(f"replay working folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def load_request(
    ref_text: str,
    store: Store,
    settings: Settings,
    place: Place,
    executor: Executor,
    extra_args: tuple[str, ...] = (),
    image: str | None = None,
) -> ReplayRequest:
    """The record, read and checked once (a record file is untrusted input: decoded and validated), and
    refused when ``place`` can never replay it, before anything else is fetched or built."""
    ref = parse_ref(ref_text)
    original = load_record(store, ref)
    check_replayable(original, str(ref.path or original.ref))  # what `repro store verify` reports, too
    place.check_record(original)
    return ReplayRequest(
        original=original,
        store=store,
        settings=settings,
        place=place,
        executor=executor,
        ref=f"{layout.flow_dir(original.flow, original.identity)}/{original.run_id}",
        record_file=ref.path,
        extra_args=tuple(extra_args),
        image=image,
    )


class _NotRunnable(Exception):
    """The replay cannot run here (``failure``): a failed replay, not an error."""

    def __init__(self, failure: RunFailure, workdir: Path):
        super().__init__(failure.error)
        self.failure, self.workdir = failure, workdir


def run_here(request: ReplayRequest, log: Log, workdirs: list[Path] | None = None) -> RunResult:
    """Prepare the replay on this machine and run it: what a place that runs here calls (local, batch,
    and a container's own replay). ``workdirs`` gets the working folder as soon as it exists."""
    try:
        plan = prepare(request, log, workdirs if workdirs is not None else [])
    except _NotRunnable as exc:
        return RunResult(request.executor, workdir=str(exc.workdir), failure=exc.failure)
    return execute(plan, log)


def prepare(request: ReplayRequest, log: Log, workdirs: list[Path]) -> ReplayPlan:
    """Pull and verify everything the record names, rebuild every environment offline from the stored
    package files, and lay out the recorded code, inputs, arguments and environment, before anything
    runs: the frozen plan ``execute`` runs."""
    original, store, settings = request.original, request.store, request.settings
    log(f"replaying {original.ref} from {store.uri}")
    for version, snap in sorted(original.interpreters.items()):  # nothing is created or run anywhere else
        check_location(snap, f"interpreters.{version}", f"{store.uri}: {original.ref}")
    # 1. everything the record names, verified, before anything runs (the interpreters meanwhile)
    in_container = request.executor.kind is ExecutorKind.DOCKER  # prepare runs inside the container then
    locks, interpreters = pull_and_restore(original, store, settings, log, bytecode=in_container)
    inputs = pull_inputs(original, store, settings)
    data_files = pull_data_files(original, store, settings)  # verified (sha256) before any is laid out
    upstream = pull_input_artifacts(original, store, settings)  # verified (sha1) before anything reads them
    s3_blobs = pull_s3_inputs(original, store, settings)  # metaflow.S3 objects, verified (sha256)
    workdir = _workdir(settings, original)
    workdirs.append(workdir)
    code, flow_file = _recorded_code(settings, original, workdir)
    # a step its own code sends elsewhere would not run where asked: refused before any env is built
    request.place.check_code(original, flow_file, request.executor.kind.value)
    # 2. every environment, offline, from the stored package files only
    interpreters = _rebuild_envs(original, locks, interpreters, store, settings, log)
    # 3. the recorded code, with the recorded parameters, inputs, configs, run options and hash seed
    if original.inputs:  # the runs of other flows the steps read: served from the replay's own datastore
        user = os.environ.get("METAFLOW_USER") or os.environ.get("USER") or os.environ.get("USERNAME") or ""
        log(f"serving {', '.join(lineage.seed(original, upstream, workdir, user))} to the replayed steps")
    declared = parameter_names(flow_file)
    mf_code = code / ".mf_code"  # the Metaflow (and extensions) that ran the original
    problem = _recorded_metaflow_problem(mf_code, original)
    if problem:
        raise _NotRunnable(RunFailure(error=problem), workdir)
    _check_recorded_flow(original, flow_file, workdir)
    _lay_out_data_files(original, data_files, flow_file.parent, log)
    given = recorded_args(original, _materialize(original, inputs, workdir / "inputs"), workdir, declared)
    args = _placed_args(request, given, log)
    env = _environment(request, workdir, mf_code, log)
    env.update(_s3_serving(original, s3_blobs, workdir / "s3-inputs", log))
    if request.executor.kind is ExecutorKind.BATCH and (data_files or s3_blobs):
        log(
            "on Batch, the steps do not get these back: the data files and metaflow.S3 objects above are laid "
            "out on this machine only, so the Batch tasks read them as they are now (replay --on local or "
            "--on docker to give them back)"
        )
    return ReplayPlan(
        request=request,
        workdir=workdir,
        code=code,
        flow_file=flow_file,
        locks=locks,
        interpreters=interpreters,
        args=args,
        env=env,
        settings=load_settings(flow_file, environ={**os.environ, **env}),
    )


def _recorded_code(settings: Settings, original: RunRecord, workdir: Path) -> tuple[Path, Path]:
    """The recorded code package (pulled and verified), extracted safely, and its flow file: never a
    file outside the package, and the recorded flow (a record naming another flow file is refused)."""
    code = _extract_code(
        settings.home.code_package(original.code_sha256), workdir / "code", original, settings.archive_max_bytes
    )
    flow_file = inside(code, original.flow_file, f"{original.ref}: flow_file")
    if not flow_file.is_file():
        raise BadInput(
            f"{original.ref}: flow_file {original.flow_file!r} is not in its code package "
            f"(sha256 {original.code_sha256}); the record is corrupt"
        )
    return code, flow_file


def _check_recorded_flow(original: RunRecord, flow_file: Path, workdir: Path) -> None:
    """The flow file runs the recorded flow: runs of two flows are never compared, and a replay of
    another flow does not start (as a run never starts against a baseline of another flow)."""
    name = flow_name(flow_file)
    if name != original.flow:
        error = (
            f"{original.ref} and this run of {original.identity or name} are runs of different flows "
            f"({original.flow}, {name}); diff compares two runs of one flow"
        )
        raise _NotRunnable(RunFailure(error=error, output=error), workdir)


def _rebuild_envs(
    original: RunRecord,
    locks: dict[str, PlatformLock],
    interpreters: dict[str, pythons.Interpreter],
    store: Store,
    settings: Settings,
    log: Log,
) -> dict[str, pythons.Interpreter]:
    """Build every recorded environment not built here, offline, from the stored package files only;
    returns {Python version: interpreter} of every interpreter used."""
    envs = environments(settings)
    used = dict(interpreters)
    for env_id, pl in locks.items():
        built = envs.get(env_id)
        if built is not None and not envs.damage(built, pl):  # a damaged one is rebuilt here, as a missing one
            continue
        log(f"rebuilding env {env_id[:12]} offline (Python {pl.python}, {len(pl.packages)} packages)")
        interp = None  # a conda env brings its own interpreter
        if not pl.is_conda:
            interp = used.get(pl.python) or recorded_interpreter(
                original, pl.python, store, settings, f"{original.ref} env {env_id[:12]}", log
            )
            used[pl.python] = interp
        envs.build(pl, interp, True, f"replay of {original.ref}", log=log, refetch=refetch_from(store, settings, log))
    return used


def _placed_args(request: ReplayRequest, given: list[str], log: Log) -> ReplayArgs:
    """The recorded arguments as the place runs them (configs, parameters and inputs are never about
    placement), then the user's own after ``--``."""
    original, place, extra_args = request.original, request.place, request.extra_args
    kept = len(given) - len(original.run_options)
    placed, dropped = place.place(given[kept:], extra_args, original.executor)
    if dropped:
        log(place.dropped_note(dropped, extra_args, request.executor.kind.value))
    return ReplayArgs(tuple(given[:kept]), tuple(placed), tuple(dropped), tuple(extra_args))


def _environment(request: ReplayRequest, workdir: Path, mf_code: Path, log: Log) -> dict[str, str]:
    """The Metaflow process's environment: offline, frozen, the recorded hash seed, the replay's own
    datastore (or what the place needs instead), the recorded Metaflow, the recorded settings."""
    original, settings = request.original, request.settings
    env = {
        **environ_for(
            frozen=True,
            offline=True,
            index_url=UNROUTABLE_INDEX,
            home=settings.home,
            pythonhashseed=original.pythonhashseed or protocol.DEFAULT_HASH_SEED,
        ),
        "UV_OFFLINE": "1",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(workdir),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    env = request.place.environment(original, request.store.uri, env, log)
    env["PYTHONPATH"] = os.pathsep.join([str(mf_code), *filter(None, [os.environ.get("PYTHONPATH")])])
    env[EXTRACTED_ROOT] = str(mf_code.parent)
    env.update(spec_environ(original.settings))
    return env


def execute(plan: ReplayPlan, log: Log, resume: tuple[str, ...] = ()) -> RunResult:
    """Run the plan through the same pipeline as any run, and record the replay (here and in the store):
    what ran and how it ended, verdict-less. ``resume`` (origin run id, step): Metaflow's `resume` of a
    run in the replay's datastore instead (``operations/replay_from``)."""
    request = plan.request
    original, store = request.original, request.store
    # Metaflow runs in the replay's folder: its cards go under the nearest .metaflow above its current
    # folder (made here, so never one of the user's), Metaflow's S3 client puts temporary files there too
    (plan.workdir / ".metaflow").mkdir(exist_ok=True)
    options = RunOptions(
        store=store.uri,
        frozen=True,
        metaflow_args=plan.args.metaflow_args,
        env=dict(plan.env),
        identity=original.identity,
        pickle_checks=False,
        settings=plan.settings,
        # whatever Metaflow writes beside its current folder stays in the replay's own; a run that read data
        # files of its flow's folder runs in it (``open("data/train.csv")`` reads what was given back)
        cwd=plan.flow_file.parent if original.data_files else plan.workdir,
        resume=resume,
        executor=request.executor,
    )
    outcome = run_and_record(plan.flow_file, options, log=log)
    ran = RunResult(request.executor, workdir=str(plan.workdir), exit_code=outcome.exit_code)
    if outcome.record is None:  # the run never started: nothing ran, nothing to record
        error = _last_line(outcome.error) or "the replay did not start"
        return replace(ran, failure=RunFailure(error=error, output=outcome.error or outcome.output))
    replayed = replace(
        outcome.record, replay_of=original.ref, interpreters=original.interpreters, executor=request.executor
    )
    saved, recorded = _record_replay(replayed, store, request.settings, log)
    ran = replace(ran, saved=saved, recorded=recorded, record=replayed)
    if outcome.error:  # it ran, but what it ran could not be read back whole
        return replace(ran, failure=RunFailure(error=_last_line(outcome.error), output=outcome.error))
    return replace(ran, failure=_failure(outcome, replayed, plan.flow_file, plan.env))


def judge(request: ReplayRequest, run: RunResult, log: Log) -> ReplayResult:
    """The verdict, made once, here: a replay that failed (or ran another Metaflow) is FAILED, one that
    ran is compared with the original."""
    original, store = request.original, request.store
    workdir, replayed = Path(run.workdir), run.record
    saved, recorded = run.saved, f"{store.uri}/{run.recorded}" if run.recorded else ""

    def failed(failure: RunFailure) -> ReplayResult:
        return ReplayResult(original, replayed, None, workdir, ReplayVerdict.FAILED, failure, saved, recorded)

    if replayed is None or run.failure is not None:
        return failed(run.failure or RunFailure(error="the replay did not start"))
    if replayed.metaflow_version != original.metaflow_version:
        return failed(
            RunFailure(
                error=f"the replay ran on Metaflow {replayed.metaflow_version}, not the recorded "
                f"{original.metaflow_version}"
            )
        )
    mismatched = [e for e in original.envs if e not in replayed.envs]
    if mismatched:
        raise InfraError(f"replay of {original.ref} did not use the recorded environments {mismatched}")
    try:
        check_same_flow(original, replayed)
        log(f"{original.flow}: comparing with {original.ref}")
        comparison = known_nondeterministic(original, compare_runs(original, replayed, store, request.settings))
    except ReproError as exc:  # it ran, but could not be judged (e.g. the comparison's probe failed)
        return failed(RunFailure(error=_last_line(str(exc)), output=str(exc)))
    verdict = ReplayVerdict(comparison.verdict.value)
    if verdict is ReplayVerdict.DIFFERENT and (original.outside_reads() or original.data_files_not_kept()):
        log(f"{original.ref} read what its snapshot does not hold, the likely cause: {_not_given_back(original)}")
    return ReplayResult(original, replayed, comparison, workdir, verdict, None, saved, recorded)


def _not_given_back(record: RunRecord) -> str:
    """The files and network endpoints a replay of ``record`` could not give back, in a few words."""
    files = [f for r in record.reads.values() for f in r.files] + record.data_files_not_kept()
    files += [h for r in record.reads.values() for h in r.all_hosts() if h not in files]
    unwatched = [step for step, r in record.reads.items() if r.unwatched]
    return cap(files + [f"whatever {step} read (not watched)" for step in unwatched], limit=5)


def known_nondeterministic(original: RunRecord, comparison: Comparison) -> Comparison:
    """Each artifact that differs and was already seen to differ between repeats of the recorded run
    (``repro check --repeat``: ``RunRecord.nondeterministic``) says so in its description."""
    seen = original.nondeterministic
    if not seen:
        return comparison
    results = tuple(
        replace(
            r,
            detail=f"{r.detail}; {r.step}.{r.name} was already nondeterministic when recorded (repro check)",
        )
        if r.verdict is Verdict.DIFFERENT and (r.name in seen.get(r.step, ()) or "*" in seen.get(r.step, ()))
        else r
        for r in comparison.results
    )
    return replace(comparison, results=results)


def pull_and_restore(
    original: RunRecord, store: Store, settings: Settings, log: Log, bytecode: bool = False
) -> tuple[dict[str, PlatformLock], dict[str, pythons.Interpreter]]:
    """``pull`` (locks, code, package files, all verified) while the interpreters that the record's
    environments not built here need are restored from their snapshots: independent work (network and
    unzip against tar), so overlapped. Returns the locks and {Python version: interpreter}. Each
    interpreter's location is checked before anything is created there (``recorded_interpreter``).
    ``bytecode``: the envs' bytecode objects too (``fetch_bytecode``), which their builds then restore
    instead of compiling. A record's bytecode is code that no source vouches for, so only a replay in a
    container asks for it: its REPRO_HOME is its own and thrown away, and the record's code package runs
    there anyway. A replay here builds into this machine's envs, which later runs reuse: it compiles."""
    envs = environments(settings)
    versions = sorted(
        {pl.python for env_id, pl in original.envs.items() if not pl.is_conda and envs.get(env_id) is None}
    )
    if not versions:
        return pull(original, store, settings), {}
    with ThreadPoolExecutor(max_workers=len(versions) + 1) as pool:
        restoring = {
            v: pool.submit(recorded_interpreter, original, v, store, settings, f"{original.ref} Python {v}", log)
            for v in versions
        }
        fetching = pool.submit(fetch_bytecode, original, store, settings, log) if bytecode else None
        locks = pull(original, store, settings)
        if fetching is not None:
            fetching.result()
        return locks, {v: f.result() for v, f in restoring.items()}


def fetch_bytecode(original: RunRecord, store: Store, settings: Settings, log: Log) -> None:
    """The bytecode object of each env of ``original`` not built here, fetched and verified into
    REPRO_HOME, so that its offline build restores the ``.pyc`` files instead of compiling them (a record
    without one compiles as before)."""
    envs = environments(settings)
    for env_id, sha in sorted(original.bytecode.items()):
        if envs.get(env_id) is not None or pycache.known(settings.home, env_id) == sha:
            continue
        log(f"fetching the bytecode of env {env_id[:12]} from the store ({sha[:12]})")
        fetch_verified(store, layout.bytecode(sha), sha, pycache.object_path(settings.home, sha))
        pycache.remember(settings.home, env_id, sha)


def launcher_interpreter(request: ReplayRequest, log: Log) -> str:
    """The interpreter that ran the original's Metaflow runtime (and so decides a flow's default Python),
    restored from the store's snapshot: the path to run the replay on ("" if no snapshot names it)."""
    original = request.original
    version = original.host.get("python", "")
    if version not in original.interpreters:
        return ""
    where = f"{original.ref} Python {version}"
    return recorded_interpreter(original, version, request.store, request.settings, where, log).path


def recorded_interpreter(
    original: RunRecord, version: str, store: Store, settings: Settings, where: str, log: Log
) -> pythons.Interpreter:
    """The interpreter an environment of ``original`` is rebuilt with: the recorded one, at its recorded
    prefix, restored there from the store's snapshot if the prefix is missing; a record without a
    snapshot (made before snapshots existed) uses an installed Python of that version."""
    snap = original.interpreters.get(version)
    if snap is None:
        return pythons.find(version, where=where)
    check_location(snap, f"interpreters.{version}", original.ref)  # before anything is created or run there
    tarball: Path | Iterable[bytes] = settings.home.pythons / snap.file_name
    if not Path(snap.prefix).exists():
        log(f"restoring Python {version} at {snap.prefix} from the store's snapshot {snap.sha256[:12]}")
        if snap.compression == ZSTD:  # extracted as it downloads, its sha256 checked before it is used
            tarball = store.chunks(python_snapshot_key(snap))
        else:
            fetch_verified(store, python_snapshot_key(snap), snap.sha256, tarball)  # type: ignore[arg-type]
    return restore(
        snap, tarball, where=f"{where}: interpreter snapshot {snap.sha256[:12]}", max_bytes=settings.archive_max_bytes
    )


#: (code package sha256, interpreter) -> the exit code, stdout and stderr of the probe below: it imports the
#: whole of the package's Metaflow from source (0.5 s), so a process that replays many runs of one code
#: package (an audit: twenty runs of three flows have three) runs it once per package
_PROBED: dict[tuple[str, str], tuple[int, str, str]] = {}


def _recorded_metaflow_problem(code: Path, original: RunRecord) -> str:
    """The replay's runtime runs on the Metaflow in the code package (PYTHONPATH=.mf_code); say why not
    if this Python cannot import it, or it is another version."""
    if not (code / "metaflow" / "__init__.py").is_file():  # code: the package's .mf_code folder
        return (
            f"the code package of {original.ref} carries no Metaflow: its runtime cannot be the recorded "
            f"Metaflow {original.metaflow_version}"
        )
    key = (original.code_sha256, sys.executable)
    found = _PROBED.get(key)  # the package's bytes were checked against its sha256 before it was extracted
    if found is None:
        probe = (
            "import sys; sys.path.insert(0, sys.argv[1]); from metaflow.metaflow_version import get_version; "
            "print(get_version())"
        )
        environ = {**os.environ, "METAFLOW_USER": os.environ.get("METAFLOW_USER", "repro")}
        proc = subprocess.run(
            [sys.executable, "-c", probe, str(code)],
            capture_output=True,
            text=True,
            cwd=code,
            env={**environ, EXTRACTED_ROOT: str(code.parent)},
            timeout=300,
        )
        found = (proc.returncode, proc.stdout, proc.stderr)
        if proc.returncode == 0:  # a failure (a probe killed under load) is asked again by the next replay
            _PROBED[key] = found
    returncode, stdout, stderr = found
    if returncode != 0:
        return (
            f"this Python ({sys.executable}, {sys.version.split()[0]}) cannot import the recorded Metaflow "
            f"{original.metaflow_version}: {error_line(stderr) or stderr.strip()[-500:]}"
        )
    got = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    if original.metaflow_version and got != original.metaflow_version:
        return f"the code package carries Metaflow {got}, but the record says {original.metaflow_version} ran"
    return ""


def recorded_args(
    record: RunRecord, include_files: dict[str, Path], workdir: Path, declared: tuple[str, ...] | None = None
) -> list[str]:
    """Metaflow options that give the recorded run again: configs (top-level), parameters, the
    IncludeFile contents (as files), and the recorded run options. Parameters only by names the flow
    declares (``declared``), so a record can never smuggle in a Metaflow option (``--run-id-file``...)."""
    if problems := replay_problems(record):  # load_request refused these already; a caller of its own too
        raise BadInput(f"{record.ref}: {'; '.join(problems)}, and nothing was run")
    if declared is not None:
        unknown = sorted((set(record.parameters) | set(record.include_files)) - set(declared))
        if unknown:
            raise BadInput(
                f"{record.ref}: the record's parameters {cap(map(repr, unknown))} are not Parameters "
                f"of flow {record.flow} (it declares: {cap(declared) or 'none'}); the record is "
                "corrupt or hostile, and nothing was run"
            )
    args: list[str] = []
    kv = {}
    for name, cfg in sorted(record.configs.items()):
        if cfg.parser:  # the recorded value is the parser's output: hand it over without parsing again
            kv[name] = [json.loads(cfg.value), cfg.plain]
            args += ["--config-value", name, f"kv.{name}"]
        else:
            value = json.loads(cfg.value)
            args += ["--config-value", name, value if cfg.plain and isinstance(value, str) else cfg.value]
    if kv:
        values = workdir / "config-values.json"
        values.write_text(json.dumps({"user_configs": kv}))
        args = ["--local-config-file", str(values), *args]
    for name, value in record.parameters.items():
        if value is None:
            continue  # the parameter had no value: let its default apply again
        args += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
    for name, path in sorted(include_files.items()):
        args += [f"--{name}", str(path)]
    return check_metaflow_args([*args, *record.run_options], record.ref)  # a NUL byte: refused, nothing run


def _materialize(record: RunRecord, blobs: dict[str, Path], folder: Path) -> dict[str, Path]:
    """Each IncludeFile's recorded bytes as a file of its original name (one folder per parameter)."""
    out = {}
    for name, blob in sorted(blobs.items()):
        target = folder / name / record.include_files[name].name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob, target)
        out[name] = target
    return out


def _lay_out_data_files(record: RunRecord, blobs: dict[str, Path], folder: Path, log: Log) -> None:
    """Each data file the record keeps, at its recorded path in the flow's folder (the extracted code),
    before the run starts; says up front what the replay cannot give back (files too large to have
    been kept, files read elsewhere on the recorded host)."""
    for rel, blob in sorted(blobs.items()):
        target = inside(folder, rel, f"{record.ref}: data file")
        if target.exists() or target.is_symlink():  # a file of the code package: never replaced
            raise BadInput(
                f"{record.ref}: the data file {rel!r} is a file of the recorded code package; the record is "
                "corrupt or hostile, and nothing was run"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(blob, tmp)
        os.replace(tmp, target)
    if blobs:
        log(f"giving back {len(blobs)} data file{'s' if len(blobs) != 1 else ''} the steps read: {cap(sorted(blobs))}")
    for rel in record.data_files_not_kept():
        f = record.data_files[rel]
        log(
            f"this replay cannot give back {rel} ({f.size} bytes, read by {', '.join(f.read_by)}): it was larger "
            "than input-max-bytes when recorded, so the snapshot has only its sha256"
        )
    for line in record.outside_reads():
        log(line)


def _s3_serving(record: RunRecord, blobs: dict[str, Path], folder: Path, log: Log) -> dict[str, str]:
    """The tasks' variable naming the folder that serves the recorded ``metaflow.S3`` objects (verified),
    and, up front, which objects the replay cannot give back (their tasks read them from S3 as it is now)."""
    served = s3_inputs.serving_folder(record, blobs, folder)
    if served is not None:
        log(f"serving {len(blobs)} S3 object{'s' if len(blobs) != 1 else ''} the steps read: {cap(sorted(blobs))}")
    for url in record.s3_not_kept():
        o = record.s3_objects()[url]
        log(
            f"this replay cannot give back {url} ({o.size} bytes): its bytes are not in the snapshot (past "
            "input-max-bytes, or changed before they were kept), so the steps read it from S3 as it is now"
        )
    return {protocol.S3_INPUTS_VAR: str(served)} if served is not None else {}


def _record_replay(replayed: RunRecord, store: Store, settings: Settings, log: Log) -> tuple[str, str]:
    """Where the replay's record was saved here, and its key in the store ("": it could not be written)."""
    saved = str(save_local(replayed, settings))
    try:
        return saved, push_replay_record(replayed, store, settings.home.code_package(replayed.code_sha256))
    except ReproError as exc:
        log(f"repro: the replay's record is kept in {saved} but could not be written to {store.uri}: {exc}")
        return saved, ""


def _failure(outcome: Outcome, replayed: RunRecord, flow_file: Path, env: Mapping[str, str]) -> RunFailure | None:
    failed = [f for f in outcome.findings if f.kind is Kind.TASK_FAILED]
    if not failed and replayed.status is RunStatus.SUCCESS:
        return None
    if not failed:
        return RunFailure(error=f"the run failed (exit code {outcome.exit_code})", output=outcome.output)
    first = failed[0]
    pathspec = task_pathspec(replayed, first)
    logs = logs_command(flow_file, pathspec, env)
    return RunFailure(
        error=error_line(first.message),
        step=first.step,
        task=f"{replayed.flow}/{pathspec}",
        logs=logs,
        output=first.message,
    )


#: the environment a replay's `logs` command needs to find its datastore, metadata and Metaflow again
LOGS_ENVIRON = (
    "METAFLOW_DATASTORE_SYSROOT_LOCAL",
    "METAFLOW_DEFAULT_DATASTORE",
    "METAFLOW_DEFAULT_METADATA",
    "PYTHONPATH",
    EXTRACTED_ROOT,
)


def task_pathspec(record: RunRecord, failed: Finding) -> str:
    """The Metaflow pathspec run_id/step/task_id (without the flow) of a failed task, or run_id/step
    when the record has no such task (it failed before its task got an id)."""
    step = record.steps.get(failed.step)
    task = step.tasks.get(failed.task) if step else None
    return f"{record.run_id}/{failed.step}/{task.task_id}" if task else f"{record.run_id}/{failed.step}"


def logs_command(flow_file: Path, pathspec: str, env: Mapping[str, str] | None = None) -> str:
    """The shell command that shows a task's (or a step's) logs: Metaflow's `logs` of the flow file, with
    the variables of ``env`` it needs to find that run (a replay's own datastore)."""
    env = env or {}
    return " ".join(
        [
            *(f"{k}={shlex.quote(env[k])}" for k in LOGS_ENVIRON if k in env),
            shlex.quote(sys.executable),
            shlex.quote(str(flow_file)),
            "logs",
            shlex.quote(pathspec),
        ]
    )


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b")


def error_line(text: str) -> str:
    """The exception line of a task's stderr (for people: the report's one-line error)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    found = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return found[-1] if found else _last_line(text)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _workdir(settings: Settings, original: RunRecord) -> Path:
    parent = settings.home.replays_of(original.flow)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{original.run_id}-{time.strftime('%Y%m%dT%H%M%S')}-", dir=parent))


def _extract_code(package: Path, code: Path, original: RunRecord, limit: int) -> Path:
    code.mkdir()
    extract_tar(package, code, limit, f"code package {package.name} of {original.ref}")
    return code
