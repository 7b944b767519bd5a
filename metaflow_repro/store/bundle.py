"""Portable replay bundles: one file holding the closure of a run (its record and every object the record
names, ``snapshot.named_objects``), so a run can be replayed with no store, and loaded into any store.

The format: a zstd-compressed tar (POSIX pax). Its first member is the manifest (``repro-bundle.json``:
the format, its version, the record's key, and every other member's store key, sha256 and size, in the
order they follow); each member is named by its store key (content-addressed like the store itself), and
the record comes last. A bundle is untrusted input: ``read`` checks the manifest (bounded, every key of
store shape, no duplicates), every member's name, type (regular files only: no links, folders or
devices), order, size and sha256 against it, and that the members are exactly the record's closure, each
with the hash the record gives for it. A malformed bundle is ``BadInput`` (exit 2); a member whose bytes
do not match is ``IntegrityError`` (exit 3), naming the member.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from metaflow_repro.errors import BadInput, IntegrityError
from metaflow_repro.fsutil import DEFAULT_MODE
from metaflow_repro.model import validate as v
from metaflow_repro.model.record import RunRecord, from_json
from metaflow_repro.paths import inside
from metaflow_repro.store import Store, images, layout
from metaflow_repro.store.local import LocalStore
from metaflow_repro.store.snapshot import (
    LOCK_MAX_BYTES,
    StoreObjectCorrupt,
    Upload,
    named_objects,
    parse_env_lock,
)

FORMAT = "repro-bundle"
VERSION = 1
MANIFEST = "repro-bundle.json"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MANIFEST_MAX_BYTES = 64 << 20  # a manifest naming every package file of a large run fits many times over
MAX_MEMBERS = 200_000
MEMBER_MAX_BYTES = 1 << 40
#: tar's own bytes per member (header, pax header for long names, padding): what decompression may add
MEMBER_OVERHEAD = 8 << 10
LEVEL = 3  # zstd: package files and snapshots are compressed already; a higher level costs time for little
_CHUNK = 1 << 20
#: kinds a bundle may hold beside the record: what a record names, and a container image (``--with-image``)
BUNDLED_KINDS = frozenset(layout.CONTENT_KINDS) | {layout.Kind.IMAGE, layout.Kind.IMAGE_MANIFEST}


#: kinds whose key names the sha256 of their bytes: a manifest saying otherwise is refused up front
_NAMED_BY_SHA256 = frozenset(
    {
        layout.Kind.PACKAGE,
        layout.Kind.CODE,
        layout.Kind.INPUT_BLOB,
        layout.Kind.PYTHON_SNAPSHOT,
        layout.Kind.PYTHON_SNAPSHOT_ZSTD,
        layout.Kind.IMAGE,
    }
)


@dataclass(frozen=True)
class Member:
    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    record: str  # the record's key: the last member
    members: tuple[Member, ...]  # in the order they follow the manifest

    @property
    def size(self) -> int:
        """The sum of the members' sizes (the parts, uncompressed)."""
        return sum(m.size for m in self.members)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "record": self.record,
            "members": [{"key": m.key, "sha256": m.sha256, "size": m.size} for m in self.members],
        }
        return json.dumps(doc, indent=0, sort_keys=True).encode()


@dataclass
class Contents:
    """What ``read`` found: the manifest, the record, and (read ``into`` a folder) each member's file."""

    manifest: Manifest
    record: RunRecord
    files: dict[str, Path] = field(default_factory=dict)


def is_bundle(text: str) -> bool:
    """Whether ``text`` names a file that starts as a bundle does (zstd): what `repro replay` takes it for."""
    try:
        with open(text, "rb") as fh:
            return Path(text).is_file() and fh.read(4) == ZSTD_MAGIC
    except OSError:
        return False


# -- the manifest ----------------------------------------------------------------------------------


def parse_manifest(data: bytes, where: str) -> Manifest:
    """The manifest of the bundle ``where``, checked: bounded, every key of store shape and of a kind a
    bundle holds, sha256s and sizes well formed, no key twice, the record exactly once and last."""
    at = v.At(f"{where}: {MANIFEST}")
    doc = v.load_json(data, at, "a bundle manifest", max_bytes=MANIFEST_MAX_BYTES)
    if not isinstance(doc, dict):
        at.fail(doc, "a bundle manifest (a JSON object)")
    v.only(doc, {"format", "version", "record", "members"}, at)
    if v.need(doc, "format", str, at) != FORMAT:
        raise BadInput(f"{where}: not a repro bundle (format {v.short(doc['format'])!r}, not {FORMAT!r})")
    if v.need(doc, "version", int, at) != VERSION:
        raise BadInput(f"{where}: a bundle of format version {doc['version']}; this repro reads version {VERSION} only")
    record = v.need(doc, "record", str, at)
    entries = v.need(doc, "members", list, at)
    if len(entries) > MAX_MEMBERS:
        raise BadInput(f"{where}: its manifest lists {len(entries)} members, more than {MAX_MEMBERS}")
    members = tuple(_member(entry, at / "members" / i) for i, entry in enumerate(entries))
    keys = [m.key for m in members]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise BadInput(f"{where}: its manifest lists {v.cap(twice)} more than once")
    records = [k for k in keys if layout.parse_as(k, layout.Kind.RECORD)]
    if records != [record] or keys[-1] != record:
        raise BadInput(f"{where}: its manifest must list one record, {v.short(record)!r}, as its last member")
    return Manifest(record, members)


def _member(entry: object, at: v.At) -> Member:
    if not isinstance(entry, dict):
        at.fail(entry, "a member (an object with key, sha256 and size)")
    v.only(entry, {"key", "sha256", "size"}, at)
    key = v.need(entry, "key", str, at)
    parsed = layout.parse(key)
    if parsed is None or (parsed.kind not in BUNDLED_KINDS and parsed.kind is not layout.Kind.RECORD):
        (at / "key").fail(key, "the store key of an object a run's closure holds")
    size = v.need(entry, "size", int, at)
    if not 0 <= size <= MEMBER_MAX_BYTES:
        (at / "size").fail(size, f"a size between 0 and {MEMBER_MAX_BYTES}")
    sha256 = v.hex_digest(entry.get("sha256"), 64, at / "sha256")
    if parsed.kind in _NAMED_BY_SHA256 and parsed.digest != sha256:  # before a byte of it is read
        raise IntegrityError(
            f"{at.where}: member {key} is corrupt: the manifest gives it sha256 {sha256}, its key names "
            f"{parsed.digest}; the bundle was not used",
            path=key,
        )
    return Member(key, sha256, size)


# -- writing ---------------------------------------------------------------------------------------


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A member as every bundle writes it: no owner, no time, the same mode (the same closure, the same bytes)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
    return info


def write(dest: Path, uploads: list[Upload], level: int = LEVEL) -> Manifest:
    """Write the bundle of ``uploads`` (each hashed already; the record last) to ``dest``, whole or not at all:
    to a temporary name beside it, renamed when complete."""
    manifest = Manifest(uploads[-1].key, tuple(Member(u.key, u.sha256, u.size) for u in uploads))
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.partial-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressor = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
            with (
                compressor.stream_writer(raw, closefd=False) as zw,
                tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                data = manifest.to_json()
                tar.addfile(_tarinfo(MANIFEST, len(data)), io.BytesIO(data))
                for u in uploads:
                    _add(tar, u)
        os.chmod(tmp, DEFAULT_MODE)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return manifest


def _add(tar: tarfile.TarFile, u: Upload) -> None:
    if isinstance(u.source, bytes):
        tar.addfile(_tarinfo(u.key, u.size), io.BytesIO(u.source))
        return
    with open(u.source, "rb") as fh:
        tar.addfile(_tarinfo(u.key, u.size), fh)


# -- the closure of a run, from a store ------------------------------------------------------------


def closure(record: RunRecord, store: Store, tmp: Path, extra: tuple[str, ...] = (), jobs: int = 8) -> list[Upload]:
    """Every object the record names (``named_objects``: what a push uploads), then ``extra`` keys (an image),
    each read from ``store`` and checked against the hash the record gives for it (a damaged object is
    never bundled: exit 3, naming it), then the record. Objects of a ``file://`` store are read in place;
    others are downloaded into ``tmp``."""
    named = named_objects(record)
    wanted = [(key, named[key]) for key in sorted(named)] + [(key, ("", "")) for key in extra if key not in named]

    def one(item: tuple[str, tuple[str, str]]) -> Upload:
        key, (kind, expected) = item
        if isinstance(store, LocalStore):
            path = inside(store.root, key, f"store {store.uri}: key")
            if not path.is_file():
                raise BadInput(f"store {store.uri} lacks {key}, which run {record.ref} names; `repro store verify`")
        else:
            path = tmp / hashlib.sha256(key.encode()).hexdigest()
            store.get_file(key, path)
        sha256, sha1, size = _hash_file(path)
        _check_expected(key, kind, expected, sha256, sha1, path, f"store object {store.uri}/{key}")
        return Upload(key.split("/", 1)[0], key, path, sha256, size)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        uploads = list(pool.map(one, wanted))
    body = record.to_json().encode()
    key = layout.record(layout.flow_dir(record.flow, record.identity), record.run_id)
    return uploads + [Upload("runs", key, body, hashlib.sha256(body).hexdigest(), len(body))]


def _hash_file(path: Path) -> tuple[str, str, int]:
    h256, h1, size = hashlib.sha256(), hashlib.sha1(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h256.update(block)
            h1.update(block)
            size += len(block)
    return h256.hexdigest(), h1.hexdigest(), size


def _check_expected(key: str, kind: str, expected: str, sha256: str, sha1: str, data: Path | bytes, where: str) -> None:
    """The bytes of ``key`` are what the record says (``named_objects``' kind and hash), else exit 3."""
    if kind == "image":  # an image's manifest: a document naming the image object the record names
        raw = data if isinstance(data, bytes) else Path(data).read_bytes()
        if len(raw) > v.MAX_DOCUMENT_BYTES:
            raise StoreObjectCorrupt(f"{where} is corrupt: an image manifest of {len(raw)} bytes", path=key)
        try:
            named = images.parse_manifest(raw, where).sha256
        except v.Invalid as exc:
            raise StoreObjectCorrupt(f"{where} is corrupt: {exc}", path=key) from exc
        if named != expected:
            raise StoreObjectCorrupt(f"{where} is corrupt: it describes image {named}, not {expected}", path=key)
        return
    if kind == "env":
        raw = data if isinstance(data, bytes) else Path(data).read_bytes()
        if len(raw) > LOCK_MAX_BYTES:
            raise StoreObjectCorrupt(f"{where} is corrupt: a lock of {len(raw)} bytes", path=key)
        parse_env_lock(raw, expected, where)
        return
    got = sha1 if kind == "sha1" else sha256
    if kind and got != expected:
        raise StoreObjectCorrupt(
            f"{where} is corrupt: {kind} {got}, the record says {expected}; it was not used", path=key
        )


# -- reading ---------------------------------------------------------------------------------------


class _Bounded(io.RawIOBase):
    """A reader that refuses to give more than ``limit`` bytes (a decompression bomb, a huge tar header)."""

    def __init__(self, inner, limit: int, where: str):
        self.inner, self.limit, self.where, self.count = inner, limit, where, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        self.count += len(data)
        if self.count > self.limit:
            raise BadInput(f"{self.where}: the bundle holds more than its manifest says ({self.limit} bytes)")
        buffer[: len(data)] = data
        return len(data)


def read(path: Path, into: Path | None = None) -> Contents:
    """Check the bundle at ``path`` member by member (see the module's docstring); with ``into``, each
    verified member is written there (under a name of its own, never its key) for ``Contents.files``.
    A bundle refused leaves nothing there."""
    if into is None:
        return _read(path, None)
    into.mkdir(parents=True, exist_ok=True)
    try:
        _check_room(path, into)
        return _read(path, into)
    except BaseException:
        for member in into.iterdir():
            if member.name.isdigit():  # what _read_members wrote: never a key's name
                member.unlink(missing_ok=True)
        raise


def _check_room(path: Path, into: Path) -> None:
    """The folder a bundle is read into has room for what its manifest says it holds (a bundle of a few
    bytes may claim terabytes: refused before anything is written, as a full disk would be: exit 3)."""
    with open(path, "rb") as raw:
        if raw.read(4) != ZSTD_MAGIC:
            return  # refused by the reading that follows
        raw.seek(0)
        stream = _Bounded(
            zstandard.ZstdDecompressor().stream_reader(raw), MANIFEST_MAX_BYTES + MEMBER_OVERHEAD, str(path)
        )
        try:
            with tarfile.open(fileobj=io.BufferedReader(stream, _CHUNK), mode="r|") as tar:
                first = tar.next()
                fh = tar.extractfile(first) if first is not None and first.name == MANIFEST else None
                if fh is None or first is None or first.size > MANIFEST_MAX_BYTES:
                    return  # not a bundle: the reading that follows says so
                needed = parse_manifest(fh.read(), str(path)).size
        except (zstandard.ZstdError, tarfile.TarError):
            return  # the reading that follows names the damage
    free = shutil.disk_usage(into).free
    if needed > free:
        raise IntegrityError(
            f"{path}: the bundle says it holds {needed} bytes, and {into} has {free} bytes free; "
            "make room (or set TMPDIR elsewhere) and try again",
            path=str(into),
        )


def _read(path: Path, into: Path | None) -> Contents:
    where = str(path)
    with open(path, "rb") as raw:
        if raw.read(4) != ZSTD_MAGIC:
            raise BadInput(f"{where}: not a repro bundle (not zstd-compressed); make one with `repro bundle REF`")
        raw.seek(0)
        stream = _Bounded(
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True),
            MANIFEST_MAX_BYTES + MEMBER_OVERHEAD,
            where,
        )
        reading = ["its manifest"]  # the member being read, for an error in the compressed stream
        try:
            with tarfile.open(fileobj=io.BufferedReader(stream, _CHUNK), mode="r|") as tar:
                return _read_members(tar, stream, where, into, reading)
        except zstandard.ZstdError as exc:
            raise IntegrityError(
                f"{where}: the compressed stream is corrupt in member {reading[-1]} ({exc}); the bundle was not used",
                path=reading[-1],
            ) from None
        except tarfile.TarError as exc:
            if len(reading) > 1:  # past the manifest: a member cut short or damaged
                raise IntegrityError(
                    f"{where}: member {reading[-1]} is cut short or corrupt ({exc}); the bundle was not used",
                    path=reading[-1],
                ) from None
            raise BadInput(
                f"{where}: not a repro bundle (its tar stream is malformed near {reading[-1]}: {exc})"
            ) from None


def _read_members(tar: tarfile.TarFile, stream: _Bounded, where: str, into: Path | None, reading: list) -> Contents:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > MANIFEST_MAX_BYTES:
        raise BadInput(
            f"{where}: not a repro bundle (its first member is not a manifest {MANIFEST} of at most "
            f"{MANIFEST_MAX_BYTES} bytes)"
        )
    fh = tar.extractfile(first)
    assert fh is not None, "a regular member has contents"
    manifest = parse_manifest(fh.read(), where)
    stream.limit = MANIFEST_MAX_BYTES + manifest.size + (len(manifest.members) + 2) * MEMBER_OVERHEAD
    small: dict[str, bytes] = {}
    sha1s: dict[str, str] = {}
    files: dict[str, Path] = {}
    for i, expected in enumerate(manifest.members):
        reading.append(expected.key)
        member = tar.next()
        if member is None:
            raise IntegrityError(
                f"{where}: the bundle ends before member {expected.key}: it is truncated or corrupt", path=expected.key
            )
        _check_name(member, expected, where)
        target = into / f"{i:06d}" if into is not None else None
        sha256, sha1, data = _copy(tar, member, expected, target, where)
        if (sha256, member.size) != (expected.sha256, expected.size):
            raise IntegrityError(
                f"{where}: member {expected.key} is corrupt: sha256 {sha256}, the manifest says {expected.sha256}",
                path=expected.key,
            )
        sha1s[expected.key] = sha1
        if data is not None:
            small[expected.key] = data
        if target is not None:
            files[expected.key] = target
    extra = tar.next()
    if extra is not None:
        raise BadInput(f"{where}: member {v.short(extra.name)!r} is not in the bundle's manifest")
    record = _record(manifest, small[manifest.record], where)
    _check_closure(manifest, record, sha1s, small, where)
    return Contents(manifest, record, files)


def _check_name(member: tarfile.TarInfo, expected: Member, where: str) -> None:
    name = member.name
    if not member.isfile():
        raise BadInput(f"{where}: member {v.short(name)!r} is not a regular file (a link, folder or device)")
    if name.startswith("/") or ".." in name.split("/") or layout.parse(name) is None:
        raise BadInput(f"{where}: member {v.short(name)!r} is not named by a store key (absolute, '..' or unknown)")
    if name != expected.key:
        raise BadInput(f"{where}: member {v.short(name)!r} is not where the manifest puts {expected.key}")
    if member.size != expected.size:
        raise IntegrityError(
            f"{where}: member {name} is corrupt: {member.size} bytes, the manifest says {expected.size}", path=name
        )


def _copy(
    tar: tarfile.TarFile, member: tarfile.TarInfo, expected: Member, target: Path | None, where: str
) -> tuple[str, str, bytes | None]:
    """Hash a member while it streams (into ``target``, if given); records and locks are kept in memory too."""
    keep = layout.parse_as(expected.key, layout.Kind.RECORD, layout.Kind.LOCK, layout.Kind.IMAGE_MANIFEST) is not None
    if keep and expected.size > max(v.MAX_DOCUMENT_BYTES, LOCK_MAX_BYTES):
        raise BadInput(f"{where}: member {expected.key} of {expected.size} bytes is too large for what it is")
    src = tar.extractfile(member)
    assert src is not None, "a regular member has contents"
    h256, h1, kept = hashlib.sha256(), hashlib.sha1(), bytearray()
    with open(target if target is not None else os.devnull, "wb") as out:
        for block in iter(lambda: src.read(_CHUNK), b""):
            h256.update(block)
            h1.update(block)
            if keep:
                kept += block
            if target is not None:
                out.write(block)
    return h256.hexdigest(), h1.hexdigest(), bytes(kept) if keep else None


def _record(manifest: Manifest, data: bytes, where: str) -> RunRecord:
    """The bundle's record, decoded, filed under the key its own flow and run id give (like ``record_at``)."""
    at = f"{where}: {manifest.record}"
    try:
        record = from_json(data.decode("utf-8"), at)
    except UnicodeDecodeError:
        raise BadInput(f"{at}: not a run record (not UTF-8 text)") from None
    key = layout.record(layout.flow_dir(record.flow, record.identity), record.run_id)
    if key != manifest.record:
        raise BadInput(f"{at}: the record is run {record.ref} (filed as {key}), not {manifest.record}")
    return record


def _check_closure(
    manifest: Manifest, record: RunRecord, sha1s: dict[str, str], small: dict[str, bytes], where: str
) -> None:
    """The members are the record's closure: every object it names, each with the hash it gives, and
    nothing else but (``--with-image``) an image."""
    named = named_objects(record)
    keys = {m.key for m in manifest.members}
    missing = sorted(set(named) - keys)
    if missing:
        raise BadInput(f"{where}: run {record.ref} names objects the bundle lacks: {v.cap(missing)}")
    for m in manifest.members:
        if m.key == manifest.record:
            continue
        if m.key not in named:
            parsed = layout.parse(m.key)
            if parsed is None or parsed.kind not in BUNDLED_KINDS - set(layout.CONTENT_KINDS):
                raise BadInput(f"{where}: member {m.key} is not an object run {record.ref} names")
            continue
        kind, expected = named[m.key]
        _check_expected(
            m.key, kind, expected, m.sha256, sha1s[m.key], small.get(m.key, b""), f"{where}: member {m.key}"
        )
