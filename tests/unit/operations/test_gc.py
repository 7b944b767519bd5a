"""gc asks every place what it staged for the kept records' environments (``Place.staged_objects``):
the operation names no place, so a plugin's place keeps its own objects as Batch keeps its manifests."""

from __future__ import annotations

from metaflow_repro import hooks
from metaflow_repro.executors.local import LocalPlace
from metaflow_repro.model.interpreter import ExecutorKind
from metaflow_repro.operations.gc import gc
from metaflow_repro.store import LocalStore
from tests.store_fakes import aged_store

STAGED = "bootstrap/" + "0" * 64 + ".json"  # not a valid Batch manifest: Batch itself keeps nothing here
OTHER = "tools/uv/" + "1" * 64 + "/uv"


class StagingPlace(LocalPlace):
    kind = ExecutorKind.DOCKER

    def __init__(self):
        self.asked: list[set[str]] = []

    def staged_objects(self, store, envs):
        self.asked.append(envs)
        return {STAGED}


def _store(tmp_path) -> LocalStore:
    return aged_store(tmp_path / "store", STAGED, OTHER)


def test_what_a_place_staged_is_kept(tmp_path):
    place = StagingPlace()

    class Plugin:
        @hooks.hookimpl
        def repro_executors(self):
            return [place]

    plugin = Plugin()
    hooks.manager().register(plugin, name="test-gc-place")
    try:
        assert gc(_store(tmp_path), grace_seconds=0, dry_run=True) == [OTHER]
    finally:
        hooks.manager().unregister(plugin)
    assert place.asked == [set()]  # the store holds no record: no environment is kept


def test_the_builtin_places_keep_nothing_that_is_not_theirs(tmp_path):
    assert sorted(gc(_store(tmp_path), grace_seconds=0, dry_run=True)) == sorted([STAGED, OTHER])
