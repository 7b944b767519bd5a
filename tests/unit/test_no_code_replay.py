"""A failed replay none of whose tasks started (e.g. every Batch job failed before its step) has no code
package (code_sha256 NO_CODE); its record is still written to the store (issue 13)."""

from __future__ import annotations

from dataclasses import replace

from repro.model.record import NO_CODE
from repro.store import layout, open_store
from repro.store.snapshot import named_objects, push_replay_record
from tests.helpers import make_record


def test_a_failed_replay_with_no_code_package_is_recorded_in_the_store(tmp_path):
    record = replace(make_record(run_id="9", status="failed"), code_sha256=NO_CODE, replay_of="F/1")
    assert layout.code(NO_CODE) not in named_objects(record)
    store = open_store((tmp_path / "store").as_uri())
    for key in named_objects(record):  # everything else it names is the replayed run's, in the store
        store.put_bytes(key, b"x")
    key = push_replay_record(record, store)
    assert key == layout.record(layout.flow_dir(record.flow, record.identity), "9")
    assert store.get_bytes(key) == record.to_json().encode()
    assert layout.code("c" * 64) in named_objects(make_record())  # a real code package stays named
