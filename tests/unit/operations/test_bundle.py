"""``metaflow_repro.operations.bundle``: what `--with-image` takes, and arguments refused before any store is read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.model.interpreter import ExecutorKind
from metaflow_repro.operations import bundle as ob
from metaflow_repro.settings import load_settings
from metaflow_repro.store import LocalStore, layout


def _run(kind=ExecutorKind.DOCKER, digest="a" * 64, image=""):
    return SimpleNamespace(ref="F/1", executor=SimpleNamespace(kind=kind, image_sha256=digest, image=image))


def test_with_image_says_a_run_made_here_ran_in_no_image(tmp_path):
    store, said = LocalStore(str(tmp_path / "store")), []
    assert ob.image_keys(_run(ExecutorKind.LOCAL, digest=""), store, said.append) == ()
    assert "ran in no container image" in said[0]


def test_with_image_says_a_batch_run_in_a_registrys_image_carries_none_and_one_in_repros_image_does(tmp_path):
    store, said = LocalStore(str(tmp_path / "store")), []
    assert ob.image_keys(_run(ExecutorKind.BATCH, digest="", image="team/job:3"), store, said.append) == ()
    assert "ran on AWS Batch in team/job:3, a registry's image" in said[0]
    store.put_bytes(layout.image("a" * 64), b"image")
    store.put_bytes(layout.image_manifest("a" * 64), b"{}")
    keys = ob.image_keys(_run(ExecutorKind.BATCH, image="repro-batch-job:1"), store, said.append)
    assert keys == (layout.image("a" * 64), layout.image_manifest("a" * 64))


def test_with_image_names_the_image_a_container_run_ran_in_and_refuses_a_store_without_it(tmp_path):
    store, said = LocalStore(str(tmp_path / "store")), []
    with pytest.raises(BadInput, match="lacks images/"):
        ob.image_keys(_run(), store, said.append)
    store.put_bytes(layout.image("a" * 64), b"image")
    store.put_bytes(layout.image_manifest("a" * 64), b"{}")
    assert ob.image_keys(_run(), store, said.append) == (layout.image("a" * 64), layout.image_manifest("a" * 64))


def test_an_output_that_cannot_be_written_is_refused_before_the_store_is_read(tmp_path):
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    with pytest.raises(BadInput, match="is a folder"):
        ob.bundle("F/1", (tmp_path / "none").as_uri(), settings, tmp_path)
    with pytest.raises(BadInput, match="does not exist"):
        ob.bundle("F/1", (tmp_path / "none").as_uri(), settings, tmp_path / "no" / "run.repro")
    with pytest.raises(BadInput, match="no such bundle file"):
        ob.verify(tmp_path / "run.repro")
