"""Snapshots in a store: push a run (everything it names, then the record, then ``latest``),
pull what a replay needs (verified), verify, list, and garbage-collect.

A record is written last, so a record is visible only when everything it names is there; a
push that fails half-way leaves no record, and the next push uploads only what is missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from repro._toml import tomllib
from repro.env.cache import PackageCache, sha256_file
from repro.settings import Settings
from repro.fsutil import atomic_write
from repro.errors import BadInput, InfraError, IntegrityError
from repro.model.lock import Package, PlatformLock, safe_file_name
from repro.model.record import RunRecord, from_json
from repro.store import Store, StoreObjectMissing
from repro.store import layout

class StoreObjectCorrupt(IntegrityError):
    """An object in the store does not match the hash its record gives for it."""


TOUCH_AFTER_SECONDS = 600  # well inside gc's default grace period of one hour
_REF = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:@[A-Za-z0-9_.~@\-]+)?)/([A-Za-z0-9_.\-]+)$")


# -- references ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    flow: str | None = None
    run_id: str | None = None  # "latest" allowed
    path: Path | None = None


def parse_ref(text: str) -> Ref:
    if text.endswith(".json") or os.sep in text and Path(text).exists():
        path = Path(text)
        if not path.is_file():
            raise BadInput(f"{text}: no such record file")
        return Ref(path=path)
    m = _REF.match(text or "")
    if not m:
        raise BadInput(f"{text!r} is not a run reference: use FlowName/run_id, FlowName/latest, "
                       "or the path of a record.json file")
    return Ref(flow=m.group(1), run_id=m.group(2))


def load_record(store: Store | None, ref: Ref) -> RunRecord:
    if ref.path is not None:
        return from_json(ref.path.read_text(), str(ref.path))
    if store is None:
        raise BadInput("a store is needed to resolve FlowName/run_id references")
    run_id = ref.run_id
    folder = ref.flow if "@" in ref.flow else _flow_folder(store, ref.flow, run_id)
    if run_id == "latest":
        try:
            run_id = store.get_bytes(layout.latest(folder)).decode().strip()
        except StoreObjectMissing:
            raise BadInput(f"store {store.uri} has no runs of flow {ref.flow}") from None
    key = layout.record(folder, run_id)
    try:
        text = store.get_bytes(key).decode()
    except StoreObjectMissing:
        raise BadInput(f"store {store.uri} has no run {ref.flow}/{run_id} (no {key})") from None
    return from_json(text, f"{store.uri}/{key}")


def _flow_folder(store: Store, flow: str, run_id: str) -> str:
    """The folder under runs/ that a class name means: the one flow identity of that class that has the
    run (or a latest run); two files defining the class are two flows, so `latest` must say which."""
    folders: dict[str, set] = {}
    for info in store.list(f"runs/{flow}"):
        parts = info.key.split("/")
        if len(parts) >= 3 and (parts[1] == flow or parts[1].startswith(flow + "@")):
            folders.setdefault(parts[1], set()).add(parts[2])
    having = sorted(f for f, names in folders.items() if run_id in names)
    if len(having) > 1 and run_id == "latest":
        raise BadInput(f"{flow}/latest is ambiguous in {store.uri}: {len(having)} flow files define {flow} "
                       f"({', '.join(having)}); name one, e.g. {having[0]}/latest")
    return having[0] if having else flow


# -- per-env lock objects ------------------------------------------------------------------------

def env_lock_toml(pl: PlatformLock) -> bytes:
    """The store object ``locks/<env id>.toml``: ``PlatformLock.to_dict`` as TOML."""
    return tomli_w.dumps(pl.to_dict()).encode()


def parse_env_lock(data: bytes, env_id: str, where: str) -> PlatformLock:
    try:
        doc = tomllib.loads(data.decode())
    except ValueError as exc:  # TOMLDecodeError, UnicodeDecodeError
        raise StoreObjectCorrupt(f"store object {where} is corrupt: not a valid environment lock ({exc})") from None
    try:
        if "env_id" not in doc:
            raise BadInput("missing key 'env_id'")
        return PlatformLock.from_dict(doc, "", env_id=env_id)
    except BadInput as exc:
        raise StoreObjectCorrupt(f"store object {where} is corrupt: not a valid lock of env {env_id} ({exc})") from None


def record_packages(record: RunRecord) -> list[Package]:
    seen = {}
    for env in record.envs.values():
        for p in env.packages:
            safe_file_name(p.file, f"run record {record.ref}")  # it becomes a path in caches and stores
            seen.setdefault(p.sha256, p)
    return list(seen.values())


# -- push ----------------------------------------------------------------------------------------

@dataclass
class PushResult:
    uploaded: dict  # kind -> number of objects uploaded
    skipped: dict  # kind -> number already in the store
    uploaded_bytes: int = 0

    def summary(self) -> str:
        kinds = sorted(set(self.uploaded) | set(self.skipped))
        return ", ".join(f"{k}: {self.uploaded.get(k, 0)} uploaded, {self.skipped.get(k, 0)} already there"
                         for k in kinds)


def push(record: RunRecord, store: Store, settings: Settings, artifact_blobs: dict[str, bytes] | None = None,
         jobs: int = 16, log=lambda m: None) -> PushResult:
    """Upload what the record names (skipping what is there), then the record, then ``latest``."""
    cache = PackageCache(settings.home.packages)
    code_file = settings.home.code_package(record.code_sha256)
    if not code_file.is_file():
        raise BadInput(f"code package {code_file} of run {record.ref} is not in REPRO_HOME; was the run made here?")
    uploads: list[tuple[str, str, object]] = []  # (kind, key, Path | bytes)
    for pkg in record_packages(record):
        if not cache.has(pkg):
            raise BadInput(f"{record.ref}: package file {pkg.file} is not in the package cache {cache.root}; "
                           "push from the machine (and REPRO_HOME) that made the run")
        uploads.append(("packages", layout.package(pkg.sha256, pkg.file), cache.check(pkg, record.ref)))
    for env_id, env in record.envs.items():
        uploads.append(("locks", layout.lock(env_id), env_lock_toml(env)))
    uploads.append(("code", layout.code(record.code_sha256), code_file))
    for sha1, blob in (artifact_blobs or {}).items():
        uploads.append(("artifacts", layout.artifact(sha1), blob))
    uploads += input_uploads(record, settings)

    def one(item):
        kind, key, src = item
        info = store.stat(key)
        if info is not None:
            # An unnamed leftover (e.g. of a push that failed) is about to be named again: renew its
            # age so a concurrent gc, which spares young objects, cannot delete it under this push.
            if time.time() - info.modified > TOUCH_AFTER_SECONDS:
                store.touch(key)
            return kind, 0, 0
        if isinstance(src, Path):
            store.put_file(key, src)
            return kind, 1, src.stat().st_size
        store.put_bytes(key, src)
        return kind, 1, len(src)

    result = PushResult(uploaded={}, skipped={})
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for kind, n, size in pool.map(one, uploads):
            bucket = result.uploaded if n else result.skipped
            bucket[kind] = bucket.get(kind, 0) + 1
            result.uploaded_bytes += size
    key = layout.record(layout.flow_dir(record.flow, record.identity), record.run_id)
    body = record.to_json().encode()
    if store.exists(key):
        if store.get_bytes(key) != body:
            raise BadInput(f"store {store.uri} already has a different record at {key}; records are immutable")
    else:
        store.put_bytes(key, body)  # the record lands last: from here on the run is visible
    if _is_newest(store, record):
        store.put_bytes(layout.latest(layout.flow_dir(record.flow, record.identity)), record.run_id.encode())
    log(f"pushed {record.ref} to {store.uri} ({result.uploaded_bytes / 1e6:.1f} MB): {result.summary()}")
    return result


def input_uploads(record: RunRecord, settings: Settings) -> list[tuple[str, str, Path]]:
    """(kind, key, file) of every input the record names (IncludeFile contents), verified first."""
    out = []
    for name, inc in sorted(record.include_files.items()):
        path = settings.home.input_blob(inc.sha256)
        if not path.is_file():
            raise BadInput(f"{record.ref}: the contents of IncludeFile {name!r} ({inc.name}) are not in "
                           f"{path.parent}; push from the machine (and REPRO_HOME) that made the run")
        if sha256_file(path) != inc.sha256:
            raise IntegrityError(f"{path}: contents of IncludeFile {name!r} do not match the record's sha256")
        out.append(("inputs", layout.input_blob(inc.sha256), path))
    return out


def pull_inputs(record: RunRecord, store: Store, settings: Settings) -> dict[str, Path]:
    """Fetch and verify every input the record names into REPRO_HOME; return {IncludeFile name: its file}."""
    out = {}
    for name, inc in sorted(record.include_files.items()):
        path = settings.home.input_blob(inc.sha256)
        if not (path.is_file() and sha256_file(path) == inc.sha256):
            key = layout.input_blob(inc.sha256)
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                target = Path(tmp) / "input"
                store.get_file(key, target)
                got = sha256_file(target)
                if got != inc.sha256:
                    raise StoreObjectCorrupt(f"store object {store.uri}/{key} is corrupt: sha256 {got}, "
                                             f"the record says {inc.sha256}")
                os.replace(target, path)
        out[name] = path
    return out


def push_replay_record(record: RunRecord, store: Store) -> str:
    """Write a replay's record (``replay_of`` set). Everything it names is the replayed run's, already in
    the store; ``latest`` does not move: a replay is never the baseline of its flow."""
    missing = [key for key in named_objects(record) if store.stat(key) is None]
    if missing:
        raise InfraError(f"cannot record replay {record.ref} in {store.uri}: missing {', '.join(missing[:3])}")
    key = layout.record(layout.flow_dir(record.flow, record.identity), record.run_id)
    if not store.exists(key):
        store.put_bytes(key, record.to_json().encode())
    return key


def _is_newest(store: Store, record: RunRecord) -> bool:
    """``latest`` only moves forward: pushing an older saved run must not make it the baseline."""
    try:
        folder = layout.flow_dir(record.flow, record.identity)
        current = store.get_bytes(layout.latest(folder)).decode().strip()
        other = from_json(store.get_bytes(layout.record(folder, current)).decode(), current)
    except (StoreObjectMissing, BadInput):
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
    if not (code_file.is_file() and sha256_file(code_file) == record.code_sha256):
        key = layout.code(record.code_sha256)
        code_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=code_file.parent) as tmp:
            target = Path(tmp) / "code.tar.gz"
            store.get_file(key, target)
            got = sha256_file(target)
            if got != record.code_sha256:
                raise StoreObjectCorrupt(f"store object {store.uri}/{key} is corrupt: sha256 {got}, "
                                         f"the record says {record.code_sha256}")
            os.replace(target, code_file)

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
            raise StoreObjectCorrupt(f"store object {store.uri}/{key} is corrupt: {exc.detail} "
                                     "`repro store verify` lists every damaged object.") from None

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
    out[layout.code(record.code_sha256)] = ("sha256", record.code_sha256)
    for sha1 in record.artifact_shas(stored_only=True):
        out[layout.artifact(sha1)] = ("sha1", sha1)
    for inc in record.include_files.values():
        out[layout.input_blob(inc.sha256)] = ("sha256", inc.sha256)
    return out


def verify(record: RunRecord, store: Store, jobs: int = 8) -> list[str]:
    """Re-hash every object the record names; return the problems (empty: all present and intact)."""

    def one(item):
        key, (kind, expected) = item
        try:
            if kind == "env":
                parse_env_lock(store.get_bytes(key), expected, f"{store.uri}/{key}")
                return None
            with tempfile.TemporaryDirectory(prefix="repro-verify-") as tmp:
                target = Path(tmp) / "object"
                store.get_file(key, target)
                h = hashlib.sha256() if kind == "sha256" else hashlib.sha1()
                with open(target, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            if h.hexdigest() != expected:
                return f"{key}: corrupt ({kind} {h.hexdigest()}, record says {expected})"
        except StoreObjectMissing:
            return f"{key}: missing"
        except (IntegrityError, StoreObjectCorrupt) as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [p for p in pool.map(one, sorted(named_objects(record).items())) if p]


def list_records(store: Store) -> list[RunRecord]:
    records = []
    for info in store.list("runs/"):
        if info.key.endswith("/record.json"):
            records.append(from_json(store.get_bytes(info.key).decode(), f"{store.uri}/{info.key}"))
    return sorted(records, key=lambda r: (r.flow, r.created_at, r.run_id))


def gc(store: Store, grace_seconds: float = 3600, dry_run: bool = False) -> list[str]:
    """Delete objects no record names and that are older than the grace period (a push in flight
    uploads its objects before its record lands). Never deletes an object a record names."""
    named = set()
    for record in list_records(store):
        named |= set(named_objects(record))
    now = time.time()
    removed = []
    for prefix in ("packages/", "locks/", "code/", "artifacts/", "inputs/"):
        for info in list(store.list(prefix)):
            if info.key not in named and now - info.modified >= grace_seconds:
                if not dry_run:
                    store.delete(info.key)
                removed.append(info.key)
    return removed

