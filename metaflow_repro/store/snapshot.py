"""Snapshots in a store: push a run (everything it names, then the record, then ``latest``),
pull what a replay needs (verified), verify, list, and garbage-collect.

A record is written last, so a record is visible only when everything it names is there; a
push that fails half-way leaves no record, and the next push uploads only what is missing.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from metaflow_repro.env import conda, pycache
from metaflow_repro.env.cache import PackageCache, sha256_file
from metaflow_repro.errors import BadInput, InfraError, IntegrityError, ReproError
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model import validate as v
from metaflow_repro.model.interpreter import ZSTD, InterpreterSnapshot
from metaflow_repro.model.lock import Package, PlatformLock, safe_file_name
from metaflow_repro.model.record import NO_CODE, RunRecord, from_json
from metaflow_repro.model.validate import cap
from metaflow_repro.paths import check_relative
from metaflow_repro.settings import Settings
from metaflow_repro.store import Store, StoreObjectMissing, images, layout
from metaflow_repro.store.marker import mark, require_store


class StoreObjectCorrupt(IntegrityError):
    """An object in the store does not match the hash its record gives for it."""


TOUCH_AFTER_SECONDS = 600  # well inside gc's default grace period of one hour
LEASE_SECONDS = 3600.0  # a lease protects its keys this long (pushes renew theirs before the record)
SWEEP_SECONDS = 600.0  # a gc's sweep holds back pushes of its keys this long (renewed while the gc deletes)
SWEEP_BATCH = 256  # keys a gc announces, re-checks and deletes at a time (a push waits one batch at most)
LOCK_MAX_BYTES = 64 << 20  # an environment's lock (locks/<env id>.toml): thousands of packages fit
LEASE_MAX_BYTES = 64 << 20  # a lease or a sweep: the keys of one push (every package file of a run)
_REF = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:@[A-Za-z0-9_.~@\-]+)?)/([A-Za-z0-9_.\-]+)$")


# -- references ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    flow: str | None = None
    run_id: str | None = None  # "latest" allowed
    path: Path | None = None


def parse_ref(text: str) -> Ref:
    if text.endswith(".json") or (os.sep in text and Path(text).exists()):
        path = Path(text)
        if not path.is_file():
            raise BadInput(f"{v.short(text)}: no such record file")
        return Ref(path=path)
    m = _REF.match(text or "")
    if not m:
        raise BadInput(
            f"{v.short(text)} is not a run reference: use FlowName/run_id, FlowName/latest, or the path of a "
            "record.json file"
        )
    return Ref(flow=m.group(1), run_id=m.group(2))


def load_record(store: Store | None, ref: Ref) -> RunRecord:
    if ref.path is not None:
        try:
            text = ref.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{ref.path}: not a readable run record ({type(exc).__name__}: {exc})") from None
        return from_json(text, str(ref.path))
    if store is None:
        raise BadInput("a store is needed to resolve FlowName/run_id references")
    if ref.flow is None or ref.run_id is None:  # parse_ref gives a path, or a flow and a run id
        raise TypeError(f"{ref!r} names neither a record file nor a flow and a run id")
    run_id = ref.run_id
    folder = ref.flow if "@" in ref.flow else _flow_folder(store, ref.flow, run_id)
    if run_id == "latest":
        try:
            run_id = read_latest(store, folder)
        except StoreObjectMissing:
            raise BadInput(f"store {store.uri} has no runs of flow {ref.flow}") from None
    key = layout.record(folder, run_id)
    try:
        data = store.get_bytes(key)
    except StoreObjectMissing:
        raise BadInput(f"store {store.uri} has no run {ref.flow}/{run_id} (no {key})") from None
    return record_at(store, key, data, ref.flow.split("@")[0], run_id)


def read_latest(store: Store, folder: str) -> str:
    """The run id ``runs/<folder>/latest`` points to (a flow identity's folder), validated: it becomes
    part of a key."""
    key = layout.latest(folder)
    data = store.get_bytes(key)
    try:
        return v.name(data.decode("utf-8").strip(), v.At(f"{store.uri}/{key}"))
    except UnicodeDecodeError:
        raise v.Invalid(
            v.At(f"{store.uri}/{key}"),
            data[:40],
            f"store object {store.uri}/{key} is not a run id "
            f"(binary content {data[:20]!r}...); run `repro store verify`",
        ) from None


def record_at(store: Store, key: str, data: bytes, flow: str, run_id: str) -> RunRecord:
    """Decode the record stored at ``key`` (that of run ``flow/run_id``): a record filed under
    another run's key is refused (it would let one run pose as another)."""
    where = f"{store.uri}/{key}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{where}: not a run record (not UTF-8 text)") from None
    record = from_json(text, where)
    if (record.flow, record.run_id) != (flow, run_id):
        raise v.Invalid(
            v.At(where, "flow/run_id"),
            record.ref,
            f"{where}: the record says it is run {record.ref}, but it is filed as {flow}/{run_id}; "
            "the store is corrupt or someone filed a record under another run's name",
        )
    _check_folder(record, key, where)
    return record


def _check_folder(record: RunRecord, key: str, where: str) -> None:
    """A record's folder under runs/ is its flow's identity (``layout.flow_dir``, as push files it): a
    record served from another flow's folder would pose as a run of that flow."""
    parsed = layout.parse_as(key, layout.Kind.RECORD)
    folder = layout.flow_dir(record.flow, record.identity)
    if parsed is not None and parsed.flow != folder:
        raise v.Invalid(
            v.At(where, "identity"),
            record.identity,
            f"{where}: the record is a run of flow {record.identity or record.flow} (filed under runs/{folder}/), "
            f"but it is served from runs/{parsed.flow}/; the store is corrupt or someone filed a record under "
            "another flow's name",
        )


def _flow_folder(store: Store, flow: str, run_id: str) -> str:
    """The folder under runs/ that a class name means: the one flow identity of that class that has the
    run (or a latest run); two files defining the class are two flows, so `latest` must say which."""
    folders: dict[str, set] = {}
    for info in store.list(layout.runs_of_class(flow)):
        key = layout.parse_as(info.key, layout.Kind.RECORD, layout.Kind.LATEST)
        if key is not None and (key.flow == flow or key.flow.startswith(flow + "@")):
            folders.setdefault(key.flow, set()).add(key.run_id if key.kind is layout.Kind.RECORD else "latest")
    having = sorted(f for f, names in folders.items() if run_id in names)
    if len(having) > 1:
        raise BadInput(
            f"{flow}/{run_id} is ambiguous in {store.uri}: {len(having)} flows (flow files or @project "
            f"branches) define {flow} ({cap(having)}); name one, e.g. {having[0]}/{run_id}"
        )
    return having[0] if having else flow


# -- per-env lock objects ------------------------------------------------------------------------


def env_lock_toml(pl: PlatformLock) -> bytes:
    """The store object ``locks/<env id>.toml``: ``PlatformLock.to_dict`` as TOML."""
    return tomli_w.dumps(pl.to_dict()).encode()


def parse_env_lock(data: bytes, env_id: str, where: str) -> PlatformLock:
    try:
        doc = v.load_toml(data, v.At(where), "a valid environment lock", max_bytes=LOCK_MAX_BYTES)
    except v.Invalid as exc:
        raise StoreObjectCorrupt(f"store object {where} is corrupt: {str(exc).removeprefix(where + ': ')}") from None
    try:
        if "env_id" not in doc:
            raise BadInput("missing key 'env_id'")
        return PlatformLock.from_dict(doc, "", env_id=env_id)
    except BadInput as exc:
        raise StoreObjectCorrupt(f"store object {where} is corrupt: not a valid lock of env {env_id} ({exc})") from None


def record_packages(record: RunRecord) -> list[Package]:
    seen: dict[str, Package] = {}
    for env in record.envs.values():
        for p in env.packages:
            safe_file_name(p.file, f"run record {record.ref}")  # it becomes a path in caches and stores
            seen.setdefault(p.sha256, p)
    return list(seen.values())


# -- push ----------------------------------------------------------------------------------------


@dataclass
class PushResult:
    uploaded: dict  # kind -> number of objects uploaded
    skipped: dict  # kind -> number already in the store (and verified)
    uploaded_bytes: int = 0
    repaired: list = field(default_factory=list)  # keys that were in the store but corrupt, and were replaced

    def summary(self) -> str:
        kinds = sorted(set(self.uploaded) | set(self.skipped))
        text = ", ".join(
            f"{k}: {self.uploaded.get(k, 0)} uploaded, {self.skipped.get(k, 0)} already there" for k in kinds
        )
        return text + (f"; replaced {len(self.repaired)} corrupt object(s)" if self.repaired else "")


@dataclass(frozen=True)
class Upload:
    kind: str
    key: str
    source: Path | bytes
    sha256: str  # of the local bytes, computed before upload
    size: int


def _local_objects(record: RunRecord, settings: Settings, artifact_blobs: dict[str, bytes]) -> list[Upload]:
    """Every object the record names, from this machine, each hashed now: a corrupt local file is
    never uploaded (exit 3, naming it)."""
    cache = PackageCache(settings.home.packages)
    code_file = settings.home.code_package(record.code_sha256)
    if not code_file.is_file():
        raise BadInput(f"code package {code_file} of run {record.ref} is not in REPRO_HOME; was the run made here?")
    got = sha256_file(code_file)
    if got != record.code_sha256:
        raise IntegrityError(
            f"{record.ref}: the code package {code_file} does not match its sha256 "
            f"{record.code_sha256} (got {got}); it is damaged and was not uploaded",
            path=str(code_file),
        )
    out = []
    for pkg in record_packages(record):
        if not cache.has(pkg):
            raise BadInput(
                f"{record.ref}: package file {pkg.file} is not in the package cache {cache.root}; "
                "push from the machine (and REPRO_HOME) that made the run"
            )
        out.append(
            Upload(
                "packages",
                layout.package(pkg.sha256, pkg.file),
                cache.check(pkg, record.ref, full=True),
                pkg.sha256,
                pkg.size,
            )
        )
    for env_id, env in sorted(record.envs.items()):
        data = env_lock_toml(env)
        out.append(Upload("locks", layout.lock(env_id), data, hashlib.sha256(data).hexdigest(), len(data)))
    out.append(Upload("code", layout.code(record.code_sha256), code_file, got, code_file.stat().st_size))
    for sha1, blob in sorted(artifact_blobs.items()):
        if hashlib.sha1(blob).hexdigest() != sha1:
            raise IntegrityError(
                f"{record.ref}: the artifact blob read back for sha1 {sha1} does not match it; it was not uploaded"
            )
        out.append(Upload("artifacts", layout.artifact(sha1), blob, hashlib.sha256(blob).hexdigest(), len(blob)))
    return (
        out
        + input_uploads(record, settings)
        + interpreter_uploads(record, settings)
        + image_uploads(record, settings)
        + bytecode_uploads(record, settings)
    )


def python_snapshot_key(snap: InterpreterSnapshot) -> str:
    """The store key of a snapshot's tarball: ``pythons/<sha256>.tar.zst``, or ``.tar.gz`` for a gzip'd one."""
    return layout.python_snapshot(snap.sha256, zstd=snap.compression == ZSTD)


def interpreter_uploads(record: RunRecord, settings: Settings) -> list[Upload]:
    """The interpreter snapshots the record names (packed here by ``snapshot_interpreters``) and their
    manifests, each hashed now."""
    out = []
    for snap in sorted(record.interpreters.values(), key=lambda s: s.sha256):
        path = settings.home.pythons / snap.file_name
        if not path.is_file():
            raise BadInput(
                f"{record.ref}: the interpreter snapshot of Python {snap.python} ({snap.sha256[:12]}) is not in "
                f"{path.parent}; push from the machine (and REPRO_HOME) that made the run"
            )
        got = sha256_file(path)
        if got != snap.sha256:
            raise IntegrityError(
                f"{path}: interpreter snapshot of Python {snap.python} does not match its sha256 (got {got}); "
                "it is damaged and was not uploaded",
                path=str(path),
            )
        out.append(Upload("pythons", python_snapshot_key(snap), path, got, snap.size))
        manifest = snap.to_json().encode()
        out.append(
            Upload(
                "pythons",
                layout.python_manifest(snap.sha256),
                manifest,
                hashlib.sha256(manifest).hexdigest(),
                len(manifest),
            )
        )
    return out


def image_uploads(record: RunRecord, settings: Settings) -> list[Upload]:
    """The image object a record ran in (``executor.image_sha256``) and its manifest, from
    ``REPRO_HOME/images`` where `repro image build` keeps them, each hashed now."""
    sha = record.executor.image_sha256
    if not sha:
        return []
    path, meta = settings.home.images / f"{sha}.tar.zst", settings.home.images / f"{sha}.json"
    if not (path.is_file() and meta.is_file()):
        raise BadInput(
            f"{record.ref}: the image it ran in ({sha[:12]}) is not in {path.parent}; push from the machine "
            "(and REPRO_HOME) that ran it, or run `repro image build` there with this store"
        )
    manifest = images.parse_manifest(meta.read_bytes(), str(meta))
    got = sha256_file(path)
    if got != sha or manifest.sha256 != sha:
        raise IntegrityError(
            f"{path}: the image object does not match its sha256 {sha} (got {got}); it is damaged and was not uploaded",
            path=str(path),
        )
    body = manifest.to_json().encode()
    return [
        Upload("images", layout.image(sha), path, sha, path.stat().st_size),
        Upload("images", layout.image_manifest(sha), body, hashlib.sha256(body).hexdigest(), len(body)),
    ]


def bytecode_uploads(record: RunRecord, settings: Settings) -> list[Upload]:
    """The bytecode objects the record names (packed here by ``operations/run.env_bytecode``), each hashed now."""
    out = []
    for env_id, sha in sorted(record.bytecode.items()):
        path = pycache.object_path(settings.home, sha)
        if not path.is_file():
            raise BadInput(
                f"{record.ref}: the bytecode object of env {env_id[:12]} ({sha[:12]}) is not in {path.parent}; "
                "push from the machine (and REPRO_HOME) that made the run"
            )
        got = sha256_file(path)
        if got != sha:
            raise IntegrityError(
                f"{path}: the bytecode object of env {env_id[:12]} does not match its sha256 {sha} (got {got}); "
                "it is damaged and was not uploaded",
                path=str(path),
            )
        out.append(Upload("bytecode", layout.bytecode(sha), path, got, path.stat().st_size))
    return list({u.key: u for u in out}.values())


def upload_one(store: Store, u: Upload) -> None:
    if isinstance(u.source, Path):
        store.put_file(u.key, u.source, sha256=u.sha256)
    else:
        store.put_bytes(u.key, u.source)


def _lease(store: Store, record: RunRecord, keys: list[str]) -> str:
    """Announce the keys this push is about to name (gc never deletes a leased key)."""
    key = layout.lease(uuid.uuid4().hex)
    _write_lease(store, key, record.ref, keys)
    return key


def _write_lease(store: Store, key: str, owner: str, keys: list[str]) -> None:
    store.put_bytes(key, json.dumps({"run": owner, "keys": keys, "time": time.time()}).encode())


class HeldLease:
    """A lease held for as long as its holder works (``leases/<uuid>.json`` naming ``keys``, as a push's):
    written at once, renewed every quarter of ``LEASE_SECONDS`` from a thread of its own (a Batch run
    can outlast one lease), deleted by ``release``. A holder that dies without releasing stops renewing,
    and its lease expires like any other."""

    def __init__(
        self,
        store: Store,
        owner: str,
        keys: list[str],
        renew_seconds: float = LEASE_SECONDS / 4,
        key: str | None = None,
    ):
        self.store, self.owner, self.keys = store, owner, sorted(set(keys))
        self.key = key or layout.lease(uuid.uuid4().hex)
        self._write()
        self._stop = threading.Event()
        self._renew_seconds = renew_seconds
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.key}", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        _write_lease(self.store, self.key, self.owner, self.keys)

    def _renew(self) -> None:
        while not self._stop.wait(self._renew_seconds):
            try:
                self._write()
            except Exception:
                pass

    @property
    def held(self) -> bool:
        return not self._stop.is_set()

    def release(self) -> None:
        """Stop renewing and delete the lease (idempotent; a store that cannot be reached lets it expire)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            self.store.delete(self.key)
        except Exception:
            pass


def push(
    record: RunRecord,
    store: Store,
    settings: Settings,
    artifact_blobs: dict[str, bytes] | None = None,
    jobs: int = 16,
    log=lambda m: None,
    latest: bool = True,
) -> PushResult:
    """Upload what the record names, then the record, then ``latest`` (unless not ``latest``: a run
    pushed only to be replayed elsewhere, ``pytest --repro --repro-on``, is no new baseline).

    Every local object is hashed before upload; an object already in the store is kept only if its
    size and sha256 match (else it is replaced); a lease names every key first, so a concurrent gc
    leaves them alone; and the record lands only after every object it names was listed again."""
    uploads = _local_objects(record, settings, artifact_blobs or {})
    return push_objects(record, store, uploads, jobs, log, latest)


def push_objects(
    record: RunRecord,
    store: Store,
    uploads: list[Upload],
    jobs: int = 16,
    log=lambda m: None,
    latest: bool = True,
    held: Sequence[str] = (),
) -> PushResult:
    """``push`` of objects already hashed (``uploads``: this machine's, or a bundle's members): those already
    in the store with these bytes are skipped, the rest uploaded under a lease, the record last. ``held``:
    keys the record names that only the store has (nothing here to upload them from): leased as well, and
    required to be there once the lease is, so a gc that raced the push cannot leave the record naming none."""
    mark(store)  # the first push makes the store: from now on gc knows it for one
    leased = [u.key for u in uploads] + list(held)
    lease = _lease(store, record, leased)
    wait_for_sweeps(store, set(leased), record.ref)
    result = PushResult(uploaded={}, skipped={})

    def one(u: Upload):
        info = store.stat(u.key)
        if info is not None:
            if info.size == u.size and store.sha256(u.key) == u.sha256:
                # A leftover (e.g. of a push that failed) named again: renew its age too, so a gc
                # that started before our lease, and spares young objects, leaves it alone.
                if time.time() - info.modified > TOUCH_AFTER_SECONDS:
                    store.touch(u.key)
                return u, False
            result.repaired.append(u.key)  # there, but not these bytes: replace it
        upload_one(store, u)
        return u, True

    def all_of(items):
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(one, items))

    for u, uploaded in all_of(uploads):
        bucket = result.uploaded if uploaded else result.skipped
        bucket[u.kind] = bucket.get(u.kind, 0) + 1
        result.uploaded_bytes += u.size if uploaded else 0
    complete_uploads(store, uploads, record.ref)
    gone = [key for key in held if store.stat(key) is None]
    if gone:
        raise InfraError(f"cannot record {record.ref} in {store.uri}: {cap(gone)} disappeared from it during the push")
    store.put_bytes(
        lease, json.dumps({"run": record.ref, "keys": leased, "time": time.time()}).encode()
    )  # renewed: the record lands next
    key = layout.record(layout.flow_dir(record.flow, record.identity), record.run_id)
    body = record.to_json().encode()
    if store.exists(key):
        if not _same_record(store.get_bytes(key), body, record, key):
            raise BadInput(f"store {store.uri} already has a different record at {key}; records are immutable")
    else:
        store.put_bytes(key, body)  # the record lands last: from here on the run is visible
    complete_uploads(store, uploads, record.ref)  # a gc that raced the record sees the record from now on: repair once
    if latest and not record.replay_of and _is_newest(store, record):  # a replay is never its flow's baseline
        store.put_bytes(layout.latest(layout.flow_dir(record.flow, record.identity)), record.run_id.encode())
    if result.repaired:
        log(f"replaced {len(result.repaired)} corrupt object(s) in {store.uri}: {cap(result.repaired)}")
    log(f"pushed {record.ref} to {store.uri} ({result.uploaded_bytes / 1e6:.1f} MB): {result.summary()}")
    return result


def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_uploads(record: RunRecord, settings: Settings) -> list[Upload]:
    """Every input the record names (IncludeFile contents, other flows' artifacts its steps read), each
    hashed now, as uploads."""
    out = []
    for sha1 in sorted(record.input_artifacts()):
        path = settings.home.input_artifact(sha1)
        if not path.is_file():
            raise BadInput(
                f"{record.ref}: the artifact {sha1} a step read from another flow's run is not in {path.parent}; "
                "push from the machine (and REPRO_HOME) that made the run"
            )
        if _sha1_file(path) != sha1:
            raise IntegrityError(f"{path}: this input artifact does not match its sha1 {sha1}; it was not uploaded")
        out.append(Upload("inputs", layout.input_artifact(sha1), path, sha256_file(path), path.stat().st_size))
    for name, inc in sorted(record.include_files.items()):
        path = settings.home.input_blob(inc.sha256)
        if not path.is_file():
            raise BadInput(
                f"{record.ref}: the contents of IncludeFile {name!r} ({inc.name}) are not in "
                f"{path.parent}; push from the machine (and REPRO_HOME) that made the run"
            )
        if sha256_file(path) != inc.sha256:
            raise IntegrityError(f"{path}: contents of IncludeFile {name!r} do not match the record's sha256")
        out.append(Upload("inputs", layout.input_blob(inc.sha256), path, inc.sha256, path.stat().st_size))
    out += _data_file_uploads(record, settings)
    return out + _s3_uploads(record, settings, {u.key for u in out})


def _data_file_uploads(record: RunRecord, settings: Settings) -> list[Upload]:
    """The data files of the flow's folder the record keeps (``stored``), each hashed now."""
    out = []
    for rel, f in sorted(record.data_files.items()):
        path = settings.home.input_blob(f.sha256)
        if not f.stored:
            continue
        if not path.is_file():
            raise BadInput(
                f"{record.ref}: the data file {rel!r} a step read is not in {path.parent}; push from the "
                "machine (and REPRO_HOME) that made the run"
            )
        if sha256_file(path) != f.sha256:
            raise IntegrityError(f"{path}: the data file {rel!r} does not match the record's sha256")
        out.append(Upload("inputs", layout.input_blob(f.sha256), path, f.sha256, path.stat().st_size))
    return out


def fetch_verified(store: Store, key: str, sha256: str, dest: Path, kind: str = "sha256") -> Path:
    """``dest`` holds the object ``key`` whose sha256 (``kind="sha1"``: sha1) is ``sha256``: kept if it
    already does, else downloaded beside it, hashed, and renamed into place only if it matches (never a
    partial file)."""
    digest = _sha1_file if kind == "sha1" else sha256_file
    if dest.is_file() and digest(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        target = Path(tmp) / "object"
        store.get_file(key, target)
        got = digest(target)
        if got != sha256:
            raise StoreObjectCorrupt(
                f"store object {store.uri}/{key} is corrupt: {kind} {got}, the record says {sha256}; it was not used"
            )
        os.replace(target, dest)
    return dest


def pull_inputs(record: RunRecord, store: Store, settings: Settings) -> dict[str, Path]:
    """Fetch and verify every input the record names into REPRO_HOME; return {IncludeFile name: its file}."""
    out = {}
    for name, inc in sorted(record.include_files.items()):
        path = settings.home.input_blob(inc.sha256)
        fetch_verified(store, layout.input_blob(inc.sha256), inc.sha256, path)
        out[name] = path
    return out


def _s3_uploads(record: RunRecord, settings: Settings, already: set[str]) -> list[Upload]:
    """The bytes of the ``metaflow.S3`` objects the record keeps (``stored``), each hashed now (one upload
    per content, none that ``already`` names)."""
    out = []
    for url, o in sorted(record.s3_objects().items()):
        key = layout.input_blob(o.sha256)
        if not o.stored or key in already:
            continue
        already.add(key)
        path = settings.home.input_blob(o.sha256)
        if not path.is_file():
            raise BadInput(
                f"{record.ref}: the bytes of {url} a step read are not in {path.parent}; push from the machine "
                "(and REPRO_HOME) that made the run"
            )
        if sha256_file(path) != o.sha256:
            raise IntegrityError(f"{path}: the bytes of {url} do not match the record's sha256")
        out.append(Upload("inputs", key, path, o.sha256, path.stat().st_size))
    return out


def pull_s3_inputs(record: RunRecord, store: Store, settings: Settings) -> dict[str, Path]:
    """Fetch and verify the bytes of every ``metaflow.S3`` object the record keeps into REPRO_HOME;
    return {url: its file}."""
    out = {}
    for url, o in sorted(record.s3_objects().items()):
        if o.stored:
            path = settings.home.input_blob(o.sha256)
            out[url] = fetch_verified(store, layout.input_blob(o.sha256), o.sha256, path)
    return out


def pull_data_files(record: RunRecord, store: Store, settings: Settings) -> dict[str, Path]:
    """Fetch and verify every data file the record keeps into REPRO_HOME; return {its path: its file}."""
    out = {}
    for rel, f in sorted(record.data_files.items()):
        if f.stored:
            path = settings.home.input_blob(f.sha256)
            out[rel] = fetch_verified(store, layout.input_blob(f.sha256), f.sha256, path)
    return out


def pull_input_artifacts(record: RunRecord, store: Store, settings: Settings) -> dict[str, Path]:
    """Fetch and verify (sha1) every artifact of another flow's run that the record's steps read, into
    REPRO_HOME; return {sha1: its file}. Nothing is unpickled here, or before this check."""
    out = {}
    for sha1 in sorted(record.input_artifacts()):
        path = settings.home.input_artifact(sha1)
        out[sha1] = fetch_verified(store, layout.input_artifact(sha1), sha1, path, kind="sha1")
    return out


def push_replay_record(record: RunRecord, store: Store, code_file: Path | None = None) -> str:
    """Write a replay's record (``replay_of`` set). Everything it names is the replayed run's, already in
    the store, but for its code package: Metaflow writes the git branch and commit of the folder a run
    starts in into the package, and a replay starts in a folder of its own, so a run made in a git
    checkout replays with a code package of its own. That one is uploaded from ``code_file`` (checked
    against its sha256 first). ``latest`` does not move: a replay is never the baseline of its flow."""
    missing = [key for key in named_objects(record) if store.stat(key) is None]
    code_key = layout.code(record.code_sha256)
    if code_key in missing and code_file is not None and code_file.is_file():
        got = sha256_file(code_file)
        if got == record.code_sha256:
            mark(store)
            upload_one(store, Upload("code", code_key, code_file, got, code_file.stat().st_size))
            missing.remove(code_key)
    if missing:
        raise InfraError(f"cannot record replay {record.ref} in {store.uri}: missing {', '.join(missing[:3])}")
    mark(store)
    key = layout.record(layout.flow_dir(record.flow, record.identity), record.run_id)
    if not store.exists(key):
        store.put_bytes(key, record.to_json().encode())
    return key


def push_hybrid_record(record: RunRecord, store: Store, settings: Settings, log=lambda m: None) -> str:
    """Write a `repro bisect` hybrid's record (``replay_of`` set, so ``latest`` never moves): what it names
    that the store lacks is uploaded from here (its environments' locks and package files, its code
    package), each hashed first, under a lease, the record last; everything else it names (the bisected
    run's interpreters and inputs) must be in the store already. Returns the record's key."""
    assert record.replay_of, "a hybrid replays the bisected run"
    cache = PackageCache(settings.home.packages)
    locks = {layout.lock(env_id): env for env_id, env in record.envs.items()}
    packages = {layout.package(p.sha256, p.file): p for p in record_packages(record)}
    code_key, code_file = layout.code(record.code_sha256), settings.home.code_package(record.code_sha256)
    uploads, missing, held = [], [], []
    for key in named_objects(record):
        if key in locks:
            data = env_lock_toml(locks[key])
            uploads.append(Upload("locks", key, data, hashlib.sha256(data).hexdigest(), len(data)))
        elif store.stat(key) is not None:
            held.append(key)  # leased with the uploads, and looked for again before the record lands
        elif key in packages and cache.has(packages[key]):
            pkg = packages[key]
            uploads.append(Upload("packages", key, cache.check(pkg, record.ref, full=True), pkg.sha256, pkg.size))
        elif key == code_key and code_file.is_file() and sha256_file(code_file) == record.code_sha256:
            uploads.append(Upload("code", key, code_file, record.code_sha256, code_file.stat().st_size))
        else:
            missing.append(key)
    if missing:
        raise InfraError(f"cannot record {record.ref} in {store.uri}: missing {', '.join(missing[:3])}")
    push_objects(record, store, uploads, log=log, latest=False, held=held)
    return layout.record(layout.flow_dir(record.flow, record.identity), record.run_id)


def _same_record(existing: bytes, body: bytes, record: RunRecord, key: str) -> bool:
    """Whether the record at ``key`` is ``record``: the same bytes, or (written by an older repro, whose
    schema spelled it otherwise) the same record once decoded."""
    if existing == body:
        return True
    try:
        return from_json(existing.decode("utf-8"), key) == record
    except (BadInput, UnicodeDecodeError):
        return False


def complete_uploads(store: Store, uploads: list[Upload], what: str) -> None:
    """List every object again; upload what is gone (a gc that raced this push or staging, ``what``);
    fail if still gone."""
    for _ in range(2):
        gone = [u for u in uploads if store.stat(u.key) is None]
        if not gone:
            return
        for u in gone:
            upload_one(store, u)
    raise InfraError(
        f"store {store.uri}: objects of {what} keep disappearing during the push: "
        f"{cap([u.key for u in gone])}; is a gc with no grace period running?"
    )


def _is_newest(store: Store, record: RunRecord) -> bool:
    """``latest`` only moves forward: pushing an older saved run must not make it the baseline."""
    try:
        folder = layout.flow_dir(record.flow, record.identity)
        current = read_latest(store, folder)
        key = layout.record(folder, current)
        other = record_at(store, key, store.get_bytes(key), record.flow, current)
    except (StoreObjectMissing, BadInput):  # no, or a damaged, pointer or record: this one replaces it
        return True
    return (record.created_at, record.run_id) >= (other.created_at, other.run_id)


def local_record_path(settings: Settings, flow: str, run_id: str) -> Path:
    return settings.home.record(flow, run_id)


def save_local(record: RunRecord, settings: Settings) -> Path:
    """Keep the record in REPRO_HOME before pushing, so a failed push can be completed later."""
    path = local_record_path(settings, record.flow, record.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, record.to_json())
    return path


# -- pull ----------------------------------------------------------------------------------------


def pull(record: RunRecord, store: Store, settings: Settings, jobs: int = 16) -> dict[str, PlatformLock]:
    """Fetch and verify what replaying ``record`` needs; return {env id: PlatformLock}."""
    cache = PackageCache(settings.home.packages)
    locks = {}
    for env_id in record.envs:
        key = layout.lock(env_id)
        locks[env_id] = parse_env_lock(store.get_bytes(key), env_id, f"{store.uri}/{key}")
    code_file = settings.home.code_package(record.code_sha256)
    fetch_verified(store, layout.code(record.code_sha256), record.code_sha256, code_file)

    def fetch(pkg: Package):
        if cache.has(pkg):
            try:
                cache.check(pkg, record.ref)
                return
            except IntegrityError:
                pass  # removed from the cache: fetch it again from the store
        key = layout.package(pkg.sha256, pkg.file)
        try:
            cache.admit(pkg, lambda path: store.get_file(key, path), where=f"{store.uri}/{key}")
        except IntegrityError as exc:
            raise StoreObjectCorrupt(
                f"store object {store.uri}/{key} is corrupt: {exc.detail} "
                "`repro store verify` lists every damaged object."
            ) from None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(fetch, record_packages(record)))
    return locks


def fetch_artifact(store: Store, sha1: str) -> bytes | None:
    try:
        data = store.get_bytes(layout.artifact(sha1))
    except StoreObjectMissing:
        return None
    return data


# -- verify, list, gc ----------------------------------------------------------------------------


def named_objects(record: RunRecord) -> dict[str, tuple[str, str]]:
    """key -> (kind, expected hash) for every object a record names."""
    out = {}
    for pkg in record_packages(record):
        out[layout.package(pkg.sha256, pkg.file)] = ("sha256", pkg.sha256)
    for env_id in record.envs:
        out[layout.lock(env_id)] = ("env", env_id)
    if record.code_sha256 != NO_CODE:  # a failed (Batch) replay no task of which started has no code package
        out[layout.code(record.code_sha256)] = ("sha256", record.code_sha256)
    for sha1 in record.artifact_shas(stored_only=True):
        out[layout.artifact(sha1)] = ("sha1", sha1)
    for inc in record.include_files.values():
        out[layout.input_blob(inc.sha256)] = ("sha256", inc.sha256)
    for f in record.data_files.values():
        if f.stored:
            out[layout.input_blob(f.sha256)] = ("sha256", f.sha256)
    for o in record.s3_objects().values():
        if o.stored:
            out[layout.input_blob(o.sha256)] = ("sha256", o.sha256)
    for sha1 in record.input_artifacts():
        out[layout.input_artifact(sha1)] = ("sha1", sha1)
    for snap in record.interpreters.values():
        out[python_snapshot_key(snap)] = ("sha256", snap.sha256)
        out[layout.python_manifest(snap.sha256)] = ("sha256", hashlib.sha256(snap.to_json().encode()).hexdigest())
    if record.executor.image_sha256:  # the image the run ran in, and its manifest (checked as a document)
        out[layout.image(record.executor.image_sha256)] = ("sha256", record.executor.image_sha256)
        out[layout.image_manifest(record.executor.image_sha256)] = ("image", record.executor.image_sha256)
    for sha in record.bytecode.values():  # each env's ahead-of-time bytecode (a replay restores it)
        out[layout.bytecode(sha)] = ("sha256", sha)
    return out


def verify(record: RunRecord, store: Store, jobs: int = 8) -> list[str]:
    """Re-hash every object the record names; return the problems (empty: all present and intact)."""
    code_key = layout.code(record.code_sha256)
    conda_packages = {layout.package(p.sha256, p.file): p for p in record_packages(record) if p.is_conda}
    conda_metas: dict[str, conda.PackageMeta] = {}  # what each conda package would write, for the env check

    def one(item):
        key, (kind, expected) = item
        try:
            if kind == "env":
                parse_env_lock(store.get_bytes(key), expected, f"{store.uri}/{key}")
                return None
            if kind == "image":
                return images.object_problem(store, key, expected)
            with tempfile.TemporaryDirectory(prefix="repro-verify-") as tmp:
                target = Path(tmp) / "object"
                store.get_file(key, target)
                h = hashlib.sha256() if kind == "sha256" else hashlib.sha1()
                with open(target, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest() != expected:
                    return f"{key}: corrupt ({kind} {h.hexdigest()}, record says {expected})"
                if key == code_key:  # what replay would refuse: unsafe members, no flow_file in it
                    return code_package_problem(target, record.flow_file, key) or undeclared_parameters(
                        target, record, key
                    )
                if key in conda_packages:  # what an install would refuse: paths leading out of the prefix
                    return conda.stored_package_problem(target, conda_packages[key], key, conda_metas)
        except StoreObjectMissing:
            return f"{key}: missing"
        except ReproError as exc:  # corrupt (3) or refused, e.g. a symlink out of the store (2)
            return f"{key}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        problems = [p for p in pool.map(one, sorted(named_objects(record).items())) if p]
    return problems + conda.stored_env_problems(record.envs, conda_metas)


def code_package_problem(tar_path: Path, flow_file: str, key: str) -> str | None:
    """Why replay would refuse this code package: members that leave the folder, links, devices,
    or no ``flow_file`` in it (None: fine). Reads the member list only; nothing is extracted."""
    try:
        with tarfile.open(tar_path) as tar:
            names = set()
            for m in tar.getmembers():
                if not (m.isfile() or m.isdir()):
                    return f"{key}: unsafe member {m.name!r} (a link or a device)"
                try:
                    check_relative(m.name, "member")
                except BadInput:
                    return f"{key}: unsafe member {m.name!r} (absolute or '..')"
                names.add(m.name[2:] if m.name.startswith("./") else m.name)
    except tarfile.TarError as exc:
        return f"{key}: not a code package ({exc})"
    if flow_file not in names:
        return f"{key}: the record's flow_file {flow_file!r} is not in the code package"
    return None


#: what declares a run parameter in a flow class body (``x = Parameter("x", ...)``)
PARAMETER_CALLS = frozenset({"Parameter", "IncludeFile"})
#: Metaflow's own flow decorators, which add no Parameter; any other decorator of a flow class may be a
#: ``FlowMutator`` that does (``mutable_flow.add_parameter``)
PLAIN_FLOW_DECORATORS = frozenset(
    {"project", "pypi_base", "conda_base", "schedule", "trigger", "trigger_on_finish", "exit_hook"}
)
FLOW_FILE_MAX_BYTES = 16 << 20


def declared_parameters(source: str, flow: str) -> set[str] | None:
    """The Parameters (and IncludeFiles) class ``flow`` declares in its body, read with ``ast`` (the file
    is never imported). None when the file alone cannot tell: no such class, a base other than
    ``FlowSpec`` (a mixin may declare more), a decorator other than Metaflow's own (a ``FlowMutator`` may
    add Parameters), or a file that does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ClassDef) and node.name == flow):
            continue
        bases = [
            b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases
        ]
        if bases != ["FlowSpec"] or any(_name_of(d) not in PLAIN_FLOW_DECORATORS for d in node.decorator_list):
            return None
        names: set[str] = set()
        for stmt in node.body:
            value: ast.expr | None
            if isinstance(stmt, ast.Assign):
                value, targets = stmt.value, stmt.targets
            elif isinstance(stmt, ast.AnnAssign):
                value, targets = stmt.value, [stmt.target]
            else:
                continue
            if not isinstance(value, ast.Call):
                continue
            func = value.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in PARAMETER_CALLS:
                names.update(t.id for t in targets if isinstance(t, ast.Name))
        return names
    return None


def _name_of(expr: ast.expr) -> str:
    """The name a decorator is called by: ``project`` for ``@project(...)``, ``robust_flow`` for
    ``@mutators.robust_flow``."""
    target = expr.func if isinstance(expr, ast.Call) else expr
    return target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else ""


def undeclared_parameters(tar_path: Path, record: RunRecord, key: str) -> str | None:
    """Parameter names in the record that its flow (the verified flow file in the code package, read
    with ``ast``) does not declare: what replay would refuse to pass on. None: fine, or unknowable."""
    named = set(record.parameters) | set(record.include_files)
    if not named:
        return None
    try:
        with tarfile.open(tar_path) as tar:
            member = next(
                (m for m in tar.getmembers() if m.isfile() and m.name.removeprefix("./") == record.flow_file), None
            )
            fh = tar.extractfile(member) if member is not None and member.size <= FLOW_FILE_MAX_BYTES else None
            source = fh.read().decode("utf-8", "replace") if fh is not None else None
    except tarfile.TarError:
        return None  # code_package_problem says so
    declared = declared_parameters(source, record.flow) if source is not None else None
    if declared is None:
        return None
    unknown = sorted(named - declared)
    if not unknown:
        return None
    return (
        f"{key}: the record's parameters {cap(map(repr, unknown))} are not Parameters that flow {record.flow} "
        f"declares in {record.flow_file} ({cap(sorted(declared)) or 'none'}); replay would refuse them"
    )


@dataclass(frozen=True)
class Listing:
    """The records of a store, and the record objects that could not be read (each with why)."""

    records: list
    broken: list  # (key, message)


def scan_records(store: Store) -> Listing:
    """Every record in the store; a malformed one is reported, never fatal for the others."""
    records, broken = [], []
    for info in store.list(layout.RUNS):
        key = layout.parse_as(info.key, layout.Kind.RECORD)
        if key is None:
            if layout.misplaced_record(info.key):  # it might name anything: never skipped silently
                broken.append((info.key, f"{info.key}: not where records are kept ({layout.record('Flow', 'run_id')})"))
            continue
        if info.size > v.MAX_DOCUMENT_BYTES:  # never downloaded: it is no record repro wrote
            broken.append(
                (info.key, f"{info.key}: a record of {info.size} bytes is larger than {v.MAX_DOCUMENT_BYTES}")
            )
            continue
        try:
            records.append(record_at(store, info.key, store.get_bytes(info.key), key.flow.split("@")[0], key.run_id))
        except StoreObjectMissing:
            continue  # deleted since it was listed
        except BadInput as exc:
            broken.append((info.key, str(exc)))
    return Listing(sorted(records, key=lambda r: (r.flow, r.created_at, r.run_id)), broken)


def list_records(store: Store) -> list[RunRecord]:
    return scan_records(store).records


class Leases:
    """Keys named by leases younger than ``LEASE_SECONDS`` (pushes in flight or just finished).
    ``refresh`` lists the leases again and reads only new ones, so gc can re-check before every
    delete cheaply. An unreadable lease protects nothing and expires like any other."""

    def __init__(self, store: Store):
        self.store = store
        self.seen: dict[str, set[str]] = {}  # lease key -> the keys it names
        self.keys: set[str] = set()

    def refresh(self, expire: bool = False) -> set[str]:
        now = time.time()
        keys: set[str] = set()
        seen: dict[str, set[str]] = {}
        for info in self.store.list(layout.LEASES):
            if now - info.modified >= LEASE_SECONDS:
                if expire:
                    self.store.delete(info.key)
                continue
            if info.key not in self.seen:
                self.seen[info.key] = _named_keys(self.store, info.key)
            seen[info.key] = self.seen[info.key]
            keys |= seen[info.key]
        self.seen, self.keys = seen, keys
        return keys


def _named_keys(store: Store, key: str) -> set[str]:
    """The keys a lease or a sweep names. A store object like any other: one that is gone, too large,
    too deep or not a list of keys names nothing."""
    try:
        doc = v.load_json(store.get_bytes(key), v.At(f"{store.uri}/{key}"), "a lease", max_bytes=LEASE_MAX_BYTES)
        return {k for k in doc["keys"] if isinstance(k, str)}
    except (StoreObjectMissing, v.Invalid, KeyError, TypeError):
        return set()


#: every prefix of content-addressed objects; gc deletes nothing outside them (runs/ and leases/ have their own rules)
GC_PREFIXES = layout.GC_AREAS
COLLECTED = layout.CONTENT_KINDS  # the kinds of keys gc may delete, named by content


def gc(
    store: Store,
    grace_seconds: float = 3600,
    dry_run: bool = False,
    stale_upload_seconds: float | None = None,
    live: Callable[[list[RunRecord]], Iterable[str]] | None = None,
) -> list[str]:
    """Delete objects no record names and no live lease names, older than the grace period. Each
    candidate is checked again right before its delete (leases re-read, age re-read) while a sweep
    announces it (``_sweep``), so an object a push in flight is about to name is never deleted. Only
    keys of store shape are deleted. Also aborts uploads (S3 multipart, partial files) older than the
    grace period.

    ``live``: what else the kept records need that they do not name themselves (objects an executor
    staged for their environments, e.g. Batch's bootstrap manifests), given the records; the store
    knows no executor, so the caller that does says (``metaflow_repro.operations.gc``).

    Only in a store: a URI that names nothing, or a folder or prefix that is neither marked nor laid out
    as a store, is refused before anything is listed for deletion (``marker.require_store``)."""
    require_store(store, dry_run)
    listing = scan_records(store)
    if listing.broken:  # a record gc cannot read might name anything: deleting would be a guess
        raise BadInput(
            f"store {store.uri}: {len(listing.broken)} record(s) cannot be read, so gc cannot tell "
            f"what they name and deletes nothing: {cap(k for k, _ in listing.broken)}. "
            "`repro store verify` says what is wrong with each"
        )
    named = set()
    for record in listing.records:
        named |= set(named_objects(record))
    if live is not None:
        named |= set(live(listing.records))
    now = time.time()
    leases = Leases(store)
    named |= leases.refresh(expire=not dry_run)
    candidates = [
        info.key
        for prefix in GC_PREFIXES
        for info in list(store.list(prefix))
        # only objects of store shape: a file of the user's in a folder taken for a store is never one
        if info.key not in named and now - info.modified >= grace_seconds and layout.parse_as(info.key, *COLLECTED)
    ]
    if dry_run:
        return candidates
    removed = []
    for start in range(0, len(candidates), SWEEP_BATCH):
        removed += _sweep(store, candidates[start : start + SWEEP_BATCH], leases, grace_seconds)
    for info in store.list(layout.SWEEPS):  # left by a gc that died: they hold nothing back any more
        if time.time() - info.modified >= SWEEP_SECONDS:
            store.delete(info.key)
    stale = max(grace_seconds, 3600.0) if stale_upload_seconds is None else stale_upload_seconds
    removed += [f"(unfinished upload) {k}" for k in store.abort_stale_uploads(stale)]
    return removed


def _sweep(store: Store, keys: list[str], leases: Leases, grace_seconds: float) -> list[str]:
    """Delete ``keys`` unless a push leased one since the listing or touched it. The sweep is announced
    first (``sweeps/<id>.json``) and withdrawn only after the last delete returned: a push leases its
    keys, then waits for any sweep naming them (``wait_for_sweeps``), so either this re-check sees its
    lease or the push sees this sweep and checks its objects after the deletes, never in between (a
    delete sent before the push looked, applied after, is what this closes)."""
    sweep = HeldLease(store, "gc", keys, renew_seconds=SWEEP_SECONDS / 4, key=layout.sweep(uuid.uuid4().hex))
    removed = []
    try:
        for key in keys:
            if key in leases.refresh():  # a push started since the listing
                continue
            again = store.stat(key)
            if again is None or time.time() - again.modified < grace_seconds:  # touched by a push
                continue
            store.delete(key)
            removed.append(key)
    finally:
        sweep.release()
    return removed


def wait_for_sweeps(store: Store, keys: set[str], what: str, timeout: float = SWEEP_SECONDS) -> None:
    """Called right after a lease names ``keys``: wait until no gc sweep in flight names any of them, so
    that what this push (or Batch staging, ``what``) then finds in the store stays there. A sweep older
    than ``SWEEP_SECONDS`` is a gc that died and holds nothing back; an unreadable one is gone."""
    deadline = time.monotonic() + timeout
    while _sweeping(store, keys):
        if time.monotonic() > deadline:
            raise InfraError(
                f"store {store.uri}: a gc has been deleting objects of {what} for over {timeout:.0f} s; "
                "try again when it is done"
            )
        time.sleep(0.2)


def _sweeping(store: Store, keys: set[str]) -> bool:
    now = time.time()
    for info in store.list(layout.SWEEPS):
        if now - info.modified >= SWEEP_SECONDS:
            continue
        if not keys.isdisjoint(_named_keys(store, info.key)):
            return True
    return False


def verify_cache(settings: Settings) -> tuple[list[Path], int]:
    """``repro store verify --cache``: the full check of the local package cache."""
    return PackageCache(settings.home.packages).verify_all()
