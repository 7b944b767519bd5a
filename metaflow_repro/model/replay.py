"""What one replay run produced, before any verdict: ``RunResult`` and its JSON codec. Pure.

A replay runs somewhere (this process, a container, AWS Batch jobs started from here) and says what
ran there; the operation judges it afterwards, once, on the host. A container hands its result over
as a file in a folder the host mounts, so the host decodes it like any other untrusted document:
every field is checked, an unknown field or a malformed value is refused naming where it is.
The replay's record itself is not part of the document: it travels through the store, where the
host reads it back by ``recorded`` and decodes it with the record's own strict decoder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from metaflow_repro.model import validate as v
from metaflow_repro.model.interpreter import Executor
from metaflow_repro.model.record import RunRecord

RESULT_SCHEMA = "repro.run-result"
#: the largest result document decoded (a failure's output is a task's stderr tail, not a whole log)
MAX_RESULT_BYTES = 8 << 20
_RESULT_KEYS = frozenset(
    {"schema", "executor", "recorded", "saved", "workdir", "exit_code", "failure", "error", "error_code"}
)
_FAILURE_KEYS = frozenset({"error", "step", "task", "logs", "output"})
#: a store key: plain relative path components (the host checks it is a record's key of the right run)
_KEY = re.compile(r"^[A-Za-z0-9_@.+~\-]+(/[A-Za-z0-9_@.+~\-]+)*$")


@dataclass(frozen=True)
class RunFailure:
    """Why a replay failed: the step (and task) that failed, its error, and how to see its logs."""

    error: str  # the error's last line (or why the run did not start)
    step: str = ""
    task: str = ""  # pathspec Flow/run/step/task of the failed task
    logs: str = ""  # a shell command that shows the task's logs
    output: str = ""  # the error's full text (the task's stderr tail, or Metaflow's output)

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "step": self.step, "task": self.task, "logs": self.logs, "output": self.output}

    @classmethod
    def from_dict(cls, d: Any, at: v.At) -> RunFailure:
        d = v.only(v.of_type(d, dict, at), _FAILURE_KEYS, at)
        return cls(**{k: v.opt(d, k, str, "", at) for k in _FAILURE_KEYS})


@dataclass(frozen=True)
class RunResult:
    """What a replay run produced, verdict-less: what ran it, where its record is, how it ended.

    ``error`` (with ``error_code``, an exit code) says the replay stopped before it could run at all
    (bad input, an object of the store that is missing or corrupt): the host raises it again.
    ``failure`` says it was started but failed (or never started its flow); ``record`` is None then
    when no run was recorded."""

    executor: Executor  # what ran it (the replay's record says the same)
    recorded: str = ""  # the replay's record's key in the store ("" when it could not be written there)
    saved: str = ""  # the replay's record in REPRO_HOME of the machine that ran it
    workdir: str = ""  # the replay's working folder (code, datastore, logs) where it ran
    exit_code: int = 0  # the Metaflow process's exit code
    failure: RunFailure | None = None
    error: str = ""  # why the replay could not run (a ReproError's message)
    error_code: int = 0  # that error's exit code
    record: RunRecord | None = None  # the replay's record (not in the document: read from the store)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "executor": self.executor.to_dict(),
            "recorded": self.recorded,
            "saved": self.saved,
            "workdir": self.workdir,
            "exit_code": self.exit_code,
            "failure": self.failure.to_dict() if self.failure else None,
            "error": self.error,
            "error_code": self.error_code,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True) + "\n"

    def with_record(self, record: RunRecord | None) -> RunResult:
        return replace(self, record=record)

    @classmethod
    def from_dict(cls, d: Any, at: v.At) -> RunResult:
        d = v.only(v.of_type(d, dict, at), _RESULT_KEYS, at)
        if v.need(d, "schema", str, at) != RESULT_SCHEMA:
            (at / "schema").fail(d["schema"], repr(RESULT_SCHEMA))
        recorded = v.opt(d, "recorded", str, "", at)
        if recorded and (not _KEY.match(recorded) or ".." in recorded.split("/")):
            (at / "recorded").fail(recorded, "a store key")
        failure = d.get("failure")
        return cls(
            executor=Executor.from_dict(v.need(d, "executor", dict, at), at / "executor"),
            recorded=recorded,
            saved=v.opt(d, "saved", str, "", at),
            workdir=v.opt(d, "workdir", str, "", at),
            exit_code=_code(d, "exit_code", at),
            failure=None if failure is None else RunFailure.from_dict(failure, at / "failure"),
            error=v.opt(d, "error", str, "", at),
            error_code=_code(d, "error_code", at),
        )


def _code(d: dict[str, Any], key: str, at: v.At) -> int:
    code = v.opt(d, key, int, 0, at)
    if isinstance(code, bool) or not -255 <= code <= 255:
        (at / key).fail(code, "an exit code")
    return int(code)


def parse_result(data: bytes, where: str) -> RunResult:
    """Decode and check a result document (``where`` names it in every refusal)."""
    if len(data) > MAX_RESULT_BYTES:
        raise v.Invalid(v.At(where), f"{len(data)} bytes", f"{where}: a run result of {len(data)} bytes is too large")
    doc = v.load_json(data, v.At(where), "a run result", max_bytes=MAX_RESULT_BYTES)
    return RunResult.from_dict(doc, v.At(where))
