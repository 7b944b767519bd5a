"""`run --with batch` (and step-level ``@batch``) with repro's environment: what the host stages.

Before any Batch job is submitted, the runtime (``bridge.prepare``) pushes to the run's S3 store
everything a fresh container needs to make each step's environment from the store alone, every
object content-addressed:

* ``pythons/<sha256>.tar.gz`` (+ ``.json``): the interpreter snapshot (``interpreter_snapshot.pack``, the
  same tarball a pushed run names), restored at the same prefix;
* ``tools/uv/<sha256>/uv``: the uv binary the host builds with;
* ``packages/sha256/..``: the env's package files (the same keys a pushed run uses);
* ``bootstrap/<sha256>.json``: the manifest naming all of the above by key and sha256, plus the
  env's path and the marker the host wrote after its own build (env id + fingerprint).

The job's bootstrap commands (``bootstrap_commands``) run ``batch_bootstrap.py`` with the image's
``python3``: it verifies every object, builds the env offline and writes the marker; the task's own
fingerprint check then proves the container's env equals the host's, which equals the lock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol
from repro.env import interpreter_snapshot, pythons
from repro.env.build import BuiltEnv
from repro.env.cache import sha256_file
from repro.env.uvtool import uv_bin
from repro.errors import BadInput, InfraError
from repro.model.lock import PlatformLock
from repro.settings import Settings
from repro.store import layout, open_store
from repro.store.base import Store

BOOTSTRAP_PREFIX = "bootstrap/"
MANIFEST_FORMAT = 1


def runs_on_batch(args) -> bool:
    """Whether Metaflow `run` options send every step to AWS Batch (``--with batch[:...]``)."""
    args = list(args)
    return any(
        a == "--with" and i + 1 < len(args) and args[i + 1].split(":")[0] == "batch" for i, a in enumerate(args)
    ) or any(a.split(":")[0] == "--with=batch" for a in args)


def uv_key(sha256: str) -> str:
    return f"tools/uv/{sha256}/uv"


def manifest_key(sha256: str) -> str:
    return f"{BOOTSTRAP_PREFIX}{sha256}.json"


def batch_store(settings: Settings, flow: str) -> Store:
    """The run's store, which must be S3: a Batch container can reach nothing else."""
    if not settings.store.startswith("s3://"):
        raise BadInput(
            f"flow {flow}: `--with batch` needs an S3 store (the containers fetch every environment from it), "
            f"but the store is {settings.store}: set REPRO_STORE=s3://bucket/prefix",
            flow=flow,
        )
    return open_store(settings.store)


@dataclass(frozen=True)
class Staged:
    store: str  # s3://bucket/prefix
    manifest_sha256: str


def _put_missing(store: Store, key: str, path: Path, sha256: str) -> None:
    """Upload unless the key is there with the right size. A content-addressed key is never
    rewritten (the Store contract); whoever uses the bytes verifies them (batch_bootstrap.py does,
    naming the object), so staging costs one HEAD per object, not a download."""
    info = store.stat(key)
    if info is not None and info.size == path.stat().st_size:
        return
    store.put_file(key, path, sha256=sha256)


def stage(
    flow: str, built: dict[str, BuiltEnv | None], locks: dict[str, PlatformLock], settings: Settings, log
) -> dict[str, Staged]:
    """Push what each env's containers need; returns {env id: where its manifest is}."""
    store = batch_store(settings, flow)
    from repro.env.cache import PackageCache

    cache = PackageCache(settings.home.packages)
    uv = Path(uv_bin())
    uv_sha = sha256_file(uv)
    _put_missing(store, uv_key(uv_sha), uv, uv_sha)
    out: dict[str, Staged] = {}
    for env in {e.env_id: e for e in built.values() if e is not None}.values():
        lock = locks[env.env_id]
        marker = json.loads((env.path / protocol.ENV_MARKER).read_text())
        interp = pythons.probe(env.interpreter)
        if interp is None:
            raise InfraError(f"flow {flow}: env {env.env_id[:12]}: its interpreter {env.interpreter} no longer runs")
        snap, tarball = interpreter_snapshot.pack(interp, settings.home, log=log)
        _put_missing(store, layout.python_snapshot(snap.sha256), tarball, snap.sha256)
        store.put_bytes(layout.python_manifest(snap.sha256), snap.to_json().encode())
        packages = []
        for p in lock.packages:
            key = layout.package(p.sha256, p.file)
            _put_missing(store, key, cache.path(p), p.sha256)
            # at the path it has in the host's cache: uv records the file's URL in the env (direct_url.json,
            # listed in RECORD), so the same path gives the same RECORD, and so the same fingerprint
            path = cache.path(p)
            packages.append(
                {
                    "name": p.name,
                    "path": str(path),
                    "url": path.as_uri(),
                    "sha256": p.sha256,
                    "key": key,
                }
            )
        manifest = {
            "format": MANIFEST_FORMAT,
            "env_id": env.env_id,
            "env_path": str(env.path),
            "marker_name": protocol.ENV_MARKER,
            "marker": {
                protocol.MARKER_ENV_ID: env.env_id,
                "platform": marker.get("platform"),
                "python": marker.get("python"),
                "interpreter": snap.interpreter_path,
                protocol.MARKER_FINGERPRINT: marker[protocol.MARKER_FINGERPRINT],
            },
            "interpreter": {**snap.to_dict(), "key": layout.python_snapshot(snap.sha256)},
            "uv": {"key": uv_key(uv_sha), "sha256": uv_sha},
            "packages": packages,
        }
        data = json.dumps(manifest, sort_keys=True).encode()
        sha = hashlib.sha256(data).hexdigest()
        if not store.exists(manifest_key(sha)):
            store.put_bytes(manifest_key(sha), data)
        log(f"staged env {env.env_id[:12]} for Batch in {store.uri} ({len(packages)} packages)")
        out[env.env_id] = Staged(store.uri, sha)
    return out
