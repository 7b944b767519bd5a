"""The store's gc knows records and leases only; what else is live (Batch staging's objects) comes
from its caller (repro.operations.gc), so repro.store imports no executor (issue 21, item 1)."""

from __future__ import annotations

import subprocess
import sys

from repro.store import LocalStore
from repro.store.snapshot import gc
from tests.store_fakes import age

ORPHAN = "bootstrap/" + "0" * 64 + ".json"
OTHER = "tools/uv/" + "1" * 64 + "/uv"


def _store(tmp_path) -> LocalStore:
    for key in (ORPHAN, OTHER):
        path = tmp_path / "store" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        age(path)
    return LocalStore(str(tmp_path / "store"))


def test_what_the_caller_says_is_live_is_kept_and_it_sees_the_records(tmp_path):
    store = _store(tmp_path)
    seen = []

    def live(records):
        seen.append(list(records))
        return {ORPHAN}

    assert gc(store, grace_seconds=0, dry_run=True, live=live) == [OTHER]
    assert seen == [[]]  # the store holds no records


def test_without_a_caller_nothing_beyond_records_and_leases_is_kept(tmp_path):
    assert sorted(gc(_store(tmp_path), grace_seconds=0, dry_run=True)) == sorted([ORPHAN, OTHER])


def test_the_store_imports_no_executor():
    probe = "import sys, repro.store.snapshot; print([m for m in sys.modules if m.startswith('repro.executors')])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
