"""metaflow_repro.operations.audit: audits kept in a store under the sha256 of their bytes, read back checked."""

from __future__ import annotations

import hashlib

import pytest

from metaflow_repro.errors import EXIT_INFRA
from metaflow_repro.model.audit import Audit, AuditEntry, AuditVerdict, Selection
from metaflow_repro.operations.audit import load_audits, read_audit, save_audit
from metaflow_repro.store import layout, open_store
from metaflow_repro.store.snapshot import StoreObjectCorrupt


def audit(finished: str) -> Audit:
    entries = (AuditEntry("F/1", "F", "1", "2026-12-01T00:00:00+00:00", AuditVerdict.IDENTICAL),)
    return Audit("2026-12-07T00:00:00+00:00", finished, "file:///s", "local", "1", "2.19", Selection(), entries)


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri())


def test_an_audit_is_kept_under_the_sha256_of_its_bytes_and_read_back(store):
    key = save_audit(store, audit("2026-12-07T01:00:00+00:00"))
    assert key == layout.audit(hashlib.sha256(store.get_bytes(key)).hexdigest())
    assert read_audit(store, key) == audit("2026-12-07T01:00:00+00:00")
    save_audit(store, audit("2026-12-08T01:00:00+00:00"))
    store.put_bytes("audits/notes.txt", b"not an audit")  # of no audit shape: ignored
    assert sorted(a.finished_at for a in load_audits(store)) == [
        "2026-12-07T01:00:00+00:00",
        "2026-12-08T01:00:00+00:00",
    ]
    assert len(load_audits(store, limit=1)) == 1


def test_gc_never_sweeps_audits():
    assert not any(area.startswith("audits") for area in layout.GC_AREAS)


def test_an_audit_whose_bytes_changed_is_corrupt_exit_3_naming_it(store):
    key = save_audit(store, audit("2026-12-07T01:00:00+00:00"))
    store.put_bytes(key, store.get_bytes(key).replace(b"identical", b"different"))
    with pytest.raises(StoreObjectCorrupt, match=f"{key} is corrupt: its bytes do not match") as info:
        load_audits(store)
    assert info.value.exit_code == EXIT_INFRA


def test_an_audit_that_hashes_right_but_is_no_audit_is_corrupt(store):
    data = b'{"schema": "repro.audit", "schema_version": 1, "entries": "all fine"}'
    key = layout.audit(hashlib.sha256(data).hexdigest())
    store.put_bytes(key, data)
    with pytest.raises(StoreObjectCorrupt, match="is corrupt: .*missing key 'started_at'"):
        read_audit(store, key)


def test_on_batch_the_first_run_replays_alone_then_the_others_n_at_a_time(monkeypatch):
    """What the first Batch replay stages (the uv binary, an interpreter snapshot, the envs' packages, put in
    the store by whichever replay finds them missing) is there before the others start; elsewhere a build
    waits on its file lock, so all start at once."""
    import threading
    import time

    from metaflow_repro.model.audit import AuditEntry, AuditVerdict
    from metaflow_repro.operations import audit as op

    lock, running, seen = threading.Lock(), [], []

    def replay_one(record, store, settings, options, installed):
        with lock:
            running.append(record)
            seen.append((record, tuple(running)))
        time.sleep(0.05)
        with lock:
            running.remove(record)
        return AuditEntry(record, "F", record, "", AuditVerdict.IDENTICAL)

    monkeypatch.setattr(op, "replay_one", replay_one)
    progress: list[tuple[int, int]] = []
    runs = [f"r{i}" for i in range(7)]
    batch = op.AuditOptions(on="batch", jobs=3)
    entries = op._replay_all(runs, None, None, batch, "", lambda d, t, e: progress.append((d, t)))
    assert sorted(e.run for e in entries) == runs
    assert seen[0] == ("r0", ("r0",))  # alone
    assert max(len(at_once) for _, at_once in seen) == 3  # then three at a time
    assert all("r0" not in at_once for _, at_once in seen[1:])
    assert progress == [(i, 7) for i in range(1, 8)]
    assert len(op._replay_all(runs[:1], None, None, batch, "", None)) == 1
    seen.clear()
    op._replay_all(runs, None, None, op.AuditOptions(jobs=3), "", None)  # local: three at once from the start
    assert max(len(at_once) for _, at_once in seen[:3]) == 3
    serial = op._replay_all(runs, None, None, op.AuditOptions(jobs=1), "", None)
    assert [e.run for e in serial] == runs
