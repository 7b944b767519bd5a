"""Push a run recorded on this machine to a store: completes a push that failed after the run (the
record stays under REPRO_HOME until a push succeeds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metaflow_repro.model.record import RunRecord
from metaflow_repro.operations.records import open_named
from metaflow_repro.operations.run import push_saved
from metaflow_repro.settings import Settings

Log = Callable[[str], None]


@dataclass(frozen=True)
class Pushed:
    record: RunRecord
    store: str  # the store's URI


def push(ref: str, store_uri: str | None, settings: Settings, log: Log) -> Pushed:
    """``ref``: ``FlowName/run_id``, ``FlowName/latest`` or a record.json file. The store is opened
    first, so a store URI that cannot be used is said before anything is read."""
    store = open_named(settings, store_uri)
    return Pushed(push_saved(ref, store_uri, settings, log=log), store.uri)
