"""The bundle format (metaflow_repro.store.bundle), on a hand-made run and crafted bundles: what a bundle
holds is the record's closure, and a malformed bundle (exit 2) or a corrupt member (exit 3, named) is
refused before anything is written anywhere."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from metaflow_repro.errors import EXIT_BAD_INPUT, EXIT_INFRA, BadInput, IntegrityError
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store import bundle as b
from metaflow_repro.store.snapshot import env_lock_toml, named_objects, push_objects
from tests.helpers import make_record

CODE = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(1 << 14))  # 512 KiB, incompressible: blocks
BLOB = b"an artifact's pickle"


def _run(tmp_path: Path):
    """A record naming a code package and one artifact, and a store holding them and the record."""
    pl = PlatformLock("linux-64", "3.11.7", ())
    record = make_record(
        tasks={"start": {"-": {"x": (hashlib.sha1(BLOB).hexdigest(), len(BLOB), "int")}}},
        env=pl.env_id,
        envs={pl.env_id: pl},
    )
    record = replace(
        record,
        code_sha256=hashlib.sha256(CODE).hexdigest(),
        lock_sha256="b" * 64,
        steps={
            n: replace(s, spec_id="a" * 64, tasks={k: replace(t, fingerprint="f" * 64) for k, t in s.tasks.items()})
            for n, s in record.steps.items()
        },
    )
    store = LocalStore(str(tmp_path / "store"))
    store.put_bytes(layout.code(record.code_sha256), CODE)
    store.put_bytes(layout.artifact(hashlib.sha1(BLOB).hexdigest()), BLOB)
    store.put_bytes(layout.lock(pl.env_id), env_lock_toml(pl))
    store.put_bytes(layout.record("F", "1"), record.to_json().encode())
    return record, store


def _bundle(tmp_path: Path) -> tuple[Path, object]:
    record, store = _run(tmp_path)
    path = tmp_path / "run.repro"
    b.write(path, b.closure(record, store, tmp_path))
    return path, record


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    raw = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 26)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]


def _craft(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(out.getvalue()))
    return path


def test_a_bundle_holds_the_closure_manifest_first_and_the_record_last(tmp_path):
    path, record = _bundle(tmp_path)
    names = [m.name for m, _ in _members(path)]
    key = layout.record("F", "1")
    assert names == [b.MANIFEST, *sorted(named_objects(record)), key]
    contents = b.read(path, tmp_path / "out")
    assert contents.record == record and contents.manifest.record == key
    assert contents.files[layout.code(record.code_sha256)].read_bytes() == CODE
    assert not list(tmp_path.glob(".run.repro.partial-*"))


def test_a_bundle_is_written_whole_or_not_at_all(tmp_path):
    record, store = _run(tmp_path)
    uploads = b.closure(record, store, tmp_path)
    broken = replace(uploads[0], source=tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        b.write(tmp_path / "run.repro", [broken, *uploads[1:]])
    assert not (tmp_path / "run.repro").exists() and not list(tmp_path.glob(".run.repro.partial-*"))


def test_a_damaged_store_object_is_never_bundled(tmp_path):
    record, store = _run(tmp_path)
    (store.root / layout.code(record.code_sha256)).write_bytes(b"other bytes")
    with pytest.raises(IntegrityError, match="code/") as err:
        b.closure(record, store, tmp_path)
    assert err.value.exit_code == EXIT_INFRA


def test_one_byte_flipped_in_a_member_is_exit_3_naming_it(tmp_path):
    path, record = _bundle(tmp_path)
    code_key = layout.code(record.code_sha256)
    members = [(m, bytes([d[0] ^ 1]) + d[1:] if m.name == code_key else d) for m, d in _members(path)]
    with pytest.raises(IntegrityError, match=f"member {code_key} is corrupt") as err:
        b.read(_craft(tmp_path / "bad.repro", members), tmp_path / "out")
    assert err.value.exit_code == EXIT_INFRA


def test_a_member_the_manifest_and_the_record_disagree_on_is_exit_3(tmp_path):
    """Member and manifest agree, the record says other bytes: a bundle cannot smuggle objects in."""
    path, record = _bundle(tmp_path)
    code_key = layout.code(record.code_sha256)
    members = _members(path)
    doc = json.loads(members[0][1])
    for entry in doc["members"]:
        if entry["key"] == code_key:
            entry["sha256"] = hashlib.sha256(b"evil").hexdigest()
    members = [
        (m, json.dumps(doc).encode() if m.name == b.MANIFEST else b"evil" if m.name == code_key else d)
        for m, d in members
    ]
    for m, d in members:
        if m.name == code_key:
            m.size = len(d)
    doc["members"] = [dict(e, size=4) if e["key"] == code_key else e for e in doc["members"]]
    members[0] = (members[0][0], json.dumps(doc).encode())
    # a content-addressed key names its sha256: refused from the manifest, before a byte of it is read
    with pytest.raises(IntegrityError, match=f"{code_key}.*its key names") as err:
        b.read(_craft(tmp_path / "bad.repro", members))
    assert err.value.exit_code == EXIT_INFRA


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _replaced(path: Path, index: int, info: tarfile.TarInfo) -> list:
    members = _members(path)
    members[index] = (info, members[index][1])
    return members


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda ms: [(_info(ms[1][0].name, tarfile.SYMTYPE, "/etc/passwd"), b""), *ms[1:]], "first member is not"),
        (lambda ms: ms[1:], "first member is not"),
        (lambda ms: [ms[0], (_info(ms[1][0].name, tarfile.SYMTYPE, "/etc/passwd"), b""), *ms[2:]], "not a regular"),
        (lambda ms: [ms[0], (_info("/" + ms[1][0].name), ms[1][1]), *ms[2:]], "not named by a store key"),
        (lambda ms: [ms[0], (_info("code/../../x"), ms[1][1]), *ms[2:]], "not named by a store key"),
        (lambda ms: [ms[0], (_info("notes.txt"), ms[1][1]), *ms[2:]], "not named by a store key"),
        (lambda ms: [ms[0], ms[2], ms[1], *ms[3:]], "is not where the manifest puts"),
        (lambda ms: [*ms, (_info(layout.code("d" * 64)), b"x")], "not in the bundle's manifest"),
        (lambda ms: [(ms[0][0], b"{not json"), *ms[1:]], "not a bundle manifest"),
        (lambda ms: [(ms[0][0], json.dumps({"format": "zip"}).encode()), *ms[1:]], "unknown key|not a repro bundle"),
    ],
)
def test_a_malformed_bundle_is_exit_2_and_nothing_is_written(tmp_path, change, words):
    path, _ = _bundle(tmp_path)
    bad = _craft(tmp_path / "bad.repro", change(_members(path)))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BadInput, match=words) as err:
        b.read(bad, out)
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert list(out.iterdir()) == []  # not even the members checked before the problem


def _with_manifest(path: Path, edit) -> list:
    members = _members(path)
    doc = json.loads(members[0][1])
    edit(doc)
    return [(members[0][0], json.dumps(doc).encode()), *members[1:]]


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d["members"].append(d["members"][0]), "more than once"),
        (lambda d: d["members"].reverse(), "as its last member"),
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d["members"][0].update(key="leases/" + "0" * 32 + ".json"), "store key of an object"),
        (lambda d: d["members"][0].update(size=-1), "a size between"),
        (lambda d: d["members"][0].update(sha256="zz"), "64 hex digits"),
        (lambda d: d.update(members=[{"key": "x"}] * (b.MAX_MEMBERS + 1)), "more than"),
    ],
)
def test_a_manifest_is_checked_before_any_member_is_read(tmp_path, edit, words):
    path, _ = _bundle(tmp_path)
    with pytest.raises(BadInput, match=words):
        b.read(_craft(tmp_path / "bad.repro", _with_manifest(path, edit)))


def test_a_bundle_lacking_an_object_the_record_names_is_refused(tmp_path):
    path, record = _bundle(tmp_path)
    gone = layout.code(record.code_sha256)
    members = _with_manifest(path, lambda d: d.update(members=[e for e in d["members"] if e["key"] != gone]))
    with pytest.raises(BadInput, match=f"lacks: {gone}"):
        b.read(_craft(tmp_path / "bad.repro", [(m, d) for m, d in members if m.name != gone]))


def test_not_zstd_and_a_cut_bundle_are_refused(tmp_path):
    path, _ = _bundle(tmp_path)
    (tmp_path / "plain.repro").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(BadInput, match="not zstd"):
        b.read(tmp_path / "plain.repro")
    data = path.read_bytes()
    (tmp_path / "cut.repro").write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match=r"member code/\w+.tar.gz is cut short"):
        b.read(tmp_path / "cut.repro")
    (tmp_path / "cut.repro").write_bytes(data[:20])
    with pytest.raises(BadInput, match="not a repro bundle"):
        b.read(tmp_path / "cut.repro")
    assert b.is_bundle(str(path)) and not b.is_bundle(str(tmp_path / "plain.repro"))
    assert not b.is_bundle("Flow/1")


def test_decompression_stops_at_what_the_manifest_allows(tmp_path, monkeypatch):
    path, _ = _bundle(tmp_path)
    monkeypatch.setattr(b, "MEMBER_OVERHEAD", 0)
    monkeypatch.setattr(b, "MANIFEST_MAX_BYTES", 2048)
    with pytest.raises(BadInput, match="more than its manifest says"):
        b.read(path)


def test_import_writes_each_object_once(tmp_path):
    path, record = _bundle(tmp_path)
    contents = b.read(path, tmp_path / "out")
    store = LocalStore(str(tmp_path / "other"))
    from metaflow_repro.store.snapshot import Upload

    uploads = [
        Upload(m.key.split("/")[0], m.key, contents.files[m.key], m.sha256, m.size)
        for m in contents.manifest.members[:-1]
    ]
    first = push_objects(record, store, uploads)
    again = push_objects(record, store, uploads)
    assert sum(first.uploaded.values()) == len(uploads) and not again.uploaded
    assert store.get_bytes(layout.record("F", "1")) == record.to_json().encode()


def test_import_into_a_store_whose_record_an_older_repro_spelled_otherwise_succeeds(tmp_path):
    """The store holds the run's record as an older schema wrote it (other bytes, the same record): a
    bundle of that run imports (records are immutable, and this one is the same), another record does not."""
    path, record = _bundle(tmp_path)
    contents = b.read(path, tmp_path / "out")
    store = LocalStore(str(tmp_path / "other"))
    from metaflow_repro.store.snapshot import Upload

    uploads = [
        Upload(m.key.split("/")[0], m.key, contents.files[m.key], m.sha256, m.size)
        for m in contents.manifest.members[:-1]
    ]
    older = {**json.loads(record.to_json()), "schema_version": 4}
    store.put_bytes(layout.record("F", "1"), json.dumps(older).encode())
    push_objects(record, store, uploads)
    assert json.loads(store.get_bytes(layout.record("F", "1"))) == older  # left as it was
    other = replace(record, parameters={"alpha": "2"})
    with pytest.raises(BadInput, match="records are immutable"):
        push_objects(other, store, uploads)


def test_a_run_made_in_a_container_bundles_its_image_and_a_manifest_of_another_image_is_refused(tmp_path):
    """The image a run ran in (``executor.image_sha256``) is part of its closure: its object and its
    manifest travel in the bundle, the manifest checked as a document naming that very image."""
    from metaflow_repro.model.interpreter import Executor, ExecutorKind
    from metaflow_repro.store.images import ImageManifest

    record, store = _run(tmp_path)
    image = b"a root file system, compressed"
    sha = hashlib.sha256(image).hexdigest()
    record = replace(record, executor=Executor(ExecutorKind.DOCKER, image_sha256=sha))

    def manifest(of: str) -> bytes:
        return (
            ImageManifest(of, len(image), "c" * 64, 99, "0123456789ab", "bookworm", "2026-12-01", "3.11")
            .to_json()
            .encode()
        )

    store.put_bytes(layout.image(sha), image)
    store.put_bytes(layout.image_manifest(sha), manifest(sha))
    path = tmp_path / "run.repro"
    b.write(path, b.closure(record, store, tmp_path))
    assert {layout.image(sha), layout.image_manifest(sha)} <= {m.key for m in b.read(path).manifest.members}
    store.put_bytes(layout.image_manifest(sha), manifest("d" * 64))
    with pytest.raises(IntegrityError, match="describes image d+, not"):
        b.closure(record, store, tmp_path / "again")


def test_a_bundle_claiming_more_than_the_disk_holds_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """A few bytes may claim terabytes: the folder it is read into must have room first (exit 3)."""
    import shutil

    path, _ = _bundle(tmp_path)
    out = tmp_path / "out"
    usage = shutil.disk_usage(tmp_path)
    nearly_full = type(usage)(usage.total, usage.used, 100)
    monkeypatch.setattr(b.shutil, "disk_usage", lambda p: nearly_full)
    with pytest.raises(IntegrityError, match="bytes free") as err:
        b.read(path, out)
    assert err.value.exit_code == EXIT_INFRA and list(out.iterdir()) == []
