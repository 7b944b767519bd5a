"""Running a flow under repro's environments and turning the finished run into a RunRecord."""

from __future__ import annotations

import json
import os
import platform as _platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro import __version__
from metaflow_repro.adapter import lineage, procgroup
from metaflow_repro.adapter.inspect_run import CLONED_FROM
from metaflow_repro.env.engine import Flow
from metaflow_repro.env.flowfile import CONFIG_OPTIONS
from metaflow_repro.errors import EXIT_BAD_INPUT, BadInput, InfraError, ReproError
from metaflow_repro.model import inspection
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.inspection import InspectedTask, RunInspection
from metaflow_repro.model.lock import Lock
from metaflow_repro.model.record import (
    NO_CODE,
    NO_FOREACH,
    ArtifactRecord,
    ConfigRecord,
    ConfigSource,
    IncludedFileRecord,
    RunRecord,
    RunStatus,
    StepRecord,
    TaskRecord,
)
from metaflow_repro.model.validate import Invalid
from metaflow_repro.settings import spec_settings

#: Metaflow options that belong before `run` (top-level), with how many values each takes
TOP_LEVEL_OPTIONS = {
    **CONFIG_OPTIONS,
    "--branch": 1,  # @project's: the run's branch (its identity)
    "--production": 0,
}
#: `run` options that say nothing about the run's graph or results, so are not recorded
UNRECORDED_OPTIONS = {"--run-id-file": 1}


def environment_name(flow: Flow) -> str:
    """`pypi` for flows declared with @pypi only, else `conda` (both are repro's environment)."""
    kinds = {s.kind for s in flow.specs.values() if s.kind != "none"}
    return "pypi" if kinds == {"pypi"} else "conda"


def split_top_level(args: list[str]) -> tuple[list[str], list[str]]:
    """(top-level options, `run` options): `--config NAME FILE` and `--config-value NAME VALUE` are
    options of the flow, not of `run`, so users may give them among the run options."""
    top, run = [], []
    i = 0
    while i < len(args):
        opt = args[i].split("=", 1)[0]
        n = TOP_LEVEL_OPTIONS.get(opt)
        if n is None:
            run.append(args[i])
            i += 1
            continue
        take = 1 + (n - 1 if "=" in args[i] else n)
        top += args[i : i + take]
        i += take
    return top, run


def run_flow(
    flow_file: Path,
    environment: str,
    args: list[str],
    env: dict | None = None,
    capture: bool = False,
    cwd: Path | None = None,
    run_id_file: Path | None = None,
    resume: Sequence[str] = (),
) -> tuple[int, str | None, float, str]:
    """Run `python FLOW [TOP] --environment=E run ARGS`; return (exit code, run id, seconds, output).
    ``resume`` (origin run id, step): `resume --origin-run-id ID STEP ARGS` instead, which clones the
    origin run's tasks before STEP from the same datastore and runs STEP and every step after it.

    Top-level options among ARGS (``--config``, ``--config-value``) go before `run`. Metaflow writes
    the run id to ``run_id_file`` (default: a temporary file) as soon as the run starts. Its processes
    die with this one, however it dies (``procgroup``).

    A repro error inside Metaflow's process (a stale lock, a bad declaration) is raised here as the
    same kind of error, with its exit code: the extension writes it to the error file we name."""
    with tempfile.TemporaryDirectory(prefix="repro-run-") as tmp:
        id_file = run_id_file or Path(tmp) / "run-id"
        error_file = Path(tmp) / "error.json"
        top, run_args = split_top_level(list(args))
        cmd = [
            sys.executable,
            str(flow_file),
            *top,
            f"--environment={environment}",
            *(("resume", "--origin-run-id", resume[0], resume[1]) if resume else ("run",)),
            "--run-id-file",
            str(id_file),
            *run_args,
        ]
        t = time.perf_counter()
        full_env = {**os.environ, **(env or {}), protocol.ERROR_FILE_VAR: str(error_file)}
        # Metaflow refuses to run without a user name; CI machines may have none.
        full_env.setdefault("METAFLOW_USER", full_env.get("USER") or full_env.get("USERNAME") or "repro")
        proc = procgroup.run(cmd, env=full_env, cwd=cwd, capture=capture)
        elapsed = time.perf_counter() - t
        run_id = id_file.read_text().strip() if id_file.exists() else None
        reported = _reported_error(error_file)
    output = (proc.stdout or "") + (proc.stderr or "") if capture else ""
    if reported is not None and run_id is None:
        raise reported
    return proc.returncode, run_id, elapsed, output


def _reported_error(path: Path) -> ReproError | None:
    try:
        doc = json.loads(path.read_text())
        code, message = int(doc["exit_code"]), str(doc["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    error = BadInput(message) if code == EXIT_BAD_INPUT else InfraError(message)
    error.exit_code = code
    return error


def inspect(
    flow_name: str,
    run_id: str,
    parameters,
    env: dict | None = None,
    info: dict | None = None,
    inputs_dir: Path | None = None,
    lineage_dir: Path | None = None,
) -> RunInspection:
    """The finished run, read back by Metaflow's client; IncludeFile contents land in
    ``inputs_dir/<sha256>``, the artifacts of other flows' runs that steps read in ``lineage_dir/<sha1>``
    (``input_sizes``: sha1 -> size)."""
    kinds = {name: getattr((info or {}).get(name), "kind", "parameter") for name in parameters}
    with tempfile.TemporaryDirectory(prefix="repro-inputs-") as tmp:
        target = str(inputs_dir) if inputs_dir is not None else tmp
        lineage = str(lineage_dir) if lineage_dir is not None else os.path.join(tmp, "sha1")
        return _inspect(flow_name, run_id, kinds, target, env, lineage)


def _inspect(
    flow_name: str, run_id: str, kinds: dict, inputs_dir: str, env: dict | None, lineage_dir: str
) -> RunInspection:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metaflow_repro.adapter.inspect_run",
            f"{flow_name}/{run_id}",
            json.dumps(kinds),
            inputs_dir,
            lineage_dir,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if proc.returncode != 0:
        raise InfraError(f"cannot read run {flow_name}/{run_id} back from Metaflow:\n{proc.stderr.strip()[-3000:]}")
    try:
        return inspection.from_json(proc.stdout, f"run {flow_name}/{run_id} as read back from Metaflow")
    except Invalid as exc:  # that process read the user's run: what it says is checked like a stored record
        raise InfraError(f"cannot read run {flow_name}/{run_id} back from Metaflow: {exc}") from None


def lock_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _option_values(args: list[str], option: str, n: int = 1) -> list[list[str]]:
    out = []
    for i, a in enumerate(args):
        if a == option:
            out.append(args[i + 1 : i + 1 + n])
        elif a.startswith(option + "="):
            out.append([a.split("=", 1)[1], *args[i + 1 : i + n]])
    return out


def _safe_file_name(text: str, fallback: str) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9_.+\-]", "_", Path(text).name).lstrip(".-") if text else ""
    return name.replace("..", "_") or fallback


def run_options_of(args: list[str], parameters) -> tuple[str, ...]:
    """The `run` options that shape the run: all but parameters (recorded as such), top-level options
    (configs are recorded as such) and bookkeeping (``--run-id-file``)."""
    _, run_args = split_top_level(list(args))
    skip = dict(UNRECORDED_OPTIONS)
    for name in parameters:
        skip[f"--{name}"] = 1
        skip[f"--{name.replace('_', '-')}"] = 1
    out, i = [], 0
    while i < len(run_args):
        opt = run_args[i].split("=", 1)[0]
        if opt in skip:
            i += 1 + (0 if "=" in run_args[i] else skip[opt])
            continue
        out.append(run_args[i])
        i += 1
    return tuple(out)


#: files or folders that mark a project's root, in two ranks: the nearest folder above the flow file
#: holding one of the first rank wins, then one of the second (the first rank was the only one once, so
#: a flow under such a root keeps the identity its stored runs have)
PROJECT_MARKERS = (("pyproject.toml", ".git"), ("setup.cfg", "setup.py", ".hg"))


def project_root(path: Path) -> Path | None:
    """The nearest folder above the flow file that holds a project marker (``PROJECT_MARKERS``); None
    when there is none (a ``.metaflow`` datastore folder is not one)."""
    path = Path(path).resolve()
    for markers in PROJECT_MARKERS:
        for folder in path.parents:
            if any((folder / marker).exists() for marker in markers):
                return folder
    return None


def flow_identity(flow_name: str, path: Path, project: str = "", branch: str = "") -> str:
    """A flow is its class name plus where it lives: the flow file's path from the project root, or
    its @project name and branch. Three files defining `PlayListFlow` are three flows. With no project
    root above it, the flow file's folder names it too (``01-playlist/playlist.py``): tutorials pulled
    into sibling folders are as many flows."""
    if project:
        return f"{flow_name}:@{project}/{branch or 'default'}"
    path = Path(path).resolve()
    root = project_root(path)
    where = path.relative_to(root) if root is not None else Path(path.parent.name, path.name)
    return f"{flow_name}:{where.as_posix()}"


def project_branch(project, args: Sequence[str] = (), user: str = "") -> str:
    """The branch a run of a ``@project`` flow will be tagged with, as Metaflow's ``@project`` names it:
    ``prod[.B]`` with ``--production``, ``test.B`` with ``--branch B``, else ``user.<user name>``."""
    argv = list(args)
    given = project.branch
    for i, a in enumerate(argv):
        if a == "--branch" and i + 1 < len(argv):
            given = argv[i + 1]
        elif a.startswith("--branch="):
            given = a.split("=", 1)[1]
    production = project.production or "--production" in argv
    if production:
        return f"prod.{given}" if given else "prod"
    return f"test.{given}" if given else f"user.{user}"


def expected_identity(flow: Flow, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> str:
    """The identity a run of ``flow`` with ``args`` will have, known before it runs: the @project
    name and branch when the flow has a @project, else its class name and flow file."""
    project = flow.decl.project
    if project is None:
        return flow_identity(flow.name, flow.path)
    from metaflow.util import get_username

    # as the Metaflow process will see it: METAFLOW_USER of its environment, else Metaflow's own lookup
    user = (env or {}).get("METAFLOW_USER") or os.environ.get("METAFLOW_USER") or get_username() or ""
    return flow_identity(flow.name, flow.path, project.name, project_branch(project, args, user))


def build_record(
    flow: Flow, lock: Lock, run_id: str, found: RunInspection, duration: float, args: tuple[str, ...] = ()
) -> RunRecord:
    """A RunRecord from a finished run as read back and the options it ran with (no I/O here)."""
    argv = list(args)  # a new name: ``args`` is the caller's tuple
    steps, envs, ds, code_sha, seeds = _steps(flow, lock, run_id, found)
    return RunRecord(
        flow=flow.name,
        run_id=run_id,
        flow_file=flow.path.name,
        code_sha256=code_sha,
        lock_sha256=lock_sha256(flow.lock_file),
        parameters=dict(found.parameters),
        pythonhashseed=",".join(sorted(seeds - {""})) or "",
        metaflow_version=found.metaflow_version or _metaflow_version(),  # the runtime's, not ours
        repro_version=__version__,
        host={
            "platform": plats.local_platform_name(),
            "python": ".".join(str(x) for x in sys.version_info[:3]),
            "system": _platform.platform(),
            "node": _platform.node(),
        },
        datastore=ds,
        steps=steps,
        envs=envs,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(duration, 3),
        status=RunStatus.SUCCESS if found.successful else RunStatus.FAILED,
        settings=spec_settings(flow.settings),
        graph={k: tuple(v) for k, v in (flow.decl.graph or {}).items()},
        step_order=tuple(flow.decl.steps),
        include_files=_include_files(flow, found, argv),
        configs=_configs(flow, found, argv),
        run_options=run_options_of(argv, flow.decl.parameters),
        identity=flow_identity(flow.name, flow.path, found.project, found.project_branch),
        inputs=lineage.collect(found.task_reports(), found.input_sizes, f"run {flow.name}/{run_id}"),
    )


def _include_files(flow: Flow, found: RunInspection, argv: list[str]) -> dict[str, IncludedFileRecord]:
    """Each IncludeFile's contents, named after the file the user gave (or the default one)."""
    info = flow.decl.parameter_info or {}
    out = {}
    for name, f in sorted(found.include_files.items()):
        given = _option_values(argv, f"--{name}")
        original = given[-1][0] if given and given[-1] else getattr(info.get(name), "default_file", "")
        out[name] = IncludedFileRecord(
            sha256=f.sha256,
            size=f.size,
            name=_safe_file_name(original, f"{name}.input"),
            is_text=f.is_text,
            encoding=f.encoding,
        )
    return out


def _configs(flow: Flow, found: RunInspection, argv: list[str]) -> dict[str, ConfigRecord]:
    """Each Config's value, and whether the command line gave it."""
    info = flow.decl.parameter_info or {}
    top, _ = split_top_level(argv)
    named = {v[0] for opt in ("--config", "--config-value") for v in _option_values(top, opt, 2) if v}
    return {
        name: ConfigRecord(
            value=value,
            source=ConfigSource.COMMAND_LINE if name in named else ConfigSource.DEFAULT,
            plain=getattr(info.get(name), "plain", False),
            parser=getattr(info.get(name), "parser", False),
        )
        for name, value in sorted(found.configs.items())
    }


def _steps(
    flow: Flow, lock: Lock, run_id: str, found: RunInspection
) -> tuple[dict[str, StepRecord], dict, dict[str, str | None], str, set[str]]:
    """(steps, envs, datastore, code package sha256, hash seeds) of the run's tasks."""
    local = plats.local_platform_name()
    steps, envs, code_shas, seeds = {}, {}, set(), set()
    ds: dict[str, str | None] = {}
    for step in flow.decl.steps:
        spec = flow.specs[step]
        env_id = protocol.DISABLED if spec.disabled else lock.steps[step].platforms[local].env_id
        if not spec.disabled:
            envs[env_id] = lock.steps[step].platforms[local]
        tasks: dict[str, TaskRecord] = {}
        for t in found.steps.get(step, ()):
            if CLONED_FROM not in t.metadata:  # a task `resume` cloned ran the origin run's code package
                code_shas.add(t.metadata.get(protocol.META_CODE_SHA, ""))
            seeds.add(t.metadata.get(protocol.META_PYTHONHASHSEED, ""))
            ds = {"type": t.ds_type, "root": t.ds_root}
            tasks[t.foreach] = _task_record(t)
        steps[step] = StepRecord(
            spec_id=spec.spec_id,
            env_id=env_id,
            disabled=spec.disabled,
            tasks=dict(sorted(tasks.items(), key=lambda kv: _task_order(kv[0]))),
        )
    return steps, envs, ds, _code_sha(code_shas, found.successful, f"{flow.name}/{run_id}"), seeds


def _task_record(t: InspectedTask) -> TaskRecord:
    fp = json.loads(t.metadata.get(protocol.META_FINGERPRINT) or "{}")
    return TaskRecord(
        task_id=t.task_id,
        env_id=t.metadata.get(protocol.META_ENV_ID, ""),
        fingerprint=fp.get("digest", ""),
        interpreter=t.metadata.get(protocol.META_INTERPRETER, ""),
        artifacts={n: ArtifactRecord(sha1=a.sha1, size=a.size, type=a.type) for n, a in sorted(t.artifacts.items())},
        caught=t.caught,
    )


def _code_sha(code_shas: set[str], successful: bool, run: str) -> str:
    """The one code package every task of the run reports."""
    found = code_shas - {""}
    if not found and not successful:
        # no task got as far as its step (e.g. every Batch job failed before its task started): the
        # failed run is still recorded for its report (a failed replay's record is saved and pushed too:
        # named_objects names no code object for NO_CODE)
        found = {NO_CODE}
    if len(found) != 1:
        raise InfraError(
            f"run {run}: tasks report {len(found)} code packages; was it run with repro's --environment=conda?"
        )
    return found.pop()


def _task_order(key: str):
    return tuple(int(x) for x in key.split(".")) if key != NO_FOREACH else ()


def _metaflow_version() -> str:
    try:
        from metaflow.metaflow_version import get_version

        return get_version()
    except Exception:
        import metaflow

        return getattr(metaflow, "__version__", "unknown")
