"""Step environments of a flow: the state of each step's environment on this machine (locked,
built, still matching its lock) and building them.

``repro env show`` asks the state: one interpreter start-up per built environment (not per step)
re-fingerprints it against its lock, unless the caller says not to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.env import fingerprint
from metaflow_repro.env.build import BuiltEnv, Refetch
from metaflow_repro.env.cache import PackageCache
from metaflow_repro.env.engine import Flow, build_flow, environments, open_flow
from metaflow_repro.errors import BadInput, IntegrityError
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.lock import Package, PlatformLock
from metaflow_repro.model.spec import EnvSpec
from metaflow_repro.settings import Settings
from metaflow_repro.store import Store, layout
from metaflow_repro.store.snapshot import StoreObjectCorrupt

Log = Callable[[str], None]


@dataclass(frozen=True)
class StepState:
    """One step's environment here. ``state``: disabled, not locked, lock stale, built or not built;
    ``locked``: this platform's lock when the lock is current for the step; ``problems``: how the built
    environment differs from its lock now (None: not built, or not checked)."""

    step: str
    spec: EnvSpec
    state: str
    locked: PlatformLock | None = None
    problems: list[str] | None = None


def open_steps(path: Path, steps: list[str] | None) -> Flow:
    """Open a flow file; every step asked for must be one of its steps."""
    flow = open_flow(path)
    unknown = [s for s in steps or [] if s not in flow.specs]
    if unknown:
        raise BadInput(
            f"{path}: no step named {', '.join(unknown)} in flow {flow.name} (steps: {', '.join(flow.specs)})"
        )
    return flow


def step_states(flow: Flow, check_fingerprint: bool = True, steps: list[str] | None = None) -> list[StepState]:
    local = plats.local_platform_name()
    envs = environments(flow.settings)
    problems_of: dict[str, list[str]] = {}  # env id -> runtime problems (one probe per env, not per step)
    out = []
    for step, spec in flow.specs.items():
        if steps and step not in steps:
            continue
        if spec.disabled:
            out.append(StepState(step, spec, "disabled"))
            continue
        sl = flow.lock.steps.get(step) if flow.lock else None
        pl = sl.platforms.get(local) if sl and sl.spec_id == spec.spec_id else None
        if pl is None:
            out.append(StepState(step, spec, "not locked" if sl is None else "lock stale"))
            continue
        built = envs.get(pl.env_id)
        problems = None
        if built and check_fingerprint:
            if pl.env_id not in problems_of:  # what the interpreter sees, and every file against the build's list
                problems_of[pl.env_id] = list(
                    dict.fromkeys(fingerprint.runtime_problems(built, pl) + envs.damage(built, pl))
                )
            problems = problems_of[pl.env_id]
        out.append(StepState(step, spec, "built" if built else "not built", pl, problems))
    return out


def build(
    path: Path, steps: list[str] | None, offline: bool, repair: bool, log: Log
) -> tuple[Flow, dict[str, BuiltEnv | None]]:
    """Build (or reuse) each step's environment of one flow file; disabled steps map to None. Offline
    (``--offline`` or the flow's ``REPRO_OFFLINE``): from the lock as it is and the package cache only."""
    flow = open_flow(path)
    offline = offline or flow.settings.offline
    return flow, build_flow(flow, steps=steps, offline=offline, log=log, repair=repair)


def refetch_from(store: Store, settings: Settings, log: Log) -> Refetch:
    """A replay's second source of package files (``Environments.build(refetch=...)``): the store's copy of
    one the package cache lost or holds damaged (bit rot under a kept stamp is only seen when uv's hash
    check fails), verified into the cache, so an offline rebuild goes on instead of stopping."""
    cache = PackageCache(settings.home.packages)

    def refetch(pkg: Package, where: str) -> None:
        key = layout.package(pkg.sha256, pkg.file)
        log(f"{where}: {pkg.file} is damaged or gone in the package cache: fetching it again from {store.uri}/{key}")
        try:
            cache.admit(pkg, lambda path: store.get_file(key, path), where=f"{store.uri}/{key}")
        except IntegrityError as exc:
            raise StoreObjectCorrupt(
                f"store object {store.uri}/{key} is corrupt: {exc.detail} `repro store verify` lists every damaged "
                "object.",
                library=pkg.name,
                path=f"{store.uri}/{key}",
            ) from None

    return refetch
