"""`repro store gc` knows what container and Batch work put in a store: interpreter snapshots
(`pythons/`, named by records), uv binaries (`tools/uv/`) and bootstrap manifests (`bootstrap/`, named
by nothing but naming an env of a kept record). Kept records keep theirs; orphans past the grace
period go; a manifest that is not what its key says protects nothing; nothing else is deleted."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from repro.model.interpreter import InterpreterSnapshot
from repro.store import LocalStore, layout
from repro.store.snapshot import gc, push, verify
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
    tarball = f"batch interpreter {tag}".encode()
    py_key = _put(root, layout.python_snapshot(_sha(tarball)), tarball)
    py_manifest = _put(root, layout.python_manifest(_sha(tarball)), b'{"python": "3.11.7"}')
    manifest = json.dumps(
        {
            "format": 1,
            "env_id": env_id,
            "uv": {"key": uv_key, "sha256": _sha(uv)},
            "interpreter": {"key": py_key, "sha256": _sha(tarball)},
            "packages": [{"key": k} for k in packages],
        },
        sort_keys=True,
    ).encode()
    return {
        "uv": uv_key,
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
