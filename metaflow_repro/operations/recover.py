"""Recover: record and push the runs Metaflow finished but repro did not record (repro was stopped
after Metaflow's ``Done!``). The recording itself is ``repro run``'s (``operations.run.recover``);
this module is where the command line and ``repro run``'s reminder find it by name."""

from __future__ import annotations

from metaflow_repro.adapter import pending
from metaflow_repro.operations.run import recover
from metaflow_repro.settings import Settings

__all__ = ["pending_count", "recover"]


def pending_count(settings: Settings) -> int:
    """How many finished runs wait to be recorded (``repro run`` reminds of them before it starts)."""
    return len(pending.pending(settings.home))
