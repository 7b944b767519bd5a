"""`repro store gc` knows what container and Batch work put in a store: interpreter snapshots
(`pythons/`, named by records), uv binaries (`tools/uv/`), bootstrap scripts (`tools/bootstrap/`) and
bootstrap manifests (`bootstrap/`, named
by nothing but naming an env of a kept record). Kept records keep theirs; orphans past the grace
period go; a manifest that is not what its key says protects nothing; nothing else is deleted."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from metaflow_repro.model.interpreter import InterpreterSnapshot
from metaflow_repro.operations.gc import gc
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.snapshot import push, verify
from tests.store_fakes import age, fake_run


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(root: Path, key: str, data: bytes) -> str:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return key


def _snapshot(home: Path, tag: str) -> InterpreterSnapshot:
    data = f"interpreter tarball {tag}\n".encode() * 20
    snap = InterpreterSnapshot(
        sha256=_sha(data),
        size=len(data),
        python="3.11.7",
        prefix="/root/.pyenv/versions/3.11.7",
        executable="bin/python3.11",
        fingerprint="f" * 64,
    )
    (home / "pythons").mkdir(parents=True, exist_ok=True)
    (home / "pythons" / f"{snap.sha256}.tar.gz").write_bytes(data)
    return snap


def _stage(root: Path, env_id: str, tag: str, packages: list[str]) -> dict[str, str]:
    """What batch.stage puts in the store for one env: uv, an interpreter snapshot + manifest, and
    the bootstrap manifest naming them (and the env's package keys)."""
    uv = f"uv binary {tag}".encode()
    uv_key = _put(root, f"tools/uv/{_sha(uv)}/uv", uv)
    script = f"bootstrap script {tag}".encode()
    script_key = _put(root, f"tools/bootstrap/{_sha(script)}/batch_bootstrap.py", script)
    tarball = f"batch interpreter {tag}".encode()
    py_key = _put(root, layout.python_snapshot(_sha(tarball)), tarball)
    py_manifest = _put(root, layout.python_manifest(_sha(tarball)), b'{"python": "3.11.7"}')
    manifest = json.dumps(
        {
            "format": 1,
            "env_id": env_id,
            "uv": {"key": uv_key, "sha256": _sha(uv)},
            "script": {"key": script_key, "sha256": _sha(script)},
            "interpreter": {"key": py_key, "sha256": _sha(tarball)},
            "packages": [{"key": k} for k in packages],
        },
        sort_keys=True,
    ).encode()
    return {
        "uv": uv_key,
        "script": script_key,
        "python": py_key,
        "python_manifest": py_manifest,
        "manifest": _put(root, f"bootstrap/{_sha(manifest)}.json", manifest),
    }


def test_gc_keeps_what_kept_records_use_on_batch_and_collects_batch_orphans(tmp_path):
    home, root = tmp_path / "home", tmp_path / "store"
    store = LocalStore(str(root))
    run = fake_run(home)
    record = replace(run.record, interpreters={"3.11.7": _snapshot(home, "kept")})
    push(record, store, run.settings)
    env_id = next(iter(record.envs))
    package_keys = [layout.package(p.sha256, p.file) for p in run.packages]
    kept = _stage(root, env_id, "kept", package_keys)  # staged for the kept run's env
    orphan = _stage(root, "9" * 64, "orphan", [])  # staged for an env no record has (a run never recorded)
    # a manifest whose bytes are not what its key says, claiming the kept env: it protects nothing
    forged_uv = _put(root, f"tools/uv/{'a' * 64}/uv", b"forged uv")
    forged_body = json.dumps(
        {
            "env_id": env_id,
            "uv": {"key": forged_uv},
            "interpreter": {"key": orphan["python"], "sha256": orphan["python"][8:72]},
            "packages": [],
        }
    )
    forged = _put(root, f"bootstrap/{'b' * 64}.json", forged_body.encode())
    elsewhere = _put(root, "notes/readme.txt", b"not an object gc knows")
    young = _stage(root, "8" * 64, "young", [])  # an orphan inside the grace period (a run in progress)
    for path in root.rglob("*"):
        if path.is_file() and not any(str(path).endswith(k) for k in young.values()):
            age(path)

    removed = set(gc(store, grace_seconds=3600))

    assert removed == {*orphan.values(), forged, forged_uv}, sorted(removed)
    for key in [*kept.values(), *young.values(), elsewhere]:
        assert (root / key).is_file(), key
    assert verify(record, store) == []  # the record's own objects, its interpreter snapshot included
    assert (root / layout.python_snapshot(record.interpreters["3.11.7"].sha256)).is_file()
    assert (root / layout.latest(layout.flow_dir(record.flow, record.identity))).is_file()


def _staged_env(tmp_path: Path, s3_bucket: str):
    """A real `stage` of one env (this machine's Python 3.11.7, fake_run's package files) into a moto S3
    store, with the env's folder and marker as the host's build leaves them."""
    import sys

    from metaflow_extensions.repro.plugins import protocol
    from metaflow_repro.env.build import BuiltEnv
    from metaflow_repro.executors.batch import stage
    from metaflow_repro.settings import load_settings

    home = tmp_path / "home"
    run = fake_run(home)
    settings = load_settings(home, environ={"REPRO_HOME": str(home), "REPRO_STORE": f"s3://{s3_bucket}/store"})
    env_id, lock = next(iter(run.record.envs.items()))
    folder = tmp_path / "env"
    folder.mkdir()
    marker = {"fingerprint": {"digest": "d" * 64}, "platform": lock.platform, "python": lock.python}
    (folder / protocol.ENV_MARKER).write_text(json.dumps(marker))
    built = BuiltEnv(env_id, lock.platform, folder, folder / "bin" / "python", sys._base_executable, {})
    staged, lease = stage("FakeFlow", {"start": built}, {env_id: lock}, settings, log=lambda m: None)
    return settings, staged[env_id], lease


def test_gc_keeps_every_object_batch_staging_holds_a_lease_on_until_the_run_releases_it(s3_bucket, tmp_path):
    """Objects staged long ago (by a run that failed and never got recorded) are orphans to gc: a run
    that stages them again needs them until its last job fetched them. Grace 0 here: only the lease
    stands between them and gc."""
    from metaflow_repro.store import open_store
    from metaflow_repro.store.layout import LEASES as LEASE_PREFIX
    from metaflow_repro.store.layout import MARKER

    settings, staged, lease = _staged_env(tmp_path, s3_bucket)
    try:
        store = open_store(settings.store)
        objects = {o.key for o in store.list("") if not o.key.startswith(LEASE_PREFIX)}
        kinds = {k.split("/")[0] if not k.startswith("tools/") else "/".join(k.split("/")[:2]) for k in objects}
        assert kinds == {"bootstrap", "tools/uv", "tools/bootstrap", "pythons", "packages"}, sorted(objects)
        assert set(lease.keys) == objects  # every staged key, the manifest and the script included

        assert gc(store, grace_seconds=0) == []  # a store by its layout (every key of store shape): marked now
        assert {o.key for o in store.list("") if not o.key.startswith(LEASE_PREFIX)} == objects | {MARKER}
    finally:
        lease.release()
    assert not [o for o in store.list(LEASE_PREFIX)]  # released: deleted, not left to expire
    assert set(gc(store, grace_seconds=0)) == objects  # no record names them: now they are orphans


def test_a_held_lease_is_renewed_until_released(tmp_path):
    import time

    from metaflow_repro.store.layout import LEASES as LEASE_PREFIX
    from metaflow_repro.store.snapshot import HeldLease

    store = LocalStore(str(tmp_path / "store"))
    lease = HeldLease(store, "batch staging of flow F", ["tools/uv/x/uv"], renew_seconds=0.05)
    first = json.loads(store.get_bytes(lease.key))["time"]
    time.sleep(0.3)
    assert json.loads(store.get_bytes(lease.key))["time"] > first  # a Batch run may outlast one lease period
    lease.release()
    lease.release()  # idempotent (atexit may call it after the run did)
    assert list(store.list(LEASE_PREFIX)) == []


def test_a_jobs_command_fetches_the_staged_bootstrap_script_and_refuses_other_bytes(s3_bucket, tmp_path, monkeypatch):
    """The job's command (as Metaflow wraps it) runs the inline fetcher, which runs the staged
    batch_bootstrap.py only if its bytes are the ones its sha256 names."""
    import shlex
    import subprocess
    from types import SimpleNamespace

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins import protocol
    from metaflow_extensions.repro.plugins.environment import CondaEnvironment, bootstrap_script_sha256
    from metaflow_repro.store import open_store
    from metaflow_repro.store.layout import bootstrap_script as script_key

    settings, staged, lease = _staged_env(tmp_path, s3_bucket)
    lease.release()
    for name in protocol.TASK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(protocol.BOOTSTRAP_STORE_VAR, staged.store)
    monkeypatch.setenv(protocol.BOOTSTRAP_MANIFEST_VAR, "0" * 64)  # no such manifest: the bootstrap says so
    command = " && ".join(CondaEnvironment.bootstrap_commands(SimpleNamespace(), "start", "s3"))

    def job():
        argv = shlex.split('bash -c "%s"' % command)  # as Metaflow's batch.py builds the job's command
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    ran = job()  # the staged script ran: it is what looked for the manifest
    assert ran.returncode == 3 and f"cannot fetch store object bootstrap/{'0' * 64}.json" in ran.stderr, ran.stderr
    store = open_store(settings.store)
    store.put_bytes(script_key(bootstrap_script_sha256()), b"import os; os.system('echo pwned')\n")
    refused = job()
    assert refused.returncode == 3 and "does not match its sha256" in refused.stderr, refused.stderr
    assert "pwned" not in refused.stdout


def test_a_jobs_fetcher_runs_the_script_the_instance_cache_keeps_only_if_it_is_the_named_one(
    s3_bucket, tmp_path, monkeypatch
):
    """With an instance cache, the fetcher keeps the script it verified there and later jobs run it without
    the store; cached bytes that are not the named ones are never run: fetched again from the store."""
    import shlex
    import subprocess
    from types import SimpleNamespace

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins import protocol
    from metaflow_extensions.repro.plugins.environment import CondaEnvironment, bootstrap_script_sha256
    from metaflow_repro.store import open_store
    from metaflow_repro.store.layout import bootstrap_script as script_key

    settings, staged, lease = _staged_env(tmp_path, s3_bucket)
    lease.release()
    for name in protocol.TASK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "instance-cache"
    monkeypatch.setenv(protocol.BOOTSTRAP_STORE_VAR, staged.store)
    monkeypatch.setenv(protocol.BOOTSTRAP_MANIFEST_VAR, "0" * 64)  # no such manifest: the script says so
    monkeypatch.setenv(protocol.BATCH_CACHE_VAR, str(cache))
    command = " && ".join(CondaEnvironment.bootstrap_commands(SimpleNamespace(), "start", "s3"))
    assert "export PYTHONDONTWRITEBYTECODE=1" in command  # tasks write nothing into the shared envs

    def job():
        return subprocess.run(shlex.split('bash -c "%s"' % command), capture_output=True, text=True, timeout=120)

    ran_the_script = f"cannot fetch store object bootstrap/{'0' * 64}.json"
    first = job()
    assert first.returncode == 3 and ran_the_script in first.stderr, first.stderr
    kept = cache / "scripts" / f"{bootstrap_script_sha256()}.py"
    assert kept.read_bytes() == Path(protocol.__file__).with_name("batch_bootstrap.py").read_bytes()
    store = open_store(settings.store)
    store.delete(script_key(bootstrap_script_sha256()))  # the store no longer has it: the cache's is run
    second = job()
    assert second.returncode == 3 and ran_the_script in second.stderr, second.stderr
    kept.write_text("import os; os.system('echo pwned')\n")  # other bytes in the cache: never run
    third = job()
    assert third.returncode == 3 and "cannot fetch store object tools/bootstrap/" in third.stderr, third.stderr
    assert "pwned" not in third.stdout
