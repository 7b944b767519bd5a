"""Diff: compare two recorded runs of one flow artifact by artifact (and say whether their code
changed). Runs of two different flows are refused; runs of one class name in two flow files only
when asked to."""

from __future__ import annotations

from dataclasses import dataclass

from metaflow_repro.checks.compare import Comparison
from metaflow_repro.model.record import RunRecord
from metaflow_repro.operations.records import load, open_named
from metaflow_repro.operations.run import check_same_flow, compare_runs
from metaflow_repro.settings import Settings


@dataclass(frozen=True)
class Diff:
    a: RunRecord
    b: RunRecord
    comparison: Comparison


def diff(settings: Settings, store_uri: str | None, ref_a: str, ref_b: str, allow_other_flow: bool = False) -> Diff:
    store = open_named(settings, store_uri)
    a, b = load(store, ref_a), load(store, ref_b)
    check_same_flow(a, b, allow_other_flow)
    return Diff(a, b, compare_runs(a, b, store, settings))
