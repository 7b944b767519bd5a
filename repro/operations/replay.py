"""`repro replay`: rebuild a recorded run from the store alone, run it again through the same
pipeline as any run, and compare the results with the record."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol
from repro.checks import lineage
from repro.checks.compare import Comparison, Verdict
from repro.env import pythons
from repro.env.engine import environments
from repro.env.flowfile import batch_steps, parameter_names
from repro.env.interpreter_snapshot import check_location, restore
from repro.errors import EXIT_DRIFT, EXIT_INFRA, EXIT_OK, BadInput, InfraError, ReproError
from repro.executors.batch import batch_options, runs_on_batch
from repro.model.findings import Choice, Finding, Kind
from repro.model.interpreter import Executor, ExecutorKind
from repro.model.lock import PlatformLock
from repro.model.record import RunRecord, RunStatus
from repro.model.validate import cap
from repro.operations.run import Log, Outcome, ReplayCheck, RunOptions, run_and_record
from repro.paths import inside
from repro.settings import REPLAY_PLACES, Settings, environ_for, load_settings, spec_environ
from repro.store import Store, layout, open_store
from repro.store.snapshot import (
    fetch_verified,
    load_record,
    parse_ref,
    pull,
    pull_input_artifacts,
    pull_inputs,
    push_replay_record,
    save_local,
)

UNROUTABLE_INDEX = "http://127.0.0.1:9/simple"  # proves a replay never needs a package index
#: the Metaflow `run` options a recorded run may pass on to its replay: they shape the run's graph and
#: results; anything else in a record (``--run-id-file`` writes a file anywhere) is refused
REPLAYED_RUN_OPTIONS = frozenset(
    {"--max-num-splits", "--max-workers", "--tag", "--with", "--namespace", "--max-log-size"}
)


def placed_run_options(
    run_options: Sequence[str], on: str, extra_args: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """The recorded run options for a replay that runs ``on`` local, docker or batch, and the options
    dropped: ``--on batch`` adds ``--with batch`` (a recorded ``--with batch:...`` stays, attributes
    and all); anywhere else every ``--with batch[:...]`` goes, so the replay runs where it is asked to.
    The user's own ``--with batch[:...]`` in ``extra_args`` (after ``--``, appended after these) wins:
    Metaflow keeps the first decorator of a name, so the recorded one is dropped and none is added.
    Pure: the caller says what was dropped."""
    items = list(run_options)
    spans = batch_options(items)
    inside_batch = {i for start, end in spans for i in range(start, end)}
    out = [a for i, a in enumerate(items) if i not in inside_batch]
    recorded = [a for i, a in enumerate(items) if i in inside_batch]
    if on == "batch" and not runs_on_batch(extra_args):
        return (items if recorded else [*items, "--with", "batch"]), []
    return out, recorded


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
class ReplayFailure:
    """Why a replay failed: the step (and task) that failed, its error, and how to see its logs."""

    error: str  # the error's last line (or why the run did not start)
    step: str = ""
    task: str = ""  # pathspec Flow/run/step/task of the failed task
    logs: str = ""  # a shell command that shows the task's logs
    output: str = ""  # the error's full text (the task's stderr tail, or Metaflow's output)


@dataclass(frozen=True)
class ReplayResult:
    original: RunRecord
    replayed: RunRecord | None  # None: the run never started
    comparison: Comparison | None  # None: the replay failed
    workdir: Path
    verdict: ReplayVerdict
    failure: ReplayFailure | None = None
    saved: str = ""  # the replay's record in REPRO_HOME
    recorded: str = ""  # its key in the store ("" when it could not be written there)

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code


def check_where(on: str, store_uri: str, settings: Settings, option: str = "--on") -> None:
    """Refuse, before anything runs, a replay ``on`` a place this machine cannot reach, naming what to
    set: docker needs a daemon (``DOCKER_HOST``) and a store the container reaches (``file://``, mounted, or
    S3); batch needs an S3 store and Metaflow's Batch job queue and S3 datastore."""
    if on not in REPLAY_PLACES:
        raise BadInput(f"{option} {on}: not a place to replay ({', '.join(REPLAY_PLACES)})")
    scheme = store_uri.split("://", 1)[0] if "://" in store_uri else "file"
    if on == "docker":
        if scheme not in ("file", "s3"):
            raise BadInput(
                f"{option} docker: the store is {store_uri}; the container reaches only a file:// store (mounted) or "
                "an S3 store: set REPRO_STORE (or --store / --repro-store)"
            )
        from repro.containers.image import client

        try:
            client()
        except InfraError as exc:
            raise InfraError(f"{option} docker: {exc}") from None
    elif on == "batch":
        if scheme != "s3":
            raise BadInput(
                f"{option} batch: the store is {store_uri}, but Batch jobs fetch every environment from the store, "
                f"so it must be an S3 store: pass --store s3://bucket/prefix (or set REPRO_STORE)"
            )
        from metaflow import metaflow_config

        missing = [
            name
            for name, value in (
                ("METAFLOW_BATCH_JOB_QUEUE", metaflow_config.BATCH_JOB_QUEUE),
                ("METAFLOW_DATASTORE_SYSROOT_S3", metaflow_config.DATASTORE_SYSROOT_S3),
            )
            if not value
        ]
        if missing:
            raise BadInput(
                f"{option} batch: Metaflow has no {' and no '.join(missing)}: set {', '.join(missing)} (or the same "
                "keys in Metaflow's config) to the AWS Batch job queue and the S3 datastore the jobs use"
            )
        if metaflow_config.DEFAULT_DATASTORE != "s3":
            raise BadInput(
                f"{option} batch: Metaflow's default datastore is {metaflow_config.DEFAULT_DATASTORE!r}, not s3: a run "
                "recorded with it has no S3 client (boto3) in its locked environments, so it can never be replayed "
                "on AWS Batch (whose steps need an S3 datastore); set METAFLOW_DEFAULT_DATASTORE=s3 and "
                "METAFLOW_DATASTORE_SYSROOT_S3 (or the same keys in Metaflow's config)"
            )


def check_batch_replay(original: RunRecord) -> None:
    """Refuse a replay on AWS Batch of a run recorded with a datastore other than S3: Batch steps need an
    S3 datastore, so Metaflow's S3 client (boto3) joins every step's spec, and the frozen check of the
    recorded locks (which have none) would fail only after everything was fetched, built and run."""
    kind = original.datastore.get("type") or "unknown"
    if kind != "s3":
        raise BadInput(
            f"{original.ref} was recorded with a {kind!r} Metaflow datastore, so its locked environments have no "
            "S3 client (boto3), which every step on AWS Batch needs: it cannot be replayed with --on batch. Replay "
            "it --on local or --on docker, or record the run with an S3 datastore (METAFLOW_DEFAULT_DATASTORE=s3, "
            "METAFLOW_DATASTORE_SYSROOT_S3) to replay it on Batch",
            flow=original.flow,
        )


def check_no_batch_steps(original: RunRecord, steps: Sequence[str], where: str) -> None:
    """Refuse a replay ``where`` (local, docker) of a flow whose own code decorates ``steps`` with
    ``@batch``: Metaflow would send them to AWS Batch anyway, and placement rewrites run options only."""
    if steps:
        raise BadInput(
            f"{original.ref}: the flow's code decorates {cap(steps)} with @batch, so Metaflow would run "
            f"{'it' if len(steps) == 1 else 'them'} on AWS Batch, not on {where} as --on says (placement rewrites "
            "only the run options): replay it with --on batch",
            flow=original.flow,
            step=steps[0],
        )


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
    on: str = "local",
    log: Log = print,
    extra_args: tuple[str, ...] = (),
    keep: bool = False,
    image: str | None = None,
    executor: Executor | None = None,
) -> ReplayResult:
    """Replay a recorded run; ``extra_args`` (``repro replay REF -- ...``) add to or override the
    recorded run options and parameters (and are recorded in the replay's own record). The working
    folder (code, datastore) is removed after the verdict unless ``keep``, or the replay failed (its
    logs live there)."""
    if on != "batch" and runs_on_batch(extra_args):  # before any place is checked, fetched or built
        raise BadInput(
            f"--on {on} and `{' '.join(extra_args)}` after --: a replay runs where --on says, and --on {on} "
            "never sends a step to AWS Batch; use --on batch (with your `--with batch:...` after --), or drop "
            "the batch option"
        )
    if on in ("docker", "batch"):
        check_where(on, open_store(store_uri or settings.store).uri, settings)
    if on == "docker":
        from repro.executors.docker import replay_in_docker

        return replay_in_docker(ref_text, store_uri, settings, image=image, log=log, extra_args=extra_args)
    if image:
        raise BadInput("--image is for container replays: add --on docker")
    workdirs: list[Path] = []
    result = None
    try:
        result = _replay(ref_text, store_uri, settings, on, log, workdirs, extra_args, executor or Executor())
        return result
    finally:
        # A failed replay keeps its folder: the logs command it prints reads the datastore there.
        failed = result is not None and result.verdict is ReplayVerdict.FAILED
        for workdir in workdirs:
            if keep or failed:
                log(f"replay working folder kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def _replay(
    ref_text: str,
    store_uri: str | None,
    settings: Settings,
    on: str,
    log: Log,
    workdirs: list[Path],
    extra_args: tuple[str, ...],
    executor: Executor,
) -> ReplayResult:
    if on not in ("local", "batch"):
        raise BadInput(f"--on {on}: not available in this version (--on local, --on docker, --on batch)")
    store: Store = open_store(store_uri or settings.store)
    original = load_record(store, parse_ref(ref_text))
    if on == "batch":  # before anything else is fetched or built
        check_batch_replay(original)
    log(f"replaying {original.ref} from {store.uri}")
    for version, snap in sorted(original.interpreters.items()):  # nothing is created or run anywhere else
        check_location(snap, f"interpreters.{version}", f"{store.uri}: {original.ref}")
    # 1. everything the record names, verified, before anything runs (the interpreters meanwhile)
    envs = environments(settings)
    locks, interpreters = pull_and_restore(original, store, settings, log)
    inputs = pull_inputs(original, store, settings)
    upstream = pull_input_artifacts(original, store, settings)  # verified (sha1) before anything reads them
    # the recorded code (pulled and verified above): a step its own code sends to AWS Batch would not run
    # where --on says, so such a replay is refused before any environment is built
    workdir = _workdir(settings, original)
    workdirs.append(workdir)
    code = _extract_code(settings.home.code_package(original.code_sha256), workdir / "code", original)
    flow_file = inside(code, original.flow_file, f"{original.ref}: flow_file")  # never a file outside the package
    if not flow_file.is_file():
        raise BadInput(
            f"{original.ref}: flow_file {original.flow_file!r} is not in its code package "
            f"(sha256 {original.code_sha256}); the record is corrupt"
        )
    if on != "batch":
        check_no_batch_steps(original, batch_steps(flow_file), executor.kind.value if on == "local" else on)
    # 2. every environment, offline, from the stored package files only
    for env_id, pl in locks.items():
        if envs.get(env_id) is None:
            log(f"rebuilding env {env_id[:12]} offline (Python {pl.python}, {len(pl.packages)} packages)")
            envs.build(
                pl,
                None  # a conda env brings its own interpreter
                if pl.is_conda
                else interpreters.get(pl.python)
                or recorded_interpreter(original, pl.python, store, settings, f"{original.ref} env {env_id[:12]}", log),
                offline=True,
                where=f"replay of {original.ref}",
            )
    # 3. the recorded code, with the recorded parameters, inputs, configs, run options and hash seed
    if original.inputs:  # the runs of other flows the steps read: served from the replay's own datastore
        user = os.environ.get("METAFLOW_USER") or os.environ.get("USER") or os.environ.get("USERNAME") or ""
        log(f"serving {', '.join(lineage.seed(original, upstream, workdir, user))} to the replayed steps")
    declared = parameter_names(flow_file)
    mf_code = code / ".mf_code"  # the Metaflow (and extensions) that ran the original
    problem = _recorded_metaflow_problem(mf_code, original)
    if problem:
        return ReplayResult(original, None, None, workdir, ReplayVerdict.FAILED, ReplayFailure(error=problem))
    given = recorded_args(original, _materialize(original, inputs, workdir / "inputs"), workdir, declared)
    kept = len(given) - len(original.run_options)  # configs, parameters, inputs: never about placement
    placed, dropped = placed_run_options(given[kept:], on, extra_args)
    if dropped and on == "batch":
        log(f"replaying on AWS Batch with {' '.join(extra_args)}: dropped the recorded {' '.join(dropped)}")
    elif dropped:
        log(
            f"replaying on {executor.kind.value if on == 'local' else on}, not on AWS Batch: "
            f"dropped the recorded {' '.join(dropped)}"
        )
    args = [*given[:kept], *placed, *extra_args]
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
    if on == "batch" or original.datastore.get("type") == "s3":
        # Every step a Batch job, or a run that had an S3 datastore (its steps' environments hold
        # Metaflow's S3 needs, boto3: the same envs need the same datastore): the datastore is S3, from
        # Metaflow's own settings in this environment.
        if on != "batch":
            log(f"{original.ref} had an S3 datastore, so the replay has one too (Metaflow's settings here)")
        for name in ("METAFLOW_DATASTORE_SYSROOT_LOCAL", "METAFLOW_DEFAULT_DATASTORE"):
            env.pop(name)
        env["METAFLOW_DEFAULT_DATASTORE"] = "s3"
    if on == "batch":  # the runtime stages each env in this store before it submits a job (containers.batch)
        env.update(environ_for(store=store.uri))
    env["PYTHONPATH"] = os.pathsep.join([str(mf_code), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(spec_environ(original.settings))
    options = RunOptions(
        store=store.uri,
        baseline=original,
        frozen=True,
        metaflow_args=tuple(args),
        env=env,
        identity=original.identity,
        pickle_checks=False,
        settings=load_settings(flow_file, environ={**os.environ, **env}),
    )
    outcome = run_and_record(flow_file, options, log=log)
    if outcome.record is None:  # the run never started: nothing ran, nothing to record
        return ReplayResult(
            original,
            None,
            None,
            workdir,
            ReplayVerdict.FAILED,
            ReplayFailure(
                error=_last_line(outcome.error) or "the replay did not start", output=outcome.error or outcome.output
            ),
        )
    if on == "batch":
        executor = Executor(ExecutorKind.BATCH, image=os.environ.get("METAFLOW_BATCH_CONTAINER_IMAGE", ""))
    replayed = replace(outcome.record, replay_of=original.ref, interpreters=original.interpreters, executor=executor)
    saved, recorded = _record_replay(replayed, store, settings, log)
    if outcome.error:  # it ran, but could not be judged (e.g. the comparison's probe failed)
        return ReplayResult(
            original,
            replayed,
            None,
            workdir,
            ReplayVerdict.FAILED,
            ReplayFailure(error=_last_line(outcome.error), output=outcome.error),
            saved,
            recorded,
        )
    failure = _failure(outcome, replayed, flow_file, workdir, env)
    if failure is not None:
        return ReplayResult(original, replayed, None, workdir, ReplayVerdict.FAILED, failure, saved, recorded)
    if replayed.metaflow_version != original.metaflow_version:
        return ReplayResult(
            original,
            replayed,
            None,
            workdir,
            ReplayVerdict.FAILED,
            ReplayFailure(
                error=f"the replay ran on Metaflow {replayed.metaflow_version}, not the recorded "
                f"{original.metaflow_version}"
            ),
            saved,
            recorded,
        )
    mismatched = [e for e in original.envs if e not in replayed.envs]
    if mismatched:
        raise InfraError(f"replay of {original.ref} did not use the recorded environments {mismatched}")
    assert outcome.comparison is not None
    return ReplayResult(
        original,
        replayed,
        outcome.comparison,
        workdir,
        ReplayVerdict(outcome.comparison.verdict.value),
        None,
        saved,
        recorded,
    )


def pull_and_restore(
    original: RunRecord, store: Store, settings: Settings, log: Log, also: tuple[str, ...] = ()
) -> tuple[dict[str, PlatformLock], dict[str, pythons.Interpreter]]:
    """``pull`` (locks, code, package files, all verified) while the interpreters that the record's
    environments not built here need (and the versions ``also`` names) are restored from their snapshots:
    independent work (network and unzip against tar), so overlapped. Returns the locks and {Python
    version: interpreter}."""
    envs = environments(settings)
    versions = sorted(
        {pl.python for env_id, pl in original.envs.items() if not pl.is_conda and envs.get(env_id) is None}
        | {v for v in also if v in original.interpreters}
    )
    for v in versions:  # before anything is pulled, created or run
        if v in original.interpreters:
            check_location(original.interpreters[v], f"interpreters.{v}", original.ref)
    if not versions:
        return pull(original, store, settings), {}
    with ThreadPoolExecutor(max_workers=len(versions)) as pool:
        restoring = {
            v: pool.submit(recorded_interpreter, original, v, store, settings, f"{original.ref} Python {v}", log)
            for v in versions
        }
        locks = pull(original, store, settings)
        return locks, {v: f.result() for v, f in restoring.items()}


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
    tarball = settings.home.pythons / f"{snap.sha256}.tar.gz"
    if not Path(snap.prefix).exists():
        log(f"restoring Python {version} at {snap.prefix} from the store's snapshot {snap.sha256[:12]}")
        fetch_verified(store, layout.python_snapshot(snap.sha256), snap.sha256, tarball)
    return restore(snap, tarball, where=f"{where}: interpreter snapshot {snap.sha256[:12]}")


def _recorded_metaflow_problem(code: Path, original: RunRecord) -> str:
    """The replay's runtime runs on the Metaflow in the code package (PYTHONPATH=.mf_code); say why not
    if this Python cannot import it, or it is another version."""
    if not (code / "metaflow" / "__init__.py").is_file():  # code: the package's .mf_code folder
        return (
            f"the code package of {original.ref} carries no Metaflow: its runtime cannot be the recorded "
            f"Metaflow {original.metaflow_version}"
        )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); from metaflow.metaflow_version import get_version; "
        "print(get_version())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(code)],
        capture_output=True,
        text=True,
        cwd=code,
        env={**os.environ, "METAFLOW_USER": os.environ.get("METAFLOW_USER", "repro")},
        timeout=300,
    )
    if proc.returncode != 0:
        return (
            f"this Python ({sys.executable}, {sys.version.split()[0]}) cannot import the recorded Metaflow "
            f"{original.metaflow_version}: {error_line(proc.stderr) or proc.stderr.strip()[-500:]}"
        )
    got = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if original.metaflow_version and got != original.metaflow_version:
        return f"the code package carries Metaflow {got}, but the record says {original.metaflow_version} ran"
    return ""


def recorded_args(
    record: RunRecord, include_files: dict[str, Path], workdir: Path, declared: tuple[str, ...] | None = None
) -> list[str]:
    """Metaflow options that give the recorded run again: configs (top-level), parameters, the
    IncludeFile contents (as files), and the recorded run options. Parameters only by names the flow
    declares (``declared``), so a record can never smuggle in a Metaflow option (``--run-id-file``...)."""
    smuggled = [t for t in record.run_options if t.startswith("--") and t.split("=", 1)[0] not in REPLAYED_RUN_OPTIONS]
    if smuggled:
        raise BadInput(
            f"{record.ref}: the record's run options {cap(map(repr, smuggled))} are not options a replay "
            f"passes on (only {', '.join(sorted(REPLAYED_RUN_OPTIONS))}); the record is corrupt or hostile, and "
            "nothing was run"
        )
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
    return [*args, *record.run_options]


def _materialize(record: RunRecord, blobs: dict[str, Path], folder: Path) -> dict[str, Path]:
    """Each IncludeFile's recorded bytes as a file of its original name (one folder per parameter)."""
    out = {}
    for name, blob in sorted(blobs.items()):
        target = folder / name / record.include_files[name].name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob, target)
        out[name] = target
    return out


def _record_replay(replayed: RunRecord, store: Store, settings: Settings, log: Log) -> tuple[str, str]:
    saved = str(save_local(replayed, settings))
    try:
        return saved, f"{store.uri}/{push_replay_record(replayed, store)}"
    except ReproError as exc:
        log(f"repro: the replay's record is kept in {saved} but could not be written to {store.uri}: {exc}")
        return saved, ""


def _failure(outcome: Outcome, replayed: RunRecord, flow_file: Path, workdir: Path, env: dict) -> ReplayFailure | None:
    failed = [f for f in outcome.findings if f.kind is Kind.TASK_FAILED]
    if not failed and replayed.status is RunStatus.SUCCESS:
        return None
    if not failed:
        return ReplayFailure(error=f"the run failed (exit code {outcome.exit_code})", output=outcome.output)
    first = failed[0]
    pathspec = task_pathspec(replayed, first)
    logs = logs_command(flow_file, pathspec, env)
    return ReplayFailure(
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
)


def task_pathspec(record: RunRecord, failed: Finding) -> str:
    """The Metaflow pathspec run_id/step/task_id (without the flow) of a failed task, or run_id/step
    when the record has no such task (it failed before its task got an id)."""
    step = record.steps.get(failed.step)
    task = step.tasks.get(failed.task) if step else None
    return f"{record.run_id}/{failed.step}/{task.task_id}" if task else f"{record.run_id}/{failed.step}"


def logs_command(flow_file: Path, pathspec: str, env: dict[str, str] | None = None) -> str:
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


def _extract_code(package: Path, code: Path, original: RunRecord) -> Path:
    code.mkdir()
    try:
        with tarfile.open(package) as tar:
            if hasattr(tarfile, "data_filter"):  # refuses absolute paths, links out of the folder, devices
                tar.extractall(code, filter="data")
            else:  # Python < 3.10.12 has no filters: check the members ourselves
                for member in tar.getmembers():
                    if not (member.isfile() or member.isdir()):
                        raise BadInput(f"code package of {original.ref}: refusing unsafe member {member.name!r}")
                    inside(code, member.name, f"code package of {original.ref}: member")
                tar.extractall(code)
    except tarfile.TarError as exc:  # FilterError (a member out of the folder, a link, a device) or not a tar
        raise BadInput(
            f"code package {package.name} of {original.ref} is unsafe or not a code package: "
            f"{type(exc).__name__}: {exc}; nothing from it was used"
        ) from None
    return code
