"""The environment engine: flow file → EnvSpecs → Lock → package cache → environments.

This module orders the work. The decisions are pure and live in ``metaflow_repro.model``: ``model.spec``
merges a step's declarations into an ``EnvSpec``, ``model.lock`` gives a lock its identity and its
diffs. The work with side effects lives beside this module in ``metaflow_repro.env``: ``flowfile`` imports
the flow and reads its decorators, ``pythons`` finds the interpreters, ``pypi`` (uv) and ``conda``
(rattler) resolve, ``cache`` keeps the verified package files, ``build`` makes the environments and
``condalock`` exports and imports conda-lock files.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from metaflow_repro.env import pypi, pythons
from metaflow_repro.env.build import BuiltEnv, Environments
from metaflow_repro.env.cache import PackageCache
from metaflow_repro.env.flowfile import FlowDeclarations, declarations_of, load_flow
from metaflow_repro.errors import BadInput, LockFileError
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.model.lock import (
    Lock,
    PlatformLock,
    StepLock,
    diff_packages,
    diff_spec,
    lock_path,
    read_lock,
    write_lock,
)
from metaflow_repro.model.spec import EnvSpec, merge, python_is_exact, python_matches
from metaflow_repro.model.validate import cap, cap_lines
from metaflow_repro.settings import Settings, load_settings

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Flow:
    """A loaded flow with its specs and (possibly missing) lock."""

    path: Path
    decl: FlowDeclarations
    specs: dict  # step -> EnvSpec
    settings: Settings
    lock: Lock | None
    lock_file: Path = field(init=False)

    def __post_init__(self):
        self.lock_file = lock_path(self.path)

    @property
    def name(self) -> str:
        return self.decl.name


def open_flow(
    path: Path,
    settings: Settings | None = None,
    metaflow_args: Sequence[str] = (),
    s3_datastore: bool | None = None,
    decl: FlowDeclarations | None = None,
) -> Flow:
    """Import a flow file and read its declarations (with the config values these Metaflow options
    give, see ``flowfile.load_flow``) and lock. ``s3_datastore``: whether the run will have an S3
    datastore (Metaflow's S3 needs join each env), when not Metaflow's setting in this process.
    ``decl``: the declarations a caller already read with these options (pytest reads them to collect
    the flow), so that one run imports the flow file once."""
    path = Path(path)
    if decl is None:
        decl = load_flow(path, metaflow_args)
    if s3_datastore is not None:
        decl = replace(decl, s3_datastore=s3_datastore)
    return _flow(decl, path, settings or load_settings(path))


def flow_from_class(cls, path: Path, settings: Settings, s3_datastore: bool | None = None) -> Flow:
    """The same, from a FlowSpec class already imported (inside Metaflow's runtime)."""
    decl = declarations_of(cls, path)
    if s3_datastore is not None:
        decl = replace(decl, s3_datastore=s3_datastore)
    return _flow(decl, Path(path), settings)


def _flow(decl: FlowDeclarations, path: Path, settings: Settings) -> Flow:
    default_python = pythons.current().version
    specs = {}
    for step in decl.steps:
        specs[step] = merge(
            flow=f"{decl.name} ({path.name})",
            step=step,
            base=list(decl.base),
            own=list(decl.per_step[step]),
            default_python=default_python,
            conda_source=settings.conda_source,
            s3_datastore=decl.s3_datastore,
            default_channels=settings.channels,
        )
    return Flow(path=path, decl=decl, specs=specs, settings=settings, lock=flow_lock(path, decl.name))


def flow_lock(path: Path, flow_name: str) -> Lock | None:
    """The lock file of the flow at ``path`` (None if there is none), refused when it is another flow's."""
    lock = read_lock(lock_path(path))
    if lock is not None and lock.flow != flow_name:
        raise LockFileError(
            f"{lock_path(path)}: this lock is for flow {lock.flow}, but {path.name} "
            f"defines {flow_name}. Delete it and run `repro lock {path.name}`."
        )
    return lock


def locked_platforms(flow: Flow) -> list[str]:
    """The platforms the flow's lock covers (in the order they first appear), none without a lock."""
    names: list[str] = []
    if flow.lock:
        for s in flow.lock.steps.values():
            names += [p for p in s.platforms if p not in names]
    return names


def target_platforms(flow: Flow, requested: list[str] | None = None, removed: list[str] | None = None) -> list[str]:
    """The platforms a (re-)lock covers: those already locked (else REPRO_PLATFORMS, else this
    machine's), plus ``requested``, minus ``removed``. Adding a platform never drops another:
    dropping one takes an explicit ``removed`` (``repro lock --remove-platform``)."""
    for n in [*(requested or []), *(removed or [])]:
        plats.get(n)  # validates
    if flow.settings.platforms:
        names = list(flow.settings.platforms)
        names += [p for p in locked_platforms(flow) if p not in names]
    else:
        names = locked_platforms(flow) or [plats.local_platform_name()]
    names = [n for n in dict.fromkeys([*names, *(requested or [])]) if n not in set(removed or [])]
    for n in names:
        plats.get(n)
    if not names:
        raise BadInput(
            f"{flow.path.name}: removing {', '.join(removed or [])} would leave the lock with no "
            f"platform; add one with --platform NAME"
        )
    return names


def exact_python(spec: EnvSpec) -> str:
    """The exact interpreter version for a spec: as given, or the newest installed one that matches
    (a conda spec's interpreter is the channel's python package: the solver picks it)."""
    if spec.source == "conda":
        return spec.python
    if python_is_exact(spec.python):
        return spec.python.lstrip("=")
    return pythons.find(spec.python, where=spec.where).version


def uninstalled_pythons(flow: Flow) -> list[str]:
    """One warning per exact ``python=`` no interpreter here has: a lock for it can be written (it may
    be for another machine), but no environment can be built here."""
    from metaflow_repro.errors import PythonNotFound

    out, seen = [], set()
    for spec in flow.specs.values():
        if spec.disabled or spec.source == "conda" or not python_is_exact(spec.python) or spec.python in seen:
            continue  # a conda env's interpreter is the channel's python package, not an installed one
        try:
            pythons.find(spec.python.lstrip("="), where=spec.where)
        except PythonNotFound:
            seen.add(spec.python)
            have = ", ".join(i.version for i in pythons.installed()) or "none"
            out.append(
                f"{spec.where}: Python {spec.python.lstrip('=')} is not installed here (installed: {have}). "
                f"The lock is valid for a machine that has it, but `repro env build` and runs fail here "
                f"until it is installed (e.g. `pyenv install {spec.python.lstrip('=')}`) or the declaration "
                f"names an installed version (`repro doctor` lists them)."
            )
    return out


def spec_drift(flow: Flow, platforms: list[str] | None = None) -> list[Finding]:
    """Where the declarations no longer match the lock (no network; what `lock --check` reports)."""
    if flow.lock is None:
        return [
            Finding(
                Kind.SPEC_DRIFT,
                f"no lock file {flow.lock_file.name} (commit the one `repro lock {flow.path.name}` writes)",
                subject="lock",
            )
        ]
    out = []
    locked = flow.lock.steps
    for step, spec in flow.specs.items():
        if step not in locked:
            out.append(Finding(Kind.SPEC_DRIFT, "+ step is not in the lock", step=step, subject="step", new=step))
            continue
        changes = diff_spec(locked[step], spec)
        out += [Finding(Kind.SPEC_DRIFT, str(c), step=step, subject=c.subject, old=c.old, new=c.new) for c in changes]
        if not changes and not spec.disabled:
            out += [
                Finding(
                    Kind.SPEC_DRIFT, f"+ platform {p} is not locked", step=step, subject="platform", new=p, platform=p
                )
                for p in platforms or []
                if p not in locked[step].platforms
            ]
    for step in sorted(set(locked) - set(flow.specs)):
        out.append(Finding(Kind.SPEC_DRIFT, "- step is no longer in the flow", step=step, subject="step", old=step))
    return out


def relock_command(flow_file: str, findings: list[Finding]) -> str:
    """The command that fixes these spec-drift findings (platforms not yet locked are added)."""
    missing = dict.fromkeys(
        f.platform for f in findings if f.kind is Kind.SPEC_DRIFT and f.subject == "platform" and f.platform
    )
    return " ".join(["repro lock", flow_file, *(f"--platform {p}" for p in missing)])


@dataclass(frozen=True)
class LockResult:
    lock: Lock
    written: bool
    changes: dict  # step -> list of lines (what changed vs. the previous lock)


def lock_flow(
    flow: Flow,
    platforms: list[str] | None = None,
    log: Log = _stderr,
    write: bool = True,
    remove: list[str] | None = None,
) -> LockResult:
    """Resolve what changed since the lock was written; reuse every step that did not.

    ``platforms`` are added to those already locked; ``remove`` drops platforms from the lock."""
    names = target_platforms(flow, platforms, remove)
    old = flow.lock.steps if flow.lock else {}
    resolutions: dict[tuple, PlatformLock] = {}  # (spec id, platform, python): steps with one spec share it
    steps, changes = {}, {}
    for step, spec in flow.specs.items():
        prev = old.get(step)
        per_platform = {}
        if not spec.disabled:
            per_platform = {pname: _platform_lock(flow, step, spec, prev, pname, resolutions, log) for pname in names}
        new = StepLock.from_spec(spec, per_platform)
        steps[step] = new
        if prev is None:
            changes[step] = _new_step_lines(spec, per_platform)
        elif prev != new:
            changes[step] = _changed_step_lines(prev, spec, per_platform)
    for step in sorted(set(old) - set(steps)):
        changes[step] = ["- step removed from the flow"]
    lock = Lock(flow=flow.name, file=flow.path.name, steps=dict(sorted(steps.items())))
    written = write_lock(lock, flow.lock_file) if write else False
    if written:
        flow.lock = lock
    return LockResult(lock=lock, written=written, changes=changes)


def _platform_lock(
    flow: Flow,
    step: str,
    spec: EnvSpec,
    prev: StepLock | None,
    pname: str,
    resolutions: dict[tuple, PlatformLock],
    log: Log,
) -> PlatformLock:
    """A step's environment on one platform: the locked one while the step's spec is unchanged,
    else resolved (from the previous one, once per spec, platform and Python)."""
    if prev is not None and prev.spec_id == spec.spec_id and pname in prev.platforms:
        return prev.platforms[pname]
    python = exact_python(spec)
    key = (spec.spec_id, pname, python)
    if key not in resolutions:
        log(
            f"resolving {flow.name}.{step} for {pname} (Python {python}): "
            + cap(f"{n}=={v}" for n, v in spec.requirements.items())
        )
        before = prev.platforms.get(pname) if prev is not None else None
        resolutions[key] = resolve(flow, spec, pname, python, previous=before)
    return resolutions[key]


def _new_step_lines(spec: EnvSpec, per_platform: dict[str, PlatformLock]) -> list[str]:
    stated = {n for n, _ in spec.libraries}
    lines = ["+ new step" + ("" if per_platform else " (disabled)")]
    return lines + [
        f"{pname}: {len(pl.packages)} packages ({len(stated)} stated), env {pl.env_id[:12]}"
        for pname, pl in per_platform.items()
    ]


def _changed_step_lines(prev: StepLock, spec: EnvSpec, per_platform: dict[str, PlatformLock]) -> list[str]:
    """What changed in a locked step: its declaration, then each platform in name order."""
    lines = [str(c) for c in diff_spec(prev, spec)]
    for pname in sorted(set(per_platform) | set(prev.platforms)):
        lines += _platform_change_lines(pname, prev.platforms.get(pname), per_platform.get(pname), prev, spec)
    return lines


def _platform_change_lines(
    pname: str, a: PlatformLock | None, b: PlatformLock | None, prev: StepLock, spec: EnvSpec
) -> list[str]:
    """One platform of a locked step, ``a`` before and ``b`` after. A platform dropped from a step
    that still has platforms, or added to a step whose spec did not change, is one line; anything
    else (a step disabled, or re-resolved) lists its packages."""
    if a is not None and b is None and not spec.disabled:
        return [f"{pname}: - platform removed from the lock"]
    if a is None and b is not None and prev.spec_id == spec.spec_id:
        return [f"{pname}: + platform added ({len(b.packages)} packages, env {b.env_id[:12]})"]
    if a == b:
        return []
    stated = {n for n, _ in spec.libraries}
    return [f"{pname}: {x}" for x in diff_packages(a, b, stated)] or [f"{pname}: re-resolved, same packages"]


def resolve(
    flow: Flow, spec: EnvSpec, platform: str, python: str, previous: PlatformLock | None = None
) -> PlatformLock:
    """One step's environment for one platform: conda channels with rattler, else PyPI with uv
    (``previous``: the lock being replaced, whose sdist-built wheels are kept)."""
    if spec.source == "conda":
        from metaflow_repro.env import conda

        return conda.resolve(spec, platform, flow.settings, conda.project_base(flow.settings, flow.path))
    return pypi.resolve(spec, platform, python, flow.settings, previous=previous)


def interpreter_for(pl: PlatformLock, where: str) -> pythons.Interpreter | None:
    """The installed interpreter a PyPI env is made from; None for a conda env (it brings its own)."""
    return None if pl.is_conda else pythons.find(pl.python, where=where)


def environments(settings: Settings) -> Environments:
    home = settings.home
    return Environments(home.envs, PackageCache(home.packages), home.uv_cache, home.conda_pkgs)


def current_lock(flow: Flow, offline: bool = False, log: Log = _stderr, frozen: bool = False) -> Lock:
    """The lock to build from: the committed one if it is current; else re-lock (never offline,
    never frozen: then a stale lock is an error that says what drifted)."""
    local = plats.local_platform_name()
    drift = spec_drift(flow, [local])
    if not drift:
        assert flow.lock is not None, "spec_drift reports a missing lock as drift"
        return flow.lock
    if offline or frozen:
        detail = "\n".join(cap_lines(f"  {f.line()}" for f in drift))
        why = (
            "--offline forbids resolving (so does REPRO_OFFLINE)"
            if offline
            else "REPRO_FROZEN is set, so it is not re-resolved"
        )
        raise BadInput(
            f"{flow.path}: the lock does not match the flow, and {why}:\n"
            f"{detail}\nRun `repro lock {flow.path.name}` (with network access) and commit the lock."
        )
    result = lock_flow(flow, platforms=[local], log=log)
    for step, lines in result.changes.items():
        log(f"lock updated for {flow.name}.{step}: " + cap(lines))
    return result.lock


def build_flow(
    flow: Flow,
    steps: list[str] | None = None,
    offline: bool = False,
    log: Log = _stderr,
    frozen: bool = False,
    repair: bool = False,
) -> dict[str, BuiltEnv | None]:
    """Build (or reuse) every step's environment; disabled steps map to None."""
    unknown = [s for s in steps or [] if s not in flow.specs]
    if unknown:
        raise BadInput(
            f"{flow.path}: no step named {', '.join(unknown)} in flow {flow.name} (steps: {', '.join(flow.specs)})"
        )
    lock = current_lock(flow, offline, log, frozen)
    local = plats.local_platform_name()
    envs = environments(flow.settings)
    built: dict[str, BuiltEnv | None] = {}
    by_env: dict[str, BuiltEnv] = {}
    for step in steps or list(flow.specs):
        sl = lock.steps[step]
        if sl.disabled:
            built[step] = None
            continue
        pl = sl.platforms[local]
        if pl.env_id not in by_env:
            where = flow.specs[step].where
            env = envs.get(pl.env_id)
            if env is not None and envs.damage(env, pl, full=repair):  # a damaged env is never reused
                env = envs.build(pl, interpreter_for(pl, where), offline=offline, where=where, repair=repair, log=log)
            if env is None:
                interp = interpreter_for(pl, where)
                log(
                    f"building env {pl.env_id[:12]} for {flow.name}.{step} "
                    f"(Python {pl.python}, {len(pl.packages)} packages)"
                )
                env = envs.build(pl, interp, offline=offline, where=where, log=log)
            by_env[pl.env_id] = env
        built[step] = by_env[pl.env_id]
    return built


def import_conda_lock(flow: Flow, path: Path, step: str) -> Lock:
    """Make ``step``'s locked env the one a conda-lock file describes (every platform in it), after
    checking it holds what the step declares; other steps keep their lock (a later `repro lock`
    resolves those that need it). Writes the lock."""
    from metaflow_repro.env import condalock

    spec = flow.specs.get(step)
    if spec is None:
        raise BadInput(f"{flow.path}: no step named {step} in flow {flow.name} (steps: {', '.join(flow.specs)})")
    if spec.source != "conda":
        raise BadInput(f"{spec.where}: --from imports a conda env, but this step is resolved from {spec.source}")
    platforms = condalock.read(path, environments(flow.settings).cache, spec.where)
    for pname, pl in platforms.items():
        have = {p.name: p.version for p in pl.packages}
        for name, version in {**spec.requirements, **dict(spec.pip)}.items():
            if have.get(name) != version:
                raise BadInput(
                    f"{spec.where}: {path} ({pname}) has {name} {have.get(name, '(absent)')}, the step declares "
                    f"{name}=={version}; import a conda-lock file made for this declaration",
                    library=name,
                    path=str(path),
                )
        if not python_matches(pl.python, spec.python):
            raise BadInput(f"{spec.where}: {path} ({pname}) has Python {pl.python}, the step declares {spec.python}")
    steps = dict(flow.lock.steps) if flow.lock else {}
    steps[step] = StepLock.from_spec(spec, platforms)
    lock = Lock(flow=flow.name, file=flow.path.name, steps=dict(sorted(steps.items())))
    write_lock(lock, flow.lock_file)
    flow.lock = lock
    return lock
