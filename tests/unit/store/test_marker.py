"""The store marker (issue 22 item 3): what counts as one, written once, and what gc's check accepts."""

from __future__ import annotations

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.marker import is_marked, mark, require_store, strangers


def test_only_a_marker_of_repros_marks(tmp_path):
    store = LocalStore(str(tmp_path))
    assert not is_marked(store)
    for junk in (b"", b"[" * 100000, b'{"schema": "other"}', b"\xff"):
        store.put_bytes(layout.MARKER, junk)
        assert not is_marked(store), junk
    mark(store)
    assert is_marked(store)
    before = store.get_bytes(layout.MARKER)
    mark(store)
    assert store.get_bytes(layout.MARKER) == before  # written once


def test_strangers_are_the_keys_of_no_store_shape(tmp_path):
    store = LocalStore(str(tmp_path))
    assert strangers(store) == (False, [])
    store.put_bytes(layout.code("a" * 64), b"x")
    assert strangers(store) == (True, [])
    store.put_bytes("code/project/main.py", b"x")
    assert strangers(store) == (True, ["code/project/main.py"])


def test_a_store_by_its_layout_is_marked_unless_a_dry_run(tmp_path):
    store = LocalStore(str(tmp_path))
    store.put_bytes(layout.code("a" * 64), b"x")
    require_store(store, dry_run=True)
    assert not is_marked(store)
    require_store(store)
    assert is_marked(store)


def test_neither_marked_nor_a_store_by_layout_is_refused(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        require_store(LocalStore(str(tmp_path / "missing")))
    with pytest.raises(BadInput, match="no store marker .* and is empty"):
        require_store(LocalStore(str(tmp_path)))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match=r"holds objects no repro store has \(notes.txt\)"):
        require_store(LocalStore(str(tmp_path)))
