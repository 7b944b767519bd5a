"""`repro replay`: rebuild a recorded run from the store alone, run it again through the same
pipeline as any run, and compare the results with the record."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol

from repro.env import pythons
from repro.env.engine import environments
from repro.env.flowfile import load_flow
from repro.paths import inside
from repro.errors import BadInput, InfraError
from repro.model.record import RunRecord
from repro.runs.compare import Comparison
from repro.runs.pipeline import Log, RunOptions, run_and_record
from repro.settings import Settings, environ_for, load_settings
from repro.store import Store, open_store
from repro.store.snapshot import load_record, parse_ref, pull

UNROUTABLE_INDEX = "http://127.0.0.1:9/simple"  # proves a replay never needs a package index


@dataclass(frozen=True)
class ReplayResult:
    original: RunRecord
    replayed: RunRecord
    comparison: Comparison
    workdir: Path
    exit_code: int


def replay(ref_text: str, store_uri: str | None, settings: Settings, on: str = "local", log: Log = print,
           keep: bool = False) -> ReplayResult:
    """Replay and compare; the working folder (code, datastore) is removed after the verdict unless ``keep``."""
    workdirs: list[Path] = []
    try:
        return _replay(ref_text, store_uri, settings, on, log, workdirs)
    finally:
        for workdir in workdirs:
            if keep:
                log(f"replay working folder kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def _replay(ref_text: str, store_uri: str | None, settings: Settings, on: str, log: Log,
            workdirs: list[Path]) -> ReplayResult:
    if on != "local":
        raise BadInput(f"--on {on}: only local replays are available in this version")
    store: Store = open_store(store_uri or settings.store)
    original = load_record(store, parse_ref(ref_text))
    log(f"replaying {original.ref} from {store.uri}")
    # 1. everything the record names, verified, before anything runs
    locks = pull(original, store, settings)
    # 2. every environment, offline, from the stored package files only
    envs = environments(settings)
    for env_id, pl in locks.items():
        if envs.get(env_id) is None:
            log(f"rebuilding env {env_id[:12]} offline (Python {pl.python}, {len(pl.packages)} packages)")
            envs.build(pl, pythons.find(pl.python, where=f"{original.ref} env {env_id[:12]}"), offline=True,
                       where=f"replay of {original.ref}")
    # 3. the recorded code, with the recorded parameters and hash seed
    workdir = _workdir(settings, original)
    workdirs.append(workdir)
    code = _extract_code(settings.home.code_package(original.code_sha256), workdir / "code", original)
    flow_file = inside(code, original.flow_file, f"{original.ref}: flow_file")  # never a file outside the package
    if not flow_file.is_file():
        raise BadInput(f"{original.ref}: flow_file {original.flow_file!r} is not in its code package "
                       f"(sha256 {original.code_sha256}); the record is corrupt")
    declared = load_flow(flow_file).parameters
    env = {
        **environ_for(frozen=True, offline=True, index_url=UNROUTABLE_INDEX, home=settings.home,
                      pythonhashseed=original.pythonhashseed or protocol.DEFAULT_HASH_SEED),
        "UV_OFFLINE": "1",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(workdir), "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    if original.settings.get("conda_source"):
        env.update(environ_for(conda_source=original.settings["conda_source"]))
    options = RunOptions(
        store=store.uri, baseline=original, frozen=True, metaflow_args=tuple(_parameter_args(original, declared)), env=env,
        pickle_checks=False, settings=load_settings(flow_file, environ={**os.environ, **env}))
    outcome = run_and_record(flow_file, options, log=log)
    if outcome.error or outcome.record is None:
        error = InfraError(f"replay of {original.ref} did not run: {outcome.error}")
        error.exit_code = outcome.error_code or error.exit_code
        raise error
    replayed = outcome.record
    mismatched = [e for e in original.envs if e not in replayed.envs]
    if mismatched:
        raise InfraError(f"replay of {original.ref} did not use the recorded environments {mismatched}")
    assert outcome.comparison is not None
    rc = 0 if outcome.comparison.same and replayed.status == "success" else 1
    return ReplayResult(original, replayed, outcome.comparison, workdir, rc)


def _parameter_args(record: RunRecord, declared) -> list[str]:
    """``--name value`` for each recorded parameter; only names the flow declares as Parameters, so a
    record can never smuggle in a Metaflow option (``--run-id-file``, ``--with``...)."""
    unknown = sorted(set(record.parameters) - set(declared))
    if unknown:
        raise BadInput(f"{record.ref}: the record's parameters {', '.join(map(repr, unknown))} are not Parameters of "
                       f"flow {record.flow} (it declares: {', '.join(declared) or 'none'}); the record is corrupt "
                       "or hostile, and nothing was run")
    args = []
    for name, value in record.parameters.items():
        if value is None:
            continue  # the parameter had no value: let its default apply again
        args += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
    return args


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
        raise BadInput(f"code package {package.name} of {original.ref} is unsafe or not a code package: "
                       f"{type(exc).__name__}: {exc}; nothing from it was used") from None
    return code
