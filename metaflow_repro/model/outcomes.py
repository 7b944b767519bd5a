"""What a recorded run's steps ended as, beyond passed and failed, read from the record alone: a step a
``switch`` did not take, and a task whose exception ``@catch`` handled. Pure.

Both are successes to Metaflow (the run goes on), and to repro: a step not taken is "not run" with
the switch's choice as its reason, a caught exception is the step's outcome "caught".
"""

from __future__ import annotations

from metaflow_repro.model.record import Caught, RunRecord, RunStatus

#: the artifact Metaflow's ``@catch`` keeps the exception it handled in (besides the user's ``var``)
CATCH_ARTIFACT = "_catch_exception"


def _predecessors(record: RunRecord) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for step, nexts in record.graph.items():
        for n in nexts:
            out.setdefault(n, []).append(step)
    return out


def switch_taken(record: RunRecord, step: str) -> tuple[str, str] | None:
    """(switch step, the branch it took) when ``step`` did not run because a ``switch`` before it took
    another branch; None when it ran, or did not run for another reason (the run failed before it).

    The switch is the nearest step before it that ran: it ran, and so did one of its next steps, but
    not the one that leads here. Only in a run that succeeded: in a failed one, a step may also have
    been left out because a branch beside it failed, which the record cannot tell from a switch."""
    ran = {s for s, r in record.steps.items() if r.tasks}
    if record.status is not RunStatus.SUCCESS or step in ran or step not in record.steps:
        return None
    before = _predecessors(record)
    seen, todo = {step}, [step]
    while todo:
        current = todo.pop(0)
        for p in before.get(current, []):
            if p in ran:
                taken = [n for n in record.graph.get(p, ()) if n in ran]
                if taken:
                    return p, taken[0]
            elif p not in seen:
                seen.add(p)
                todo.append(p)
    return None


def not_taken(record: RunRecord) -> dict[str, tuple[str, str]]:
    """Every step a switch did not take: step -> (switch step, the branch it took)."""
    out = {}
    for step in record.steps:
        took = switch_taken(record, step)
        if took:
            out[step] = took
    return out


def not_taken_reason(switch: str, branch: str) -> str:
    return f"the switch in {switch} took {branch}"


def caught(record: RunRecord, step: str) -> list[tuple[str, Caught]]:
    """(task key, the exception @catch handled) of each task of ``step`` whose exception was caught."""
    s = record.steps.get(step)
    return [(key, t.caught) for key, t in s.tasks.items() if t.caught is not None] if s else []


def caught_message(record: RunRecord, step: str) -> str:
    """One line per caught task of ``step`` ("" when none): ``caught ValueError: x is odd (in failed)``."""
    lines = []
    for key, c in caught(record, step):
        lines.append(c.describe() + (f" [task {key}]" if key != "-" else ""))
    return "\n".join(lines)
