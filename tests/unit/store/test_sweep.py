"""gc announces what it is about to delete (a sweep) before it re-checks the leases, and a push waits
for any sweep naming its keys after it leased them: a delete gc decided on before the push looked can
no longer land after the push found the object there and wrote its record (the lost-object race the
gc race test caught under load). Deterministic: gc is held inside its delete."""

from __future__ import annotations

import threading
import time

import pytest

from metaflow_repro.errors import InfraError
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.snapshot import _local_objects, gc, push, upload_one, verify
from tests.store_fakes import age, fake_run


class _HeldDelete(LocalStore):
    """A folder store whose first delete of a package file waits until the test lets it go."""

    def __init__(self, root: str):
        super().__init__(root)
        self.deciding = threading.Event()
        self.go = threading.Event()

    def delete(self, key: str) -> None:
        if key.startswith("packages/") and not self.deciding.is_set():
            self.deciding.set()
            assert self.go.wait(30)
        super().delete(key)


def test_a_push_that_finds_an_object_a_gc_is_deleting_waits_and_uploads_it_again(tmp_path):
    store = _HeldDelete(str(tmp_path / "store"))
    run = fake_run(tmp_path / "home", run_id="1", seed="s", n_packages=2)
    for u in _local_objects(run.record, run.settings, {}):  # a push killed after its uploads: nothing names them
        upload_one(store, u)
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            age(path)
    collector = threading.Thread(target=gc, args=(store,), kwargs={"grace_seconds": 0})
    collector.start()
    assert store.deciding.wait(30), "gc decided to delete a package file and is about to"
    pushing = threading.Thread(target=push, args=(run.record, store, run.settings))
    pushing.start()
    time.sleep(1.0)  # the push leased its keys and finds the object still there
    store.go.set()  # the delete gc decided on lands now
    collector.join(30)
    pushing.join(30)
    assert not collector.is_alive() and not pushing.is_alive()
    assert verify(run.record, store) == []
    assert list(store.list(layout.SWEEPS)) == [], "gc withdrew its sweep"


def test_a_sweep_that_is_not_a_list_of_keys_holds_nothing_back(tmp_path):
    from metaflow_repro.store.snapshot import wait_for_sweeps

    store = LocalStore(str(tmp_path / "store"))
    for i, body in enumerate([b"[", b'{"keys": [{"a": 1}, ["b"]]}', b'{"keys": 7}', b"{}"]):
        store.put_bytes(layout.sweep(f"{i:032x}"), body)
    wait_for_sweeps(store, {"packages/x"}, "a test", timeout=0)  # returns at once, raises nothing
    store.put_bytes(layout.sweep("f" * 32), b'{"keys": ["packages/x"]}')
    with pytest.raises(InfraError, match="a gc has been deleting objects of a test"):
        wait_for_sweeps(store, {"packages/x"}, "a test", timeout=0)
