"""Recorded runs in a store, read back: open the store a command names (else the settings' store),
load one run by its reference, list every run. Shared by the commands that read records
(store ls/show, diff, report, drift)."""

from __future__ import annotations

from metaflow_repro.model.record import RunRecord
from metaflow_repro.settings import Settings
from metaflow_repro.store import Store, open_store
from metaflow_repro.store.snapshot import Listing, load_record, parse_ref, scan_records


def open_named(settings: Settings, uri: str | None) -> Store:
    """The store at ``uri``, or the settings' store when the command named none."""
    return open_store(uri or settings.store)


def load(store: Store, ref: str) -> RunRecord:
    """One run: ``FlowName/run_id``, ``FlowName/latest`` or a record.json file."""
    return load_record(store, parse_ref(ref))


def listing(store: Store) -> Listing:
    """Every record in the store, and those that could not be read (each with why)."""
    return scan_records(store)
