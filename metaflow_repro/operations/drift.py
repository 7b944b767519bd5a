"""Drift: spec, resolution, runtime and input drift of flows, and (asked for) how their locks differ
from the environments of a recorded run.

Input drift is judged against the run given with ``against``, else against each flow's latest
recorded run when the store can be read (when it cannot, the other kinds are still checked)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.checks.drift import check
from metaflow_repro.env.engine import open_flow
from metaflow_repro.errors import BadInput, ReproError
from metaflow_repro.model.findings import Finding
from metaflow_repro.operations.flows import flow_files
from metaflow_repro.operations.records import load, open_named
from metaflow_repro.operations.run import latest_record
from metaflow_repro.settings import Settings
from metaflow_repro.store import Store

Log = Callable[[str], None]


@dataclass(frozen=True)
class FlowDrift:
    path: Path
    findings: list[Finding]  # empty: no drift


def drift(
    settings: Settings, paths: list[str], against: str | None, store_uri: str | None, resolve: bool, log: Log
) -> Iterator[FlowDrift]:
    """Each flow's drift, one flow at a time (a flow is re-resolved only when its turn comes)."""
    record = load(open_named(settings, store_uri), against) if against else None
    flows = [open_flow(path) for path in flow_files(paths)]
    if record is not None and record.flow not in {f.name for f in flows}:
        raise BadInput(
            f"--against {against}: that is a run of {record.flow}, which none of the flow files "
            f"defines ({', '.join(f.name for f in flows)})"
        )
    store = _readable_store(settings, store_uri) if record is None else None
    for flow in flows:
        mine = record if record and record.flow == flow.name else None
        recorded = mine or (latest_record(store, flow, log=log) if store is not None else None)
        yield FlowDrift(flow.path, check(flow, resolution=resolve, against=mine, inputs_of=recorded))


def _readable_store(settings: Settings, store_uri: str | None) -> Store | None:
    """The store the latest runs are read from; None when it cannot be opened (no input drift then)."""
    try:
        return open_named(settings, store_uri)
    except ReproError:
        return None
