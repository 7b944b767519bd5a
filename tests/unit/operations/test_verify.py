"""What `repro store verify` counts as bad (metaflow_repro.operations.verify.StoreCheck)."""

from __future__ import annotations

from metaflow_repro.operations.verify import StoreCheck


def test_store_verify_counts_unreadable_records_and_records_with_problems():
    found = StoreCheck(broken=[("runs/F/1/record.json", "not JSON")], results=[("F/2", []), ("F/3", ["gone"])])
    assert found.bad == 2
