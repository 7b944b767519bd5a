"""Findings: every check's result as data (what, where, old -> new), never as a sentence to parse.

Drift, comparisons, pickle checks and task failures all produce ``Finding`` objects. Items, the
command line and reports select them by field (``kind``, ``step``, ``severity``); the
``message`` is for people only and is never read back by code. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class Choice(str, Enum):
    """A string enum that prints as its value on every Python (3.12 changed ``format``)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Kind(Choice):
    #: the flow's declarations no longer match the lock (`repro lock --check`)
    SPEC_DRIFT = "spec drift"
    #: resolving the same declarations now gives another package set
    RESOLUTION_DRIFT = "resolution drift"
    #: a built environment on disk no longer matches its lock
    RUNTIME_DRIFT = "runtime drift"
    #: the lock names other environments than a recorded run used (`repro drift --against`)
    AGAINST_DRIFT = "against drift"
    #: a run of another flow that a step read as "latest" is no longer the latest (input lineage)
    INPUT_DRIFT = "input drift"
    #: a task of the step failed
    TASK_FAILED = "task failed"
    #: the step never ran (an earlier step failed)
    NOT_RUN = "not run"
    #: an artifact and an environment that reads it (see ``PickleStatus``)
    PICKLE = "pickle"
    #: an artifact compared with another run's (see ``Verdict``)
    ARTIFACT = "artifact"
    #: an artifact of the run replayed elsewhere (``--repro-on docker|batch``) differs, or a step failed there
    REPLAY = "replay"
    #: a step read something a replay cannot give back (strict mode: ``hermetic``)
    NOT_HERMETIC = "not hermetic"
    #: the flow could not be loaded, locked or run at all
    FLOW_ERROR = "flow error"


class Severity(Choice):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


#: the drift kinds, in the order they are reported
DRIFT_KINDS = (Kind.SPEC_DRIFT, Kind.RESOLUTION_DRIFT, Kind.RUNTIME_DRIFT, Kind.AGAINST_DRIFT, Kind.INPUT_DRIFT)


@dataclass(frozen=True)
class Finding:
    kind: Kind
    message: str  # for people; never parsed
    step: str = ""  # "" when it concerns the whole flow
    task: str = ""  # foreach index path ("-" outside a foreach); "" when not about one task
    env_id: str = ""
    subject: str = ""  # what it is about: a package, an artifact, "python", "platform:linux-64", "step"
    old: str = ""
    new: str = ""
    platform: str = ""
    severity: Severity = Severity.ERROR

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"], d["severity"] = self.kind.value, self.severity.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(**{**d, "kind": Kind(d["kind"]), "severity": Severity(d.get("severity", "error"))})

    def line(self) -> str:
        """One line for a terminal: where, then the message."""
        where = self.step
        if self.platform:
            where += f" ({self.platform})"
        elif self.env_id and self.step:
            where += f" (env {self.env_id[:12]})"
        return f"{where}: {self.message}" if where else self.message


def select(
    findings: Iterable[Finding],
    *,
    kind: Kind | Iterable[Kind] | None = None,
    step: str | None = None,
    severity: Severity | None = None,
) -> list[Finding]:
    """The findings matching every given field."""
    kinds = None if kind is None else ({kind} if isinstance(kind, Kind) else set(kind))
    return [
        f
        for f in findings
        if (kinds is None or f.kind in kinds)
        and (step is None or f.step == step)
        and (severity is None or f.severity == severity)
    ]
