"""Images in the store (issue 24 item 1): a replay in a container pushes the image's root file system to
the store and records its sha256; a replay of that run, months later, imports exactly those bytes when
the daemon lacks the image, whatever repro's recipe would build today; corrupt bytes are refused (exit 3)
before anything is imported. One local run, pushed to a file:// store, serves every assertion."""

from __future__ import annotations

import shutil

import pytest

from metaflow_repro.containers import image as images
from metaflow_repro.containers import stored
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.record import from_json
from metaflow_repro.settings import Home
from metaflow_repro.store import LocalStore, layout
from tests.helpers import cli, write_flow

pytestmark = pytest.mark.slow

FLOW = """
    from metaflow import FlowSpec, step


    class StoredImageFlow(FlowSpec):
        @step
        def start(self):
            import sys

            self.python = "%d.%d.%d" % sys.version_info[:3]
            self.next(self.end)

        @step
        def end(self):
            self.words = ["a", "b"]


    if __name__ == "__main__":
        StoredImageFlow()
"""


def _replayed(out: str, store_dir) -> tuple[str, object]:
    """(REF, record) of the replay a `repro replay` output says it recorded."""
    key = out.split("replay recorded as ", 1)[1].split(" in ", 1)[1].strip().splitlines()[0]
    key = key.split(f"file://{store_dir}/", 1)[-1]
    record = from_json((store_dir / key).read_text(), key)
    return f"{record.flow}/{record.run_id}", record


def _save_others(client, rootfs_sha256: str, folder) -> list:
    """Each tagged image other than repro's own made of this one root file system layer, saved (tags kept)."""
    folder.mkdir()
    out = []
    for i, img in enumerate(client.images.list()):
        own = all(t.startswith(("repro-base:", "repro-image:")) for t in img.tags)
        if img.tags and not own and (img.attrs.get("RootFS", {}).get("Layers") or []) == [f"sha256:{rootfs_sha256}"]:
            path = folder / f"{i}.tar"
            with open(path, "wb") as fh:
                for chunk in client.api.get_image(img.tags[0]):
                    fh.write(chunk)
            out.append(path)
    return out


def _drop_image(client, rootfs_sha256: str) -> None:
    """Every image of the daemon whose one layer is this root file system, gone."""
    for img in client.images.list():
        if (img.attrs.get("RootFS", {}).get("Layers") or []) == [f"sha256:{rootfs_sha256}"]:
            client.images.remove(img.id, force=True)


def test_a_replay_of_a_container_run_imports_the_recorded_image_from_the_store(
    tmp_path, repro_home, docker_daemon, base_image
):
    store_dir = tmp_path / "store"
    store = f"file://{store_dir}"
    path = write_flow(tmp_path / "proj", FLOW)
    mf = {"METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"), "METAFLOW_DEFAULT_METADATA": "local"}
    r = cli("run", path, "--store", store, env=mf, cwd=path.parent)
    assert r.code == 0, r.text[-4000:]
    (key,) = store_dir.glob("runs/*/*/record.json")
    run = from_json(key.read_text(), str(key))
    original = f"{run.flow}/{run.run_id}"

    # 1. a run in a container: its record names the image object, which is in the store with its manifest
    r = cli("replay", original, "--store", store, "--on", "docker")
    assert r.code == 0 and "result: identical" in r.out, r.text[-6000:]
    in_container, first = _replayed(r.out, store_dir)
    sha = first.executor.image_sha256
    assert first.executor.kind is ExecutorKind.DOCKER and sha, first.executor
    obj = store_dir / layout.image(sha)
    manifest = (store_dir / layout.image_manifest(sha)).read_text()
    assert obj.is_file() and f'"recipe": "{base_image.tag.split(":")[1]}"' in manifest and "python3=" in manifest
    rootfs = next(line for line in manifest.splitlines() if '"rootfs_sha256"' in line).split('"')[3]

    # 2. months later: the daemon and REPRO_HOME lack the image, and the recipe changed (a rebuild would
    # differ, and here would fail: its mirror is a closed port)
    client = images.client()
    # other images made of the same one layer (the Batch world's job image, built from the base with no layer
    # of its own) go with it: each is saved first and loaded back after, for the tests after this one
    others = _save_others(client, rootfs, tmp_path / "others")
    _drop_image(client, rootfs)
    shutil.rmtree(repro_home / "images", ignore_errors=True)
    later = {"REPRO_IMAGE_MIRROR": "http://127.0.0.1:9/debian"}
    try:
        # one flipped byte in the image object: refused (exit 3) naming it, before any import
        good = obj.read_bytes()
        obj.write_bytes(good[:1000] + bytes([good[1000] ^ 1]) + good[1001:])
        try:
            r = cli("replay", in_container, "--store", store, "--on", "docker", env=later)
            assert r.code == 3, r.text[-4000:]
            assert layout.image(sha) in r.err and "corrupt" in r.err and "fresh container" not in r.err, r.text[-3000:]
            assert not any(layer == [f"sha256:{rootfs}"] for layer in _layers(client))
            v = cli("store", "verify", in_container, "--store", store)
            assert v.code != 0 and layout.image(sha) in v.text, v.text[-3000:]
        finally:
            obj.write_bytes(good)
        # the replay imports the store's bytes, and runs in them
        r = cli("replay", in_container, "--store", store, "--on", "docker", env=later)
        assert r.code == 0 and "result: identical" in r.out, r.text[-6000:]
        assert f"importing it from {store}" in r.err and "debootstrap" not in r.err, r.text[-3000:]
        _, second = _replayed(r.out, store_dir)
        assert second.executor.image_sha256 == sha and second.replay_of == in_container
        assert second.executor.image == client.images.get(f"repro-image:{sha[:24]}").id
    finally:  # the session's base image again (the same bytes, from the store if need be), for the tests after this
        if not any(layers == [f"sha256:{rootfs}"] for layers in _layers(client)):
            stored.ensure(client, LocalStore(store), sha, Home(tmp_path / "restore"), log=lambda m: None)
        for img in client.images.list():
            if (img.attrs.get("RootFS", {}).get("Layers") or []) == [f"sha256:{rootfs}"]:
                img.tag(*base_image.tag.split(":"))
        for saved in others:
            with open(saved, "rb") as fh:
                client.images.load(fh)


def _layers(client) -> list[list[str]]:
    return [img.attrs.get("RootFS", {}).get("Layers") or [] for img in client.images.list()]


def test_an_image_given_overrides_the_recorded_one_and_the_replays_record_says_so(tmp_path, docker_daemon, base_image):
    """`--image` wins over the image the record ran in (which this store does not even hold): nothing is
    fetched, and the executor the replay's record gets names the image given, and no store image."""
    from metaflow_repro.executors import docker
    from metaflow_repro.executors.base import ReplayRequest
    from metaflow_repro.executors.local import LocalPlace
    from metaflow_repro.settings import load_settings
    from tests.unit.model.test_record import make_record

    original = make_record(executor=Executor(ExecutorKind.DOCKER, "sha256:" + "a" * 64, image_sha256="f" * 64))
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    request = ReplayRequest(
        original, LocalStore(str(tmp_path / "store")), settings, LocalPlace(), Executor(), "F/1", image=base_image.tag
    )
    ref, python, executor = docker._container_image(request, images.client(), log=lambda m: None)
    assert (ref, python) == (base_image.tag, base_image.python)
    assert executor == Executor(ExecutorKind.DOCKER, image_given=base_image.tag)
    assert not (tmp_path / "home" / "images").exists()
