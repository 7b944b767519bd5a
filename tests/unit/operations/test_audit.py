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
