"""metaflow_repro.store.images: an image object and its manifest in the store, pushed once, fetched only
when its bytes hash to the name the record gives; a manifest is untrusted input. Also what gc, verify
and push make of a record that names an image (metaflow_repro.store.snapshot)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from metaflow_repro.errors import BadInput, IntegrityError
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.settings import Home, Settings
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.images import ImageManifest, fetch_image, parse_manifest, push_image
from metaflow_repro.store.marker import mark
from metaflow_repro.store.snapshot import gc, image_uploads, named_objects, verify
from tests.helpers import make_record
from tests.store_fakes import age

BODY = b"a root file system, compressed" * 100
SHA = hashlib.sha256(BODY).hexdigest()
MANIFEST = ImageManifest(
    sha256=SHA,
    size=len(BODY),
    rootfs_sha256="b" * 64,
    rootfs_size=10_000,
    recipe="44e65a4adabe994648187176",
    suite="bookworm",
    release_date="Sat, 11 Jul 2026 10:16:37 UTC",
    python="3.11",
    packages=("libstdc++6=12.2.0-14+deb12u1", "python3=3.11.2-1+b1"),
    pip=("boto3==1.44.18",),
)


def _pushed(tmp_path) -> LocalStore:
    store = LocalStore(str(tmp_path / "store"))
    obj = tmp_path / "obj.tar.zst"
    obj.write_bytes(BODY)
    assert push_image(store, obj, MANIFEST) is True
    assert push_image(store, obj, MANIFEST) is False  # there with these bytes: nothing to upload
    return store


def test_a_manifest_round_trips_and_a_pushed_image_is_fetched(tmp_path):
    assert parse_manifest(MANIFEST.to_json(), "m.json") == MANIFEST
    store = _pushed(tmp_path)
    dest = tmp_path / "home" / f"{SHA}.tar.zst"
    assert fetch_image(store, SHA, dest) == MANIFEST and dest.read_bytes() == BODY


@pytest.mark.parametrize(
    "field, value, where",
    [
        ("sha256", "A" * 64, "sha256"),
        ("size", -1, "size"),
        ("rootfs_size", 1 << 40, "rootfs_size"),
        ("python", "3.11\n", "python"),
        ("packages", ["bash=5.2\nevil"], "packages.0"),
        ("recipe", "../x", "recipe"),
        ("extra", 1, "extra"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_field(field, value, where):
    doc = {**json.loads(MANIFEST.to_json()), field: value}
    with pytest.raises(BadInput, match=where):
        parse_manifest(json.dumps(doc), "images/x.json")


def test_a_flipped_byte_is_refused_naming_the_key_and_nothing_is_kept(tmp_path):
    store = _pushed(tmp_path)
    path = tmp_path / "store" / layout.image(SHA)
    path.write_bytes(BODY[:5] + bytes([BODY[5] ^ 1]) + BODY[6:])
    dest = tmp_path / "home" / f"{SHA}.tar.zst"
    with pytest.raises(IntegrityError, match=layout.image(SHA)) as info:
        fetch_image(store, SHA, dest)
    assert info.value.exit_code == 3 and "corrupt" in str(info.value)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_a_manifest_of_another_object_is_corrupt(tmp_path):
    store = _pushed(tmp_path)
    other = replace(MANIFEST, sha256="c" * 64)
    (tmp_path / "store" / layout.image_manifest(SHA)).write_text(other.to_json())
    with pytest.raises(IntegrityError, match="describes the image"):
        fetch_image(store, SHA, tmp_path / "dest")


def test_verify_and_gc_know_the_image_a_record_ran_in(tmp_path):
    store = _pushed(tmp_path)
    mark(store)
    record = replace(make_record(), executor=Executor(ExecutorKind.DOCKER, "sha256:" + "d" * 64, image_sha256=SHA))
    named = named_objects(record)
    assert named[layout.image(SHA)] == ("sha256", SHA) and layout.image_manifest(SHA) in named
    for key in (layout.image(SHA), layout.image_manifest(SHA)):
        age(tmp_path / "store" / key)
    assert sorted(gc(store, grace_seconds=0, dry_run=True)) == sorted([layout.image(SHA), layout.image_manifest(SHA)])
    assert not [p for p in verify(record, store) if "images/" in p]
    (tmp_path / "store" / layout.image(SHA)).write_bytes(BODY[:-1] + b"!")
    (tmp_path / "store" / layout.image_manifest(SHA)).write_text("{}")
    problems = [p for p in verify(record, store) if "images/" in p]
    assert any(p.startswith(f"{layout.image(SHA)}: corrupt") for p in problems), problems
    assert any(p.startswith(f"{layout.image_manifest(SHA)}: ") for p in problems), problems


def test_push_takes_the_image_from_repro_home_or_refuses_naming_it(tmp_path):
    settings = Settings(home=Home(tmp_path / "home"), store="")
    record = replace(make_record(), executor=Executor(ExecutorKind.DOCKER, "sha256:" + "d" * 64, image_sha256=SHA))
    assert image_uploads(make_record(), settings) == []
    with pytest.raises(BadInput, match="repro image build"):
        image_uploads(record, settings)
    settings.home.images.mkdir(parents=True)
    (settings.home.images / f"{SHA}.tar.zst").write_bytes(BODY)
    (settings.home.images / f"{SHA}.json").write_text(MANIFEST.to_json())
    assert [u.key for u in image_uploads(record, settings)] == [layout.image(SHA), layout.image_manifest(SHA)]
    (settings.home.images / f"{SHA}.tar.zst").write_bytes(BODY + b"x")
    with pytest.raises(IntegrityError, match="damaged"):
        image_uploads(record, settings)


def test_a_push_replaces_an_object_of_the_wrong_size_or_with_no_manifest(tmp_path):
    store = _pushed(tmp_path)
    obj, meta = tmp_path / "store" / layout.image(SHA), tmp_path / "store" / layout.image_manifest(SHA)
    obj.write_bytes(BODY[:-1])  # cut short: another size
    assert push_image(store, tmp_path / "obj.tar.zst", MANIFEST) is True and obj.read_bytes() == BODY
    obj.write_bytes(BODY[:-1] + b"!")  # same size, other bytes, and no manifest: an unfinished push
    meta.unlink()
    assert push_image(store, tmp_path / "obj.tar.zst", MANIFEST) is True and obj.read_bytes() == BODY
    assert meta.read_text() == MANIFEST.to_json()
