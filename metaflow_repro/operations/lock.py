"""Lock a flow: resolve every step's environment and write ``<flow>.repro.lock``, check a lock
against its flow without writing, take one step's lock from a conda-lock file, and export a lock in
other tools' formats (PEP 751 pylock, conda-lock).

Each piece is its own function so the command line can report one before the next starts: a
failure half-way leaves what was already done on the screen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.env import condalock
from metaflow_repro.env.engine import (
    Flow,
    LockResult,
    import_conda_lock,
    lock_flow,
    open_flow,
    relock_command,
    spec_drift,
    target_platforms,
    uninstalled_pythons,
)
from metaflow_repro.errors import BadInput
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model.export import to_pylock
from metaflow_repro.model.findings import Finding

__all__ = ["check", "check_options", "export_conda_lock", "export_pylock", "import_conda_lock", "lock", "open_for_lock"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class LockCheck:
    """What ``repro lock --check`` found: the differences between the lock and its flow (none: up to
    date) and the command that would bring the lock up to date."""

    drift: list[Finding]
    relock: str


def check_options(check: bool, remove_platform: list[str] | None, from_conda_lock: str | None, step: str | None):
    """Refuse combinations of options that cannot mean anything, before any flow is opened."""
    if check and remove_platform:
        raise BadInput("--check does not write the lock, so --remove-platform has nothing to do with it")
    if bool(from_conda_lock) != bool(step):
        raise BadInput("--from FILE and --step STEP go together: the conda-lock file becomes that step's lock")


def open_for_lock(path: Path, configs: list[str], log: Log) -> Flow:
    """Open a flow file with Metaflow's config options; warn (through ``log``) about each Python the
    flow asks for that is not installed here."""
    flow = open_flow(path, metaflow_args=configs)
    for warning in uninstalled_pythons(flow):
        log(f"repro: warning: {warning}")
    return flow


def check(flow: Flow, path: Path, platforms: list[str] | None) -> LockCheck:
    drift = spec_drift(flow, target_platforms(flow, platforms))
    return LockCheck(drift, relock_command(str(path), drift) if drift else "")


def lock(flow: Flow, platforms: list[str] | None, remove: list[str] | None, log: Log) -> LockResult:
    return lock_flow(flow, platforms=platforms, remove=remove, log=log)


def export_conda_lock(result: LockResult, flow: Flow, path: Path, outdir: Path) -> list[Path]:
    """One ``<flow>-<step>.conda-lock.yml`` per conda env of the lock."""
    return condalock.export(result.lock.steps, flow.name, path.name, outdir)


def export_pylock(result: LockResult, flow: Flow, path: Path, outdir: Path) -> Iterator[Path]:
    """A PEP 751 ``pylock.<flow>-<step>-<platform>.toml`` per PyPI env of the lock (conda envs have
    their own export); yields each file once written."""
    outdir.mkdir(parents=True, exist_ok=True)
    for step, sl in result.lock.steps.items():
        for pname, pl in sl.platforms.items():
            if pl.is_conda:
                continue
            target = outdir / f"pylock.{path.stem}-{step}-{pname}.toml".replace("_", "-")
            atomic_write(target, to_pylock(pl, flow.name, step))
            yield target
