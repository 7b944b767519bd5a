"""`repro run` and `repro replay`: run, record, snapshot; and rebuild, run again, compare."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from repro.runs import blobs as blobstore
from repro.runs import pickles
from repro.env import pythons
from repro.runs import metaflow as runs
from repro.runs.compare import Comparison, compare
from repro.settings import Settings, load_settings
from repro.env.engine import environments, open_flow
from repro.errors import BadInput, InfraError, ReproError
from repro.model.record import RunRecord, RunStatus
from repro.store.snapshot import fetch_artifact, load_record, local_record_path, parse_ref, pull, push, save_local
from repro.store import Store, open_store

DEFAULT_ARTIFACT_MAX_BYTES = 16 << 20
UNROUTABLE_INDEX = "http://127.0.0.1:9/simple"  # proves a replay never needs a package index


def artifact_max_bytes(settings: Settings) -> int:
    raw = os.environ.get("REPRO_ARTIFACT_MAX_BYTES") or settings.raw.get("artifact-max-bytes")
    try:
        return int(raw) if raw is not None else DEFAULT_ARTIFACT_MAX_BYTES
    except ValueError:
        raise BadInput(f"artifact-max-bytes must be a number of bytes, got {raw!r}") from None


def env_pythons(record: RunRecord, settings: Settings) -> dict[str, str]:
    envs = environments(settings)
    out = {"disabled": sys.executable}
    for env_id in record.envs:
        built = envs.get(env_id)
        if built is not None:
            out[env_id] = str(built.python)
    return out


def _user_blobs(record: RunRecord) -> set[str]:
    return {a.sha1 for s in record.steps.values() for t in s.tasks.values()
            for n, a in t.artifacts.items() if not pickles.is_internal(n)}


def finish_record(record: RunRecord, flow, settings: Settings, code_dir: Path | None) -> tuple[RunRecord, dict]:
    """Add pickle checks and mark which artifact blobs get a copy in the store."""
    wanted = _user_blobs(record)
    data = blobstore.load(record.flow, record.datastore["type"], record.datastore["root"], wanted) if wanted else {}
    checks = pickles.check(record, flow.decl.graph, data, env_pythons(record, settings),
                           sys_path=[str(code_dir)] if code_dir else [])
    limit = artifact_max_bytes(settings)
    keep = {sha: blob for sha, blob in data.items() if len(blob) <= limit}
    steps = {}
    for name, s in record.steps.items():
        tasks = {k: replace(t, artifacts={n: replace(a, stored=a.sha1 in keep) for n, a in t.artifacts.items()})
                 for k, t in s.tasks.items()}
        steps[name] = replace(s, tasks=tasks)
    return replace(record, steps=steps, pickle_checks=checks), keep


def code_dir(settings: Settings, code_sha: str) -> Path | None:
    folder = settings.home / "code" / code_sha[:32]
    return folder if folder.is_dir() else None


def record_run(flow_file: Path, store_uri: str | None, args: list[str], log) -> tuple[int, RunRecord | None]:
    flow = open_flow(flow_file)
    settings = flow.settings
    store = open_store(store_uri or settings.store)
    code, run_id, elapsed, _ = runs.run_flow(flow.path, runs.environment_name(flow), args)
    if run_id is None:
        log(f"repro: {flow.path.name} did not start a run (exit code {code}); nothing recorded")
        return (code if code in (2, 3) else 2), None
    flow = open_flow(flow_file)  # the run may have re-locked
    raw = runs.inspect(flow.name, run_id, flow.decl.parameters)
    record = runs.build_record(flow, flow.lock, run_id, raw, elapsed)
    if record.status != RunStatus.SUCCESS:
        log(f"repro: run {record.ref} failed; it is not pushed to the store")
        return 1, record
    record, keep = finish_record(record, flow, settings, code_dir(settings, record.code_sha256))
    saved = save_local(record, settings)
    try:
        push(record, store, settings, keep, log=log)
    except ReproError as exc:
        raise type(exc)(f"{exc}\nThe run is recorded in {saved}, but its push to {store.uri} did not finish "
                        f"and the store shows no record of it. Complete it with: repro store push {saved}") from None
    return 0, record


def push_saved(path_or_ref: str, store_uri: str | None, settings: Settings, log) -> RunRecord:
    """Push a record kept in REPRO_HOME (after a push that failed); artifact copies come from the datastore."""
    ref = parse_ref(path_or_ref)
    if ref.path is None:
        ref = parse_ref(str(local_record_path(settings, ref.flow, ref.run_id)))
    record = load_record(None, ref)
    store = open_store(store_uri or settings.store)
    keep = blobstore.load(record.flow, record.datastore["type"], record.datastore["root"],
                          record.artifact_shas(stored_only=True)) if record.artifact_shas() else {}
    push(record, store, settings, keep, log=log)
    return record


@dataclass(frozen=True)
class ReplayResult:
    original: RunRecord
    replayed: RunRecord | None
    comparison: Comparison | None
    workdir: Path
    exit_code: int


def replay(ref_text: str, store_uri: str | None, settings: Settings, on: str = "local", log=print) -> ReplayResult:
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
    parent = settings.home / "replays" / original.flow
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{original.run_id}-{time.strftime('%Y%m%dT%H%M%S')}-", dir=parent))
    code = workdir / "code"
    code.mkdir()
    with tarfile.open(settings.home / "code" / f"{original.code_sha256}.tar.gz") as tar:
        if hasattr(tarfile, "data_filter"):  # refuses absolute paths, links out of the folder, devices
            tar.extractall(code, filter="data")
        else:  # Python < 3.10.12 has no filters: check the members ourselves
            for member in tar.getmembers():
                target = (code / member.name).resolve()
                if not (member.isfile() or member.isdir()) or not str(target).startswith(str(code.resolve())):
                    raise InfraError(f"code package of {original.ref}: refusing unsafe member {member.name!r}")
            tar.extractall(code)
    flow_file = code / original.flow_file
    env = {
        "REPRO_FROZEN": "1", "REPRO_OFFLINE": "1", "UV_OFFLINE": "1", "REPRO_INDEX_URL": UNROUTABLE_INDEX,
        "REPRO_PYTHONHASHSEED": original.pythonhashseed or "0", "REPRO_HOME": str(settings.home),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(workdir), "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    if original.settings.get("conda_source"):
        env["REPRO_CONDA_SOURCE"] = original.settings["conda_source"]
    flow = open_flow(flow_file, load_settings(flow_file, environ={**os.environ, **env}))
    args = []
    for name, value in original.parameters.items():
        if value is None:
            continue  # the parameter had no value: let its default apply again
        args += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
    code_rc, run_id, elapsed, _ = runs.run_flow(flow_file, runs.environment_name(flow), args, env=env)
    if run_id is None:
        raise InfraError(f"replay of {original.ref} did not start (exit code {code_rc}); see the output above")
    raw = runs.inspect(flow.name, run_id, flow.decl.parameters, env=env)
    replayed = runs.build_record(flow, flow.lock, run_id, raw, elapsed)
    mismatched = [e for e in original.envs if e not in replayed.envs]
    if mismatched:
        raise InfraError(f"replay of {original.ref} did not use the recorded environments {mismatched}")
    comparison = compare_runs(original, replayed, store, settings)
    rc = 0 if comparison.same and replayed.status == RunStatus.SUCCESS else 1
    return ReplayResult(original, replayed, comparison, workdir, rc)


def blob_source(record: RunRecord, store: Store | None):
    """Where a record's artifact blobs can be read: the store's copies, else the run's datastore."""
    cache: dict[str, bytes] = {}

    def get(sha1: str):
        if sha1 in cache:
            return cache[sha1]
        data = fetch_artifact(store, sha1) if store is not None else None
        if data is None and record.datastore.get("root"):
            root = record.datastore["root"]
            if record.datastore.get("type") != "local" or Path(root).exists():
                try:
                    data = blobstore.load(record.flow, record.datastore["type"], root, [sha1]).get(sha1)
                except Exception:  # noqa: BLE001 - unavailable datastore: hashes only
                    data = None
        cache[sha1] = data
        return data

    return get


def compare_runs(a: RunRecord, b: RunRecord, store: Store | None, settings: Settings) -> Comparison:
    code = code_dir(settings, b.code_sha256) or code_dir(settings, a.code_sha256)
    return compare(a, b, blob_source(a, store), blob_source(b, store), env_pythons(b, settings),
                   sys_path=[str(code)] if code else [])


def cleanup(result: ReplayResult) -> None:
    shutil.rmtree(result.workdir, ignore_errors=True)
