"""``metaflow_repro.operations.bundle``: what `--with-image` takes, and arguments refused before any store is read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.model.interpreter import ExecutorKind
from metaflow_repro.operations import bundle as ob
from metaflow_repro.settings import load_settings
from metaflow_repro.store import LocalStore, layout


def _run(kind=ExecutorKind.DOCKER, digest="a" * 64):
    return SimpleNamespace(ref="F/1", executor=SimpleNamespace(kind=kind, image_sha256=digest))


def test_with_image_skips_a_run_that_names_no_image_object_and_says_so(tmp_path):
    said = []
    store = LocalStore(str(tmp_path))
    assert ob.image_keys(_run(ExecutorKind.LOCAL), store, said.append) == ()
    assert ob.image_keys(_run(digest=""), store, said.append) == ()
    assert len(said) == 2 and all("the bundle holds none" in s for s in said)


def test_with_image_takes_the_image_object_the_store_has(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "image", lambda digest: f"images/{digest}.tar.zst", raising=False)
    store, said = LocalStore(str(tmp_path)), []
    assert ob.image_keys(_run(), store, said.append) == ()
    assert "has no images/" in said[0]
    store.put_bytes(f"images/{'a' * 64}.tar.zst", b"image")
    assert ob.image_keys(_run(), store, said.append) == (f"images/{'a' * 64}.tar.zst",)


def test_an_output_that_cannot_be_written_is_refused_before_the_store_is_read(tmp_path):
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    with pytest.raises(BadInput, match="is a folder"):
        ob.bundle("F/1", (tmp_path / "none").as_uri(), settings, tmp_path)
    with pytest.raises(BadInput, match="does not exist"):
        ob.bundle("F/1", (tmp_path / "none").as_uri(), settings, tmp_path / "no" / "run.repro")
    with pytest.raises(BadInput, match="no such bundle file"):
        ob.verify(tmp_path / "run.repro")
