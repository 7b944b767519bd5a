"""`run --with batch` (and step-level ``@batch``) with repro's environment: what the host stages.

Before any Batch job is submitted, the runtime (``bridge.prepare``) pushes to the run's S3 store
everything a fresh container needs to make each step's environment from the store alone, every
object content-addressed:

* ``pythons/<sha256>.tar.gz`` (+ ``.json``): the interpreter snapshot (``interpreter_snapshot.pack``, the
  same tarball a pushed run names), restored at the same prefix;
* ``tools/uv/<sha256>/uv``: the uv binary the host builds with;
* ``tools/bootstrap/<sha256>/batch_bootstrap.py``: the script a job runs first (its command carries only
  ``batch_fetch.py``, which fetches and checks it: AWS Batch refuses commands over 8192 characters);
* ``packages/sha256/..``: the env's package files (the same keys a pushed run uses);
* ``bootstrap/<sha256>.json``: the manifest naming all of the above by key and sha256, plus the
  env's path and the marker the host wrote after its own build (env id + fingerprint).

A lease (the kind ``repro push`` takes) names every one of these keys before any is checked or uploaded,
and is held until the run's jobs are over, so ``repro store gc`` never deletes what a job still needs.

The job's bootstrap commands (``bootstrap_commands``) run ``batch_bootstrap.py`` with the image's
``python3``: it verifies every object, builds the env offline and writes the marker; the task's own
fingerprint check then proves the container's env equals the host's, which equals the lock.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from metaflow_extensions.repro.plugins import probe, protocol
from metaflow_repro.env import interpreter_snapshot, pythons
from metaflow_repro.env.build import BuiltEnv
from metaflow_repro.env.cache import sha256_file
from metaflow_repro.env.uvtool import uv_bin
from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.executors.base import ReplayRequest, RunHere
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model.interpreter import GZIP, IMAGE_DIGEST, Executor, ExecutorKind
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.model.record import RunRecord
from metaflow_repro.model.replay import RunResult
from metaflow_repro.model.validate import At, Invalid, load_json
from metaflow_repro.settings import Home, Settings, environ_for
from metaflow_repro.store import layout, open_store
from metaflow_repro.store.base import ObjectInfo, Store, StoreObjectMissing
from metaflow_repro.store.images import read_manifest
from metaflow_repro.store.snapshot import HeldLease, Upload, complete_uploads, upload_one, wait_for_sweeps

MANIFEST_FORMAT = 3  # 2: names batch_bootstrap.py (``script``); 3: lists the files of the interpreter and env


def batch_options(args: Sequence[str]) -> list[tuple[int, int]]:
    """Where Metaflow `run` options send every step to AWS Batch: the ``(start, end)`` slices of ``args``
    that are ``--with batch[:attributes]`` or ``--with=batch[:attributes]``, in order. Pure: the one
    parser of `--with batch` (runs, replay placement)."""
    items = list(args)
    found, i = [], 0
    while i < len(items):
        a = items[i]
        if a == "--with" and i + 1 < len(items):
            if items[i + 1].split(":", 1)[0] == "batch":
                found.append((i, i + 2))
            i += 2  # the decorator spec is the option's value, never an option itself
            continue
        if a.startswith("--with=") and a.split("=", 1)[1].split(":", 1)[0] == "batch":
            found.append((i, i + 1))
        i += 1
    return found


def runs_on_batch(args: Sequence[str]) -> bool:
    """Whether Metaflow `run` options send every step to AWS Batch (``--with batch[:...]``)."""
    return bool(batch_options(args))


class BatchPlace:
    """``--on batch``: the Metaflow runtime runs here and sends every step to AWS Batch (``--with batch``),
    whose jobs make each environment from the S3 store alone (``stage``)."""

    kind = ExecutorKind.BATCH

    def check_args(self, extra_args: Sequence[str], image: str | None, option: str = "--on") -> None:
        if image:
            raise BadInput("--image is for container replays: add --on docker")

    def check(self, store_uri: str, settings: Settings, option: str = "--on") -> None:
        """Batch needs an S3 store and Metaflow's Batch job queue and S3 datastore."""
        scheme = store_uri.split("://", 1)[0] if "://" in store_uri else "file"
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

    def check_record(self, original: RunRecord) -> None:
        """Refuse a run recorded with a datastore other than S3: Batch steps need an S3 datastore, so
        Metaflow's S3 client (boto3) joins every step's spec, and the frozen check of the recorded locks
        (which have none) would fail only after everything was fetched, built and run."""
        kind = original.datastore.get("type") or "unknown"
        if kind != "s3":
            raise BadInput(
                f"{original.ref} was recorded with a {kind!r} Metaflow datastore, so its locked environments have "
                "no S3 client (boto3), which every step on AWS Batch needs: it cannot be replayed with --on batch. "
                "Replay it --on local or --on docker, or record the run with an S3 datastore "
                "(METAFLOW_DEFAULT_DATASTORE=s3, METAFLOW_DATASTORE_SYSROOT_S3) to replay it on Batch",
                flow=original.flow,
            )

    def check_code(self, original: RunRecord, flow_file: Path, where: str) -> None:
        """A step the code sends to Batch runs on Batch, as asked."""

    def place(
        self, run_options: Sequence[str], extra_args: Sequence[str] = (), original: Executor | None = None
    ) -> tuple[list[str], list[str]]:
        """``--with batch`` is added (a recorded ``--with batch:...`` stays, attributes and all, its
        ``image=`` pinned to the image the ``original`` Batch run's jobs ran in: ``pinned``). The user's own
        ``--with batch[:...]`` in ``extra_args`` (after ``--``, appended after these) wins: Metaflow keeps
        the first decorator of a name, so the recorded one is dropped and none is added."""
        items = list(run_options)
        spans = batch_options(items)
        inside_batch = {i for start, end in spans for i in range(start, end)}
        recorded = [a for i, a in enumerate(items) if i in inside_batch]
        if runs_on_batch(extra_args):
            return [a for i, a in enumerate(items) if i not in inside_batch], recorded
        if not recorded:
            return [*items, "--with", "batch"], []
        ran = original if original is not None and original.kind is ExecutorKind.BATCH else None
        return (with_image(items, pinned(ran)) if ran is not None and ran.image else items), []

    def dropped_note(self, dropped: Sequence[str], extra_args: Sequence[str], where: str) -> str:
        return f"replaying on AWS Batch with {' '.join(extra_args)}: dropped the recorded {' '.join(dropped)}"

    def environment(self, original: RunRecord, store_uri: str, env: Mapping[str, str], log) -> dict[str, str]:
        """Every step a Batch job: the datastore is S3 (Metaflow's own settings here), and the runtime
        stages each env in the store before it submits a job (``stage``)."""
        out = {
            k: v for k, v in env.items() if k not in ("METAFLOW_DATASTORE_SYSROOT_LOCAL", "METAFLOW_DEFAULT_DATASTORE")
        }
        if original.executor.kind is ExecutorKind.BATCH and original.executor.image:
            out[IMAGE_VAR] = pinned(original.executor)  # the image it ran in (a `--with batch:image=` still wins)
        return {**out, "METAFLOW_DEFAULT_DATASTORE": "s3", **environ_for(store=store_uri)}

    def executor(self) -> Executor:
        return Executor(ExecutorKind.BATCH, image=os.environ.get("METAFLOW_BATCH_CONTAINER_IMAGE", ""))

    def staged_objects(self, store: Store, envs: set[str]) -> set[str]:
        return batch_objects(store, envs)

    def run(self, request: ReplayRequest, here: RunHere, log) -> RunResult:
        """The runtime runs here; ``--with batch`` (``place``) sends the steps to Batch, in the image the
        original ran in, checked first (``replay_image``), which the replay's record names."""
        return here(replace(request, executor=replay_image(request, log)))


_PLATFORMS: dict[str, str] = {}


def host_volumes_allowed(queue: str | None, log=None) -> bool:
    """Whether the jobs of ``queue`` run on an instance of their own, whose folders they can mount (an EC2
    compute environment), as Metaflow's Batch client tells the platform: by the type of the queue's first
    compute environment (asked once per queue and process). Not on Fargate (a job definition with a host
    volume is refused there); not when the queue cannot be read (``log`` says so; Metaflow's submission
    then says why), and asked again for the next step."""
    if not queue:
        return False
    if queue not in _PLATFORMS:
        from metaflow.plugins.aws.aws_client import get_aws_client

        try:
            client = get_aws_client("batch")
            queues = client.describe_job_queues(jobQueues=[queue])["jobQueues"]
            order = sorted(queues[0]["computeEnvironmentOrder"], key=lambda c: c.get("order", 0))
            found = client.describe_compute_environments(computeEnvironments=[order[0]["computeEnvironment"]])
            _PLATFORMS[queue] = found["computeEnvironments"][0]["computeResources"]["type"]
        except Exception as exc:  # botocore's errors, or an answer without these fields
            if log is not None:
                log(f"Batch queue {queue}: cannot tell its platform ({exc}); this step's job gets no instance cache")
            return False
    return _PLATFORMS[queue] in ("EC2", "SPOT")


#: how the file lists a job checks a cached tree against are made (part of the key they are kept under:
#: a list kept by an older repro is made again). 2: folders are listed too
FILES_FORMAT = 2


def snapshot_files(tarball: Path, sha256: str, home: Home) -> dict[str, list[str]]:
    """What the interpreter snapshot restores, as a job's instance cache checks it (``check_tree``):
    ``{member: [FILE, sha256] | [LINK, target] | [DIR, ""]}``, with every folder a member is in. Read from
    the tarball once and kept beside it (``REPRO_HOME/pythons/<sha256>.files.json``)."""
    from metaflow_extensions.repro.plugins.batch_bootstrap import DIR, FILE, LINK

    kept = home.pythons / f"{sha256}.files.json"
    files = _kept_files(kept, [FILES_FORMAT, sha256])
    if files is not None:
        return files
    files = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.issym():
                files[member.name] = [LINK, member.linkname]
            elif member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                digest = hashlib.sha256()
                for block in iter(functools.partial(data.read, 1 << 20), b""):
                    digest.update(block)
                files[member.name] = [FILE, digest.hexdigest()]
            elif member.isdir():
                files[member.name] = [DIR, ""]
    for name in list(files):  # folders GNU tar makes for members without a member of their own
        parent = name.rpartition("/")[0]
        while parent and parent not in files:
            files[parent] = [DIR, ""]
            parent = parent.rpartition("/")[0]
    atomic_write(kept, json.dumps({"key": [FILES_FORMAT, sha256], "files": files}, sort_keys=True))
    return files


def _kept_files(kept: Path, key) -> dict[str, list[str]] | None:
    """A file list kept under ``key`` (what it was listed from), or None (none, unreadable, another key)."""
    try:
        doc = json.loads(kept.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(doc, dict) and doc.get("key") == key and isinstance(doc.get("files"), dict):
        return doc["files"]
    return None


def env_files(env: Path, home: Home) -> dict[str, list[str]]:
    """What the env built here holds, as a job's instance cache checks its own build of it (the same uv,
    files and path give the same bytes): ``{path: [FILE, sha256] | [LINK, target] | [RECORD, digest] |
    [ANY, ""] | [DIR, ""]}``. Bytecode folders are left out (a job's env has none), the marker too (the job checks it
    against the manifest's); RECORD files by ``probe.record_digest`` and uv's cache file not at all (they
    hold the time uv unpacked the wheel). Kept per env under ``REPRO_HOME/staged/`` while its marker is
    the same file (an env rebuilt here is listed again)."""
    from metaflow_extensions.repro.plugins.batch_bootstrap import ANY, DIR, FILE, INSTALLER_CACHE_FILES, LINK, RECORD

    marker = (env / protocol.ENV_MARKER).stat()
    key = [FILES_FORMAT, str(env), marker.st_mtime_ns, marker.st_size]
    kept = home.staged / f"files-{hashlib.sha256(str(env).encode()).hexdigest()[:32]}.json"
    listed = _kept_files(kept, key)
    if listed is not None:
        return listed
    files: dict[str, list[str]] = {}

    def walk(folder: str, rel: str) -> None:
        for entry in os.scandir(folder):
            name = rel + entry.name
            if entry.is_symlink():
                files[name] = [LINK, os.readlink(entry.path)]
            elif entry.is_dir():
                if entry.name != "__pycache__":
                    files[name] = [DIR, ""]
                    walk(entry.path, name + "/")
            elif not rel and entry.name == protocol.ENV_MARKER:
                continue
            elif rel.endswith(".dist-info/") and entry.name in INSTALLER_CACHE_FILES:
                files[name] = [ANY, ""]
            elif rel.endswith(".dist-info/") and entry.name == "RECORD":
                files[name] = [RECORD, probe.record_digest(Path(entry.path).read_bytes())]
            else:
                files[name] = [FILE, sha256_file(Path(entry.path))]

    walk(str(env), "")
    home.staged.mkdir(parents=True, exist_ok=True)
    atomic_write(kept, json.dumps({"key": key, "files": files}, sort_keys=True))
    return files


@functools.cache
def _uv_version(uv: Path) -> str:
    proc = subprocess.run([str(uv), "--version"], capture_output=True, text=True, timeout=60)
    words = proc.stdout.split()
    return words[1] if proc.returncode == 0 and len(words) > 1 else ""


def _env_files_if_same_uv(env: Path, home: Home, uv: Path, prefix: str, flow: str, log) -> dict[str, list[str]] | None:
    """``env_files``, or None when a job's build of the env could not be the same: built here with another
    uv than the one jobs build with (its ``pyvenv.cfg`` says which), or holding a link that leads outside
    it and the interpreter's ``prefix`` (a uv-managed Python's version folder, uv's ``symlink`` link mode).
    Jobs then keep no copy of it in the instance cache (the interpreter still is): each builds its own."""
    try:
        cfg = (env / "pyvenv.cfg").read_text()
    except OSError:
        return None
    built_with = next((line.split("=", 1)[1].strip() for line in cfg.splitlines() if line.startswith("uv =")), "")
    if built_with != _uv_version(uv):
        log(
            f"flow {flow}: env {env.name} was built with uv {built_with or '?'}, Batch jobs build with uv "
            f"{_uv_version(uv) or '?'}: no instance cache for it (remove {env} to have it rebuilt with this uv)"
        )
        return None
    files = env_files(env, home)
    inside = (str(env) + "/", prefix.rstrip("/") + "/")
    outside = next(
        (k for k, (kind, v) in files.items() if kind == "l" and v.startswith("/") and not v.startswith(inside)), None
    )
    if outside is not None:
        log(f"flow {flow}: env {env.name}: {outside} leads outside it and its interpreter: no instance cache for it")
        return None
    return files


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


class StagingLedger:
    """What this host knows of the objects it staged: ``REPRO_HOME/staged/<digest of store + key>.json``
    holds the sha256 the object had when this host uploaded it or downloaded and verified it, with the
    size and modification time the store gave for it then. An object whose entry still matches the
    store's answer to one HEAD is not read again; any other (never seen here, or rewritten since) is
    hashed once (``Store.sha256``, as ``repro push`` does), and replaced when its bytes are not the ones
    its key names, as ``repro push`` replaces a corrupt content-addressed object."""

    def __init__(self, home: Home, log=lambda m: None):
        self.folder = home.staged
        self.log = log
        self.replaced: list[str] = []

    def _entry(self, store: Store, key: str) -> Path:
        digest = hashlib.sha256((store.uri + "\n" + key).encode()).hexdigest()
        return self.folder / f"{digest}.json"

    def knows(self, store: Store, key: str, sha256: str, info: ObjectInfo) -> bool:
        try:
            doc = json.loads(self._entry(store, key).read_text())
        except (OSError, ValueError):
            return False  # none, or unreadable: the object is verified again
        return doc == self._doc(store, key, sha256, info)

    def remember(self, store: Store, key: str, sha256: str, info: ObjectInfo) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self._entry(store, key), json.dumps(self._doc(store, key, sha256, info), sort_keys=True))

    @staticmethod
    def _doc(store: Store, key: str, sha256: str, info: ObjectInfo) -> dict:
        return {"store": store.uri, "key": key, "sha256": sha256, "size": info.size, "modified": info.modified}


def _put_missing(store: Store, key: str, path: Path, sha256: str, ledger: StagingLedger) -> None:
    """Make ``key`` hold the bytes of ``path`` (whose sha256 is ``sha256``): one HEAD when this host
    already verified (or uploaded) the object as it is now (``ledger``); else the object is hashed once,
    and uploaded when it is missing, or replaced when it is there with other bytes (a same-size corrupt
    object would otherwise fail every job that fetches it, and no run could repair it)."""
    info = store.stat(key)
    if info is not None and ledger.knows(store, key, sha256, info):
        return
    if info is not None:
        got = store.sha256(key) if info.size == path.stat().st_size else None
        if got == sha256:
            ledger.remember(store, key, sha256, info)
            return
        ledger.replaced.append(key)
        ledger.log(
            f"store object {store.uri}/{key} is corrupt (sha256 {got or 'of another size'}, its key names "
            f"{sha256}): replaced with this host's verified copy"
        )
    store.put_file(key, path, sha256=sha256)
    again = store.stat(key)
    if again is not None:
        ledger.remember(store, key, sha256, again)


def bootstrap_script() -> Path:
    """batch_bootstrap.py as installed here: the bytes jobs fetch (``bootstrap_commands`` names its sha256)."""
    from metaflow_extensions.repro.plugins import batch_bootstrap

    return Path(batch_bootstrap.__file__)


def stage(
    flow: str, built: dict[str, BuiltEnv | None], locks: dict[str, PlatformLock], settings: Settings, log
) -> tuple[dict[str, Staged], HeldLease]:
    """Push what each env's containers need; returns ({env id: where its manifest is}, the lease).

    Every key is known before anything is checked or uploaded, and a lease (``HeldLease``, the kind a
    push takes) names them all first: a concurrent ``repro store gc`` keeps them, even objects staged
    long ago by a run that never got recorded, for as long as the lease is held. The caller releases it
    when the run's jobs are over (``bridge.prepare``: when Metaflow's runtime process exits)."""
    store = batch_store(settings, flow)
    from metaflow_repro.env.cache import PackageCache

    cache = PackageCache(settings.home.packages)
    uv = Path(uv_bin())
    uv_sha = sha256_file(uv)
    script = bootstrap_script()
    script_sha = sha256_file(script)
    uploads: dict[str, Upload] = {
        layout.uv(uv_sha): Upload("uv", layout.uv(uv_sha), uv, uv_sha, uv.stat().st_size),
        layout.bootstrap_script(script_sha): Upload(
            "script", layout.bootstrap_script(script_sha), script, script_sha, script.stat().st_size
        ),
    }
    manifests: dict[str, tuple[str, bytes]] = {}  # env id -> (sha256, bytes)
    counts: dict[str, int] = {}
    for env in {e.env_id: e for e in built.values() if e is not None}.values():
        lock = locks[env.env_id]
        marker = json.loads((env.path / protocol.ENV_MARKER).read_text())
        interp = pythons.probe(env.interpreter)
        if interp is None:
            raise InfraError(f"flow {flow}: env {env.env_id[:12]}: its interpreter {env.interpreter} no longer runs")
        # gzip: the job's bootstrap restores it with the standard library alone
        snap, tarball = interpreter_snapshot.pack(interp, settings.home, log=log, compression=GZIP)
        key = layout.python_snapshot(snap.sha256)
        uploads[key] = Upload("pythons", key, tarball, snap.sha256, snap.size)
        snap_json = snap.to_json().encode()
        key = layout.python_manifest(snap.sha256)
        uploads[key] = Upload("pythons", key, snap_json, hashlib.sha256(snap_json).hexdigest(), len(snap_json))
        packages = []
        for p in lock.packages:
            key = layout.package(p.sha256, p.file)
            uploads[key] = Upload("packages", key, cache.path(p), p.sha256, p.size)
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
            # what the host's venv was made with (its bin/python links there: the job's build must too)
            "venv_python": env.interpreter,
            "interpreter": {
                **snap.to_dict(),
                "key": layout.python_snapshot(snap.sha256),
                "files": snapshot_files(tarball, snap.sha256, settings.home),
            },
            "files": _env_files_if_same_uv(env.path, settings.home, uv, snap.prefix, flow, log),
            "uv": {"key": layout.uv(uv_sha), "sha256": uv_sha},
            "script": {"key": layout.bootstrap_script(script_sha), "sha256": script_sha},
            "packages": packages,
        }
        data = json.dumps(manifest, sort_keys=True).encode()
        manifests[env.env_id] = (hashlib.sha256(data).hexdigest(), data)
        counts[env.env_id] = len(packages)
    for sha, data in manifests.values():
        uploads[layout.bootstrap_manifest(sha)] = Upload(
            "bootstrap", layout.bootstrap_manifest(sha), data, sha, len(data)
        )
    lease = HeldLease(store, f"batch staging of flow {flow}", list(uploads))
    try:
        wait_for_sweeps(store, set(uploads), f"Batch staging of flow {flow}")
        ledger = StagingLedger(settings.home, log)
        for u in uploads.values():
            if isinstance(u.source, Path):
                _put_missing(store, u.key, u.source, u.sha256, ledger)
            elif not (layout.parse_as(u.key, layout.Kind.BOOTSTRAP_MANIFEST) and store.exists(u.key)):
                upload_one(store, u)
        # a gc that read the leases just before ours and was about to delete an object we found there:
        # listed once more now that the lease is seen (as push does before its record lands)
        complete_uploads(store, list(uploads.values()), f"Batch staging of flow {flow}")
    except BaseException:
        lease.release()
        raise
    out: dict[str, Staged] = {}
    for env_id, (sha, _) in manifests.items():
        log(f"staged env {env_id[:12]} for Batch in {store.uri} ({counts[env_id]} packages)")
        out[env_id] = Staged(store.uri, sha)
    return out, lease


# -- what gc keeps for Batch ---------------------------------------------------------------------


def batch_objects(store: Store, envs: set[str]) -> set[str]:
    """What Batch staging put in the store for the environments of kept records: each bootstrap manifest
    (``bootstrap/<sha256>.json``, written by ``metaflow_repro.executors.batch.stage``) whose env is one of ``envs``,
    and the uv binary, bootstrap script, interpreter snapshot and package files it names. A manifest is untrusted: one whose
    bytes do not match its key, that is not a manifest, or names keys of other shapes protects nothing
    (and, no record's env being its own, is collected like any orphan)."""
    keep: set[str] = set()
    for info in store.list(layout.BOOTSTRAP_MANIFESTS):
        manifest = layout.parse_as(info.key, layout.Kind.BOOTSTRAP_MANIFEST)
        if manifest is None:
            continue
        try:
            data = store.get_bytes(info.key)
        except StoreObjectMissing:
            continue
        if hashlib.sha256(data).hexdigest() != manifest.digest:
            continue
        try:
            doc = load_json(data, At(info.key), "a bootstrap manifest")
            if doc.get("env_id") not in envs:
                continue
            named = [doc["uv"]["key"], doc["interpreter"]["key"], *(p["key"] for p in doc["packages"])]
            if "script" in doc:  # batch_bootstrap.py (manifests of format 2 on)
                named.append(doc["script"]["key"])
            snapshot = doc["interpreter"]["sha256"]
        except (Invalid, KeyError, TypeError, AttributeError):
            continue
        keep.add(info.key)
        keep |= {k for k in named if layout.parse_as(k, *layout.STAGED_KINDS)}
        if isinstance(snapshot, str) and layout.parse_as(layout.python_manifest(snapshot), layout.Kind.PYTHON_MANIFEST):
            keep.add(layout.python_manifest(snapshot))
    return keep


# -- the image the jobs run in ---------------------------------------------------------------------
#
# The bytes of a job's image are where AWS Batch pulls them from (a registry), not on this host. What a
# record can say of them: the image's store object (``image_sha256``) when this host's Docker daemon holds
# that name as an image of repro's (one layer, repro's labels: `repro image build`), whose root file system
# is then pushed like a container replay's; else the registry digest (``image_digest``) the name itself
# pins; else the name alone, and the run says the digest its jobs ran is not known. The daemon's own
# RepoDigests are never taken: it may have pulled the tag long before Batch did. Caveat, on real AWS: the
# object is what THIS daemon holds under the name; a repro image pushed to a registry under that name is
# the same bytes only if nobody pushed another since (in the tests' world moto runs the jobs in this very
# daemon). Name the image by digest to be sure.

IMAGE_VAR = "METAFLOW_BATCH_CONTAINER_IMAGE"
REGISTRY_VAR = "METAFLOW_BATCH_CONTAINER_REGISTRY"


def with_batch_image(args: Sequence[str]) -> str:
    """The ``image=`` attribute of the first ``--with batch:...`` in ``args`` ("": none): Metaflow attaches
    the first decorator of a name to each step, so that one's attributes are the jobs'. Pure."""
    items = list(args)
    for start, end in batch_options(items)[:1]:
        spec = items[start + 1] if end - start == 2 else items[start].split("=", 1)[1]
        for attribute in spec.partition(":")[2].split(","):
            key, _, value = attribute.partition("=")
            if key.strip() == "image" and value.strip():
                return value.strip()
    return ""


def job_image(args: Sequence[str], configured: str, registry: str, python: str) -> str:
    """The image Metaflow's ``@batch`` gives the steps of a run with ``args`` (its ``init``): the ``image=``
    of its ``--with batch``, else ``configured`` (``METAFLOW_BATCH_CONTAINER_IMAGE``), else
    ``python:<python>`` (the runtime's major.minor), with ``registry`` (``METAFLOW_BATCH_CONTAINER_REGISTRY``)
    in front of an image that names none (Metaflow's own rule). A step's own ``@batch(image=...)`` is not
    seen here."""
    from metaflow.plugins.aws.aws_utils import get_docker_registry

    image = with_batch_image(args) or configured or f"python:{python}"
    if registry and not get_docker_registry(image):
        image = f"{registry.rstrip('/')}/{image}"
    return image


def metaflow_setting(env: Mapping[str, str], name: str) -> str:
    """A Metaflow setting as the runtime started with ``env`` reads it: from ``env``, else this process's
    Metaflow configuration (its environment and config file)."""
    if name in env:
        return env[name]
    from metaflow import metaflow_config

    return str(getattr(metaflow_config, name.removeprefix("METAFLOW_"), "") or "")


def repository(image: str) -> str:
    """``image`` without its tag or digest (``registry:5000/team/img:1`` -> ``registry:5000/team/img``). Pure."""
    head, _, last = image.split("@", 1)[0].rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def digest_of(image: str, repo_digests: Sequence[str] = ()) -> str:
    """The manifest digest ``image`` names (``...@sha256:<hex>``), else the one of ``repo_digests`` (Docker's
    ``RepoDigests``, ``repo@sha256:<hex>`` for each registry the image came from) of its repository; ""
    when neither tells. Pure."""
    if "@" in image and IMAGE_DIGEST.fullmatch(image.rpartition("@")[2]):
        return image.rpartition("@")[2]
    repo = repository(image)
    for item in repo_digests:
        name, _, digest = item.rpartition("@")
        if name == repo and IMAGE_DIGEST.fullmatch(digest):
            return digest
    return ""


def pinned(executor: Executor) -> str:
    """The image a replay on Batch runs to run what a Batch run's ``executor`` ran in: its name, or
    ``<repository>@<digest>`` when its registry digest was recorded (a tag may have moved since). Pure."""
    if executor.image_digest and executor.image:
        return f"{repository(executor.image)}@{executor.image_digest}"
    return executor.image


def with_image(args: Sequence[str], image: str) -> list[str]:
    """``args`` with the ``image=`` attribute of its first ``--with batch:...`` (the one Metaflow attaches:
    ``with_batch_image``) set to ``image``; the same ``args`` when that option names no image. Pure."""
    items = list(args)
    for start, end in batch_options(items)[:1]:
        at = start + 1 if end - start == 2 else start
        prefix, spec = ("", items[at]) if end - start == 2 else ("--with=", items[at].split("=", 1)[1])
        name, _, attributes = spec.partition(":")
        parts = attributes.split(",")
        keys = [part.partition("=")[0].strip() for part in parts]
        if "image" in keys and with_batch_image(items):
            parts[keys.index("image")] = f"image={image}"
            items[at] = f"{prefix}{name}:{','.join(parts)}"
    return items


#: seconds a Docker daemon may take to answer whether it holds a Batch image (a dead TCP DOCKER_HOST
#: must not hold a run's read-back for the client's default ten minutes)
PROBE_TIMEOUT = 5


@dataclass(frozen=True)
class Seen:
    """What ``image_identity`` found: what a record says of the image, and, for a replay of a recorded
    image object, what the daemon here holds under its name instead ("": the same, or nothing seen)."""

    executor: Executor
    other: str = ""
    unchecked: str = ""  # why the recorded object could not be compared ("": it was, or none was recorded)


def image_identity(name: str, home: Home, log, store: Store | None = None, recorded: str = "") -> Seen:
    """What a record says of the image ``name`` Batch jobs ran in, asked of this host's Docker daemon:

    * the registry digest the name pins (``<repository>@sha256:...``): ``image_digest``. One the daemon here
      knows is never taken (it may have pulled the tag long ago; the jobs pulled it now);
    * an image of repro's (one layer, its labels): ``image_sha256``, its store object, kept in
      ``REPRO_HOME/images`` (a run's push uploads it from there): fetched from ``store`` when that has one of
      the same root file system, else packed here once;
    * ``recorded``: the object of ``store`` a replayed record names, named as it is when the daemon's image
      is its root file system; any other image under that name is ``other`` (the replay refuses it);
    * no daemon here, or one without the image: the name, and the log says the digest is not known."""
    from metaflow_repro.containers import image as images

    bare = Executor(ExecutorKind.BATCH, image=name, image_digest=digest_of(name))
    try:
        client = images.client(timeout=PROBE_TIMEOUT)
        img = client.images.get(name)
        layers = _layers(img.attrs)
        labelled = bool((img.labels or {}).get(images.LABEL_PYTHON))
    except Exception as exc:  # no daemon (InfraError), no such image, or an API error: docker's own errors
        log(f"AWS Batch image {name}: not in a Docker daemon here ({_first_line(exc)}); {_by_name(bare)}")
        return Seen(bare, unchecked="no Docker daemon here holds it")
    if recorded:
        return _against_recorded(bare, layers, store, recorded)
    if len(layers) == 1 and labelled:
        from metaflow_repro.containers import stored

        manifest = stored.publish(images.client(), name, None, home, log=log, look_in=store)
        if manifest is not None:
            return Seen(replace(bare, image_sha256=manifest.sha256))
    log(f"AWS Batch image {name}: {_by_name(bare)}")
    return Seen(bare)


def _by_name(ran: Executor) -> str:
    if ran.image_digest:
        return f"recorded with the digest its name pins ({ran.image_digest[:19]})"
    return (
        "recorded by name: the registry digest the jobs ran is not known (the tag may move); name the image "
        f"as {repository(ran.image)}@sha256:<digest> to record exactly what they run"
    )


def _layers(attrs) -> list[str]:
    """The hex digests of an image's layers (its ``RootFS`` diff_ids), as Docker's inspect lists them."""
    layers = (attrs.get("RootFS") or {}).get("Layers") or []
    return [x.split(":", 1)[1] for x in layers if isinstance(x, str) and x.startswith("sha256:")]


def _against_recorded(bare: Executor, layers: list[str], store: Store | None, recorded: str) -> Seen:
    """The daemon's image ``bare.image`` (``layers``) against the recorded image object ``recorded``."""
    try:
        if store is None:
            raise StoreObjectMissing("no store")
        want = read_manifest(store, recorded).rootfs_sha256
    except Exception as exc:  # a store without the manifest (or a corrupt one): nothing to compare with
        return Seen(bare, unchecked=f"its manifest cannot be read from the store ({_first_line(exc)})")
    if layers == [want]:
        return Seen(replace(bare, image_sha256=recorded))
    if len(layers) == 1:
        return Seen(bare, other=f"another root file system (layer {layers[0][:12]})")
    return Seen(bare, other=f"an image of {len(layers)} layers, not the recorded root file system {want[:12]}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def batch_executor(
    args: Sequence[str], env: Mapping[str, str], home: Home, log, store: Store | None = None
) -> Executor:
    """What the record of a run whose every step was a Batch job (Metaflow ``args`` and ``env``) says ran
    it: Batch, and the image its jobs ran in (``image_identity``; its object is pushed with the run to
    ``store``, where one of the same root file system is looked for first)."""
    name = job_image(args, metaflow_setting(env, IMAGE_VAR), metaflow_setting(env, REGISTRY_VAR), _python())
    return image_identity(name, home, log, store).executor


def _python() -> str:
    """Metaflow's runtime runs on repro's own interpreter (adapter/metaflow): its major.minor."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def replay_image(request: ReplayRequest, log) -> Executor:
    """What a replay on Batch runs in, checked against what the replayed run ran in, and what its record
    says of it. The image is the one of the arguments ``BatchPlace.place`` gives the replay (the recorded
    image, pinned by its digest when one was recorded, in ``--with batch:image=`` or ``environment``)
    unless the user's own ``-- --with batch:image=...`` names another (``image_given``). A recorded image
    object the daemon here holds under that name as any other image is refused (exit 2); one it cannot
    check is said, and the jobs run the name as their registry serves it."""
    original, given = request.original.executor, with_batch_image(request.extra_args)
    ran = original.kind is ExecutorKind.BATCH and bool(original.image)
    env = {**os.environ, IMAGE_VAR: pinned(original)} if ran else dict(os.environ)
    placed, _ = BatchPlace().place(request.original.run_options, request.extra_args, original)
    args = [*placed, *request.extra_args]
    name = job_image(args, metaflow_setting(env, IMAGE_VAR), metaflow_setting(env, REGISTRY_VAR), _python())
    sha = original.image_sha256 if ran and not given else ""
    seen = image_identity(name, request.settings.home, log, request.store, recorded=sha)
    now = seen.executor
    problem = "" if given else image_problem(request.original, now, seen.other, seen.unchecked)
    if problem and (now.image_sha256 or seen.other):
        raise BadInput(problem, flow=request.original.flow)
    if problem:
        log(f"repro: {problem}")
    if now.image_sha256 and now.image_sha256 != sha:  # an image of its own (given): in the store before its record
        _push_object(request.store, request.settings.home, now.image_sha256, log)
    return replace(now, image_given=given)


def _push_object(store: Store, home: Home, sha256: str, log) -> None:
    """The image object ``image_identity`` made in ``REPRO_HOME/images``, pushed with its manifest."""
    from metaflow_repro.store.images import parse_manifest, push_image

    meta = home.images / f"{sha256}.json"
    push_image(store, home.images / f"{sha256}.tar.zst", parse_manifest(meta.read_bytes(), str(meta)), log=log)


def image_problem(
    original: RunRecord, now: Executor, other: str = "", unchecked: str = "no Docker daemon here holds it"
) -> str:
    """Why the image a replay on Batch runs in (``now``; ``other``: what the daemon holds under its name
    instead of the recorded object; ``unchecked``: why it could not be compared) is not proven to be the
    one ``original`` ran in ("": it is, or the original recorded nothing to prove). Pure."""
    ran = original.executor
    if ran.kind is not ExecutorKind.BATCH or not ran.image:
        return ""
    if ran.image_sha256 and now.image_sha256 != ran.image_sha256:
        if now.image_sha256 or other:
            held = other or f"another root file system (object {now.image_sha256[:12]})"
            return (
                f"{original.ref} ran on AWS Batch in {ran.image}, the image object {ran.image_sha256[:12]} of the "
                f"store, but {now.image} in this host's Docker daemon is now {held}: the replay would not run "
                f"in the recorded user space. Tag the recorded image as {ran.image} again (`repro replay "
                f"{original.ref} --on docker` imports its bytes from the store), or replay in another image with "
                "-- --with batch:image=IMAGE"
            )
        return (
            f"cannot check that {now.image} is still the image object {ran.image_sha256[:12]} {original.ref} ran "
            f"in: {unchecked}; its jobs run it as their registry serves it now"
        )
    if not ran.image_sha256 and not ran.image_digest:
        return (
            f"{original.ref} recorded no digest of the AWS Batch image {ran.image}: its jobs run it as their "
            "registry serves it now, which may not be what the run ran in"
        )
    return ""
