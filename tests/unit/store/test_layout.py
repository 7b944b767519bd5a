"""metaflow_repro.store.layout: every key kind is built and parsed back by the same module, and junk is refused."""

from __future__ import annotations

import pytest

from metaflow_extensions.repro.plugins import batch_bootstrap, protocol
from metaflow_repro.errors import BadInput
from metaflow_repro.store import layout
from metaflow_repro.store.layout import Key, Kind

SHA256 = "ab" + "c" * 62
SHA1 = "de" + "f" * 38
LEASE = "0123456789abcdef" * 2

#: each kind: its builder's key (spelled out, as another reader of the store would), and the key parsed
BUILT = {
    Kind.RECORD: (
        layout.record("PlayListFlow@flows~a.py", "1700000000123456"),
        "runs/PlayListFlow@flows~a.py/1700000000123456/record.json",
        Key(Kind.RECORD, flow="PlayListFlow@flows~a.py", run_id="1700000000123456"),
    ),
    Kind.LATEST: (layout.latest("F"), "runs/F/latest", Key(Kind.LATEST, flow="F")),
    Kind.PACKAGE: (
        layout.package(SHA256, "six-1.16.0-py2.py3-none-any.whl"),
        f"packages/sha256/ab/{SHA256}/six-1.16.0-py2.py3-none-any.whl",
        Key(Kind.PACKAGE, digest=SHA256, name="six-1.16.0-py2.py3-none-any.whl"),
    ),
    Kind.LOCK: (layout.lock(SHA256), f"locks/{SHA256}.toml", Key(Kind.LOCK, digest=SHA256)),
    Kind.CODE: (layout.code(SHA256), f"code/{SHA256}.tar.gz", Key(Kind.CODE, digest=SHA256)),
    Kind.ARTIFACT: (layout.artifact(SHA1), f"artifacts/sha1/de/{SHA1}", Key(Kind.ARTIFACT, digest=SHA1)),
    Kind.INPUT_BLOB: (layout.input_blob(SHA256), f"inputs/sha256/ab/{SHA256}", Key(Kind.INPUT_BLOB, digest=SHA256)),
    Kind.INPUT_ARTIFACT: (
        layout.input_artifact(SHA1),
        f"inputs/sha1/de/{SHA1}",
        Key(Kind.INPUT_ARTIFACT, digest=SHA1),
    ),
    Kind.PYTHON_SNAPSHOT: (
        layout.python_snapshot(SHA256),
        f"pythons/{SHA256}.tar.gz",
        Key(Kind.PYTHON_SNAPSHOT, digest=SHA256),
    ),
    Kind.PYTHON_MANIFEST: (
        layout.python_manifest(SHA256),
        f"pythons/{SHA256}.json",
        Key(Kind.PYTHON_MANIFEST, digest=SHA256),
    ),
    Kind.IMAGE: (layout.image(SHA256), f"images/{SHA256}.tar.zst", Key(Kind.IMAGE, digest=SHA256)),
    Kind.IMAGE_MANIFEST: (
        layout.image_manifest(SHA256),
        f"images/{SHA256}.json",
        Key(Kind.IMAGE_MANIFEST, digest=SHA256),
    ),
    Kind.PYTHON_SNAPSHOT_ZSTD: (
        layout.python_snapshot(SHA256, zstd=True),
        f"pythons/{SHA256}.tar.zst",
        Key(Kind.PYTHON_SNAPSHOT_ZSTD, digest=SHA256),
    ),
    Kind.BYTECODE: (layout.bytecode(SHA256), f"bytecode/{SHA256}.tar.zst", Key(Kind.BYTECODE, digest=SHA256)),
    Kind.UV: (layout.uv(SHA256), f"tools/uv/{SHA256}/uv", Key(Kind.UV, digest=SHA256)),
    Kind.BOOTSTRAP_SCRIPT: (
        layout.bootstrap_script(SHA256),
        f"tools/bootstrap/{SHA256}/batch_bootstrap.py",
        Key(Kind.BOOTSTRAP_SCRIPT, digest=SHA256),
    ),
    Kind.BOOTSTRAP_MANIFEST: (
        layout.bootstrap_manifest(SHA256),
        f"bootstrap/{SHA256}.json",
        Key(Kind.BOOTSTRAP_MANIFEST, digest=SHA256),
    ),
    Kind.LEASE: (layout.lease(LEASE), f"leases/{LEASE}.json", Key(Kind.LEASE, digest=LEASE)),
    Kind.SWEEP: (layout.sweep(LEASE), f"sweeps/{LEASE}.json", Key(Kind.SWEEP, digest=LEASE)),
    Kind.MARKER: (layout.MARKER, "repro-store.json", Key(Kind.MARKER)),
    Kind.AUDIT: (layout.audit(SHA256), f"audits/{SHA256}.json", Key(Kind.AUDIT, digest=SHA256)),
    Kind.BISECT_ANSWER: (layout.bisect_answer(SHA256), f"bisect/{SHA256}.json", Key(Kind.BISECT_ANSWER, digest=SHA256)),
}

#: per kind, keys of nearly its shape that are not keys of the store
JUNK = {
    Kind.RECORD: [
        "runs/F/1/record.json/",
        "runs/F/1/x/record.json",
        "runs/F/../record.json",
        "runs/F/a b/record.json",
        "runs/9F/1/record.json",
        "runs/F/1/record.jsonx",
    ],
    Kind.LATEST: ["runs/F/latest/", "runs/F@/latest", "runs//latest", "runs/F-G/latest"],
    Kind.PACKAGE: [
        f"packages/sha256/cd/{SHA256}/six.whl",  # the shard is not the digest's
        f"packages/sha256/ab/{SHA256}/../x.whl",
        f"packages/sha256/ab/{SHA256}/a..whl",
        f"packages/sha256/ab/{SHA256}/.hidden",
        f"packages/sha256/ab/{SHA256}/",
        f"packages/sha256/ab/{SHA256.upper()}/six.whl",
        f"packages/sha1/de/{SHA1}/six.whl",
    ],
    Kind.LOCK: [f"locks/{SHA256[:-1]}.toml", f"locks/{SHA256}.json", "locks/disabled.toml"],
    Kind.CODE: [f"code/{SHA256}.tar", f"code/{SHA256}.tar.gz.partial", f"code/x/{SHA256}.tar.gz"],
    Kind.ARTIFACT: [f"artifacts/sha1/de/{SHA256}", f"artifacts/sha1/ff/{SHA1}", f"artifacts/sha1/de/{SHA1}/"],
    Kind.INPUT_BLOB: [f"inputs/sha256/ab/{SHA1}", f"inputs/sha256/{SHA256}"],
    Kind.INPUT_ARTIFACT: [f"inputs/sha1/de/{SHA256}", f"inputs/sha1/de/{SHA1}x"],
    Kind.PYTHON_SNAPSHOT: [f"pythons/{SHA256}.tgz", f"pythons/{SHA1}.tar.gz"],
    Kind.PYTHON_MANIFEST: [f"pythons/{SHA256}.files.json", f"pythons/{SHA256}/1.json"],
    Kind.IMAGE: [f"images/{SHA256}.tar", f"images/{SHA1}.tar.zst", f"images/x/{SHA256}.tar.zst"],
    Kind.IMAGE_MANIFEST: [f"images/{SHA256}.tar.json", f"images/{SHA256.upper()}.json"],
    Kind.PYTHON_SNAPSHOT_ZSTD: [f"pythons/{SHA256}.zst", f"pythons/{SHA1}.tar.zst", f"pythons/x/{SHA256}.tar.zst"],
    Kind.BYTECODE: [f"bytecode/{SHA256}.tar.gz", f"bytecode/{SHA1}.tar.zst", f"bytecode/x/{SHA256}.tar.zst"],
    Kind.UV: [f"tools/uv/{SHA256}/uvx", "tools/uv/x/uv", f"tools/uv/{SHA256}"],
    Kind.BOOTSTRAP_SCRIPT: [f"tools/bootstrap/{SHA256}/other.py", f"tools/bootstrap/{SHA1}/batch_bootstrap.py"],
    Kind.BOOTSTRAP_MANIFEST: [
        f"bootstrap/{SHA256}.toml",
        f"bootstrap/{SHA256[:12]}.json",
        f"bootstrap/x/{SHA256}.json",
    ],
    Kind.LEASE: ["leases/x.json", f"leases/{LEASE}.txt", f"leases/{SHA256}.json"],
    Kind.SWEEP: ["sweeps/x.json", f"sweeps/{LEASE}.txt", f"sweeps/{SHA256}.json"],
    Kind.MARKER: ["runs/repro-store.json", "repro-store.json/x", "repro-store.jsonx", "/repro-store.json"],
    Kind.AUDIT: [f"audits/{SHA1}.json", f"audits/ab/{SHA256}.json", f"audits/{SHA256}.json.tmp", "audits/x.json"],
    Kind.BISECT_ANSWER: [f"bisect/{SHA1}.json", f"bisect/{SHA256}.toml", f"bisect/x/{SHA256}.json"],
}


def test_every_kind_has_a_builder_a_spelling_and_junk_to_refuse():
    assert set(BUILT) == set(Kind) == set(JUNK)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_a_built_key_parses_back_to_its_fields_and_builds_again(kind):
    built, spelled, parsed = BUILT[kind]
    assert built == spelled
    assert layout.parse(built) == parsed
    assert str(parsed) == built
    assert layout.parse_as(built, kind) == parsed
    assert layout.parse_as(built, *(k for k in Kind if k is not kind)) is None
    assert built.startswith(layout.prefix(kind))


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_junk_of_nearly_a_kinds_shape_is_refused(kind):
    for junk in JUNK[kind]:
        assert layout.parse(junk) is None, junk


@pytest.mark.parametrize("junk", ["", "/", "runs/", "x", f"/code/{SHA256}.tar.gz", f"code/{SHA256}.tar.gz\n", None, 3])
def test_anything_else_is_refused(junk):
    assert layout.parse(junk) is None


def test_record_builders_refuse_what_would_leave_their_folder():
    with pytest.raises(BadInput, match="run id"):
        layout.record("F", "../x")
    with pytest.raises(BadInput, match="neither a flow class name"):
        layout.latest("F/../G")
    with pytest.raises(BadInput, match="neither a flow class name"):
        layout.runs_of_class("a b")


def test_gc_sweeps_the_folders_it_always_did_and_never_runs_or_leases():
    assert layout.GC_AREAS == (
        "packages/",
        "locks/",
        "code/",
        "artifacts/",
        "inputs/",
        "pythons/",
        "tools/uv/",
        "tools/bootstrap/",
        "bootstrap/",
        "images/",
        "bytecode/",
    )
    for kind in Kind:
        built = BUILT[kind][0]
        swept = any(built.startswith(area) for area in layout.GC_AREAS)
        assert swept == (kind in layout.CONTENT_KINDS), kind


def test_the_keys_a_batch_job_spells_are_protocols():
    assert layout.bootstrap_script(SHA256) == protocol.BOOTSTRAP_SCRIPT_KEY % SHA256
    assert layout.bootstrap_manifest(SHA256) == protocol.BOOTSTRAP_MANIFEST_KEY % SHA256
    # batch_bootstrap.py runs alone in the job and keeps its own copy of the spelling: the same one
    assert batch_bootstrap.MANIFEST_KEY == protocol.BOOTSTRAP_MANIFEST_KEY


def test_the_class_prefix_lists_every_identity_folder_of_the_class():
    prefix = layout.runs_of_class("F")
    assert layout.record("F@flows~a.py", "1").startswith(prefix)
    assert layout.latest("F").startswith(prefix)


def test_a_trailing_newline_is_no_part_of_a_name():
    with pytest.raises(BadInput):
        layout.record("F", "1\n")
    with pytest.raises(BadInput):
        layout.latest("F\n")


def test_a_key_named_like_a_record_elsewhere_is_misplaced():
    assert not layout.misplaced_record(layout.record("F", "1"))
    assert not layout.misplaced_record(layout.latest("F"))
    assert not layout.misplaced_record(f"code/{SHA256}.tar.gz")
    assert not layout.misplaced_record("elsewhere/F/1/record.json")
    for key in ("runs/F/1/x/record.json", "runs/F@a b.py/1/record.json", "runs/F/.x/record.json", "runs/record.json"):
        assert layout.misplaced_record(key), key
