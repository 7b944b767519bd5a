"""Recover: record and push the runs ``repro run`` started but did not record and push (repro was
stopped, or its push failed). The recording itself is ``repro run``'s (``operations.run.recover``);
this module is where the command line and ``repro run``'s reminder find it by name."""

from __future__ import annotations

from metaflow_repro.adapter import pending
from metaflow_repro.operations.run import recover
from metaflow_repro.settings import Settings

__all__ = ["pending_count", "recover", "reminder"]


def pending_count(settings: Settings) -> int:
    """How many runs wait for ``repro recover`` (not recorded, or recorded and not pushed)."""
    return sum(pending.waiting(settings.home).values())


def reminder(settings: Settings) -> list[str]:
    """What ``repro run`` says before it starts about runs ``repro recover`` would record or push."""
    counts = pending.waiting(settings.home)
    unpushed = counts[pending.RECORDED]
    unrecorded = counts[pending.STARTED] + counts[pending.FINISHED]
    lines = []
    if unpushed:
        lines.append(f"{_runs(unpushed)} recorded here {_be(unpushed)} not pushed: repro recover")
    if unrecorded:
        lines.append(
            f"{_runs(unrecorded)} started here {_be(unrecorded)} not recorded (repro was stopped): repro recover"
        )
    return lines


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


def _be(n: int) -> str:
    return "is" if n == 1 else "are"
