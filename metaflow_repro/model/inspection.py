"""A finished run as Metaflow's client reads it back, and its JSON codec.

``metaflow_repro.adapter.inspect_run`` builds it in a process of its own (so that Metaflow's client sees that
run's datastore) and prints it; the host decodes it here. That process imported the user's code and
read the run's datastore, so the document is untrusted: decoding checks every field (a step name, a
task id, a digest that becomes a file name) before a record is built from it. Its key names are
``protocol``'s ``RUN_*``, ``TASK_*``, ``ARTIFACT_*`` and ``INCLUDED_*``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from metaflow_extensions.repro.plugins import protocol as p
from metaflow_repro.model import validate as v
from metaflow_repro.model.record import Caught, caught_from_dict

_RUN_KEYS = frozenset(
    {
        p.RUN_METAFLOW_VERSION,
        p.RUN_PROJECT,
        p.RUN_PROJECT_BRANCH,
        p.RUN_SUCCESSFUL,
        p.RUN_FINISHED,
        p.RUN_CREATED_AT,
        p.RUN_FINISHED_AT,
        p.RUN_STEPS,
        p.RUN_PARAMETERS,
        p.RUN_INCLUDE_FILES,
        p.RUN_CONFIGS,
        p.RUN_INPUT_SIZES,
    }
)
_TASK_KEYS = frozenset(
    {
        p.TASK_ID,
        p.TASK_SUCCESSFUL,
        p.TASK_FINISHED,
        p.TASK_METADATA,
        p.TASK_DS_TYPE,
        p.TASK_DS_ROOT,
        p.TASK_FOREACH,
        p.TASK_ARTIFACTS,
        p.TASK_STDERR,
        p.TASK_CAUGHT,
    }
)
_ARTIFACT_KEYS = frozenset({p.ARTIFACT_SHA1, p.ARTIFACT_SIZE, p.ARTIFACT_TYPE})
_INCLUDED_KEYS = frozenset({p.INCLUDED_SHA256, p.INCLUDED_SIZE, p.INCLUDED_IS_TEXT, p.INCLUDED_ENCODING})
_FOREACH = re.compile(r"^(-|[0-9]+(\.[0-9]+)*)$")


@dataclass(frozen=True)
class InspectedArtifact:
    sha1: str
    size: int
    type: str


@dataclass(frozen=True)
class InspectedTask:
    task_id: str
    successful: bool
    finished: bool
    foreach: str  # the foreach index path: "-" outside any foreach, "1.0" nested
    metadata: dict[str, str] = field(default_factory=dict)  # repro's keys only (protocol.METADATA_PREFIX)
    ds_type: str = "local"
    ds_root: str | None = None
    artifacts: dict[str, InspectedArtifact] = field(default_factory=dict)
    stderr: str = ""  # the tail of a failed task's log
    #: the exception @catch handled: the task is successful (Metaflow runs on) but its step's code raised
    caught: Caught | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            p.TASK_ID: self.task_id,
            p.TASK_SUCCESSFUL: self.successful,
            p.TASK_FINISHED: self.finished,
            p.TASK_METADATA: dict(self.metadata),
            p.TASK_DS_TYPE: self.ds_type,
            p.TASK_DS_ROOT: self.ds_root,
            p.TASK_FOREACH: self.foreach,
            p.TASK_ARTIFACTS: {
                n: {p.ARTIFACT_SHA1: a.sha1, p.ARTIFACT_SIZE: a.size, p.ARTIFACT_TYPE: a.type}
                for n, a in self.artifacts.items()
            },
            p.TASK_STDERR: self.stderr,
            p.TASK_CAUGHT: None
            if self.caught is None
            else {
                p.CAUGHT_TYPE: self.caught.type,
                p.CAUGHT_MESSAGE: self.caught.message,
                p.CAUGHT_VAR: self.caught.var,
            },
        }


@dataclass(frozen=True)
class IncludedFile:
    """An IncludeFile's contents as the user's file had them (kept as ``inputs/sha256/<sha256>``)."""

    sha256: str
    size: int
    is_text: bool = True
    encoding: str = "utf-8"

    def to_dict(self) -> dict[str, Any]:
        return {
            p.INCLUDED_SHA256: self.sha256,
            p.INCLUDED_SIZE: self.size,
            p.INCLUDED_IS_TEXT: self.is_text,
            p.INCLUDED_ENCODING: self.encoding,
        }


@dataclass(frozen=True)
class RunInspection:
    """What the record of a finished run is built from (``metaflow_repro.adapter.metaflow.build_record``)."""

    successful: bool
    finished: bool
    steps: dict[str, tuple[InspectedTask, ...]]  # in the order Metaflow's client lists them
    metaflow_version: str = ""  # "" when the run carries no metaflow_version tag
    project: str = ""
    project_branch: str = ""
    created_at: str = ""
    finished_at: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # JSON values
    include_files: dict[str, IncludedFile] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)  # name -> JSON text
    input_sizes: dict[str, int] = field(default_factory=dict)  # sha1 -> size (input lineage copies)

    def task_reports(self) -> dict[str, list[dict[str, Any]]]:
        """Every step's tasks as plain data (what ``adapter.lineage`` reads their reports from)."""
        return {step: [t.to_dict() for t in tasks] for step, tasks in self.steps.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            p.RUN_METAFLOW_VERSION: self.metaflow_version,
            p.RUN_PROJECT: self.project,
            p.RUN_PROJECT_BRANCH: self.project_branch,
            p.RUN_SUCCESSFUL: self.successful,
            p.RUN_FINISHED: self.finished,
            p.RUN_CREATED_AT: self.created_at,
            p.RUN_FINISHED_AT: self.finished_at,
            p.RUN_STEPS: self.task_reports(),
            p.RUN_PARAMETERS: dict(self.parameters),
            p.RUN_INCLUDE_FILES: {n: f.to_dict() for n, f in self.include_files.items()},
            p.RUN_CONFIGS: dict(self.configs),
            p.RUN_INPUT_SIZES: dict(self.input_sizes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def from_json(text: str, where: str) -> RunInspection:
    """Decode and check a run read back (``where`` names it in errors: ``run Flow/12``)."""
    at = v.At(where)
    return from_dict(v.load_json(text, at, "JSON"), at)


def from_dict(doc: Any, at: v.At) -> RunInspection:
    v.only(v.of_type(doc, dict, at), _RUN_KEYS, at)
    return RunInspection(
        successful=v.need(doc, p.RUN_SUCCESSFUL, bool, at),
        finished=v.need(doc, p.RUN_FINISHED, bool, at),
        steps=v.table_of(v.need(doc, p.RUN_STEPS, dict, at), at / p.RUN_STEPS, v.identifier, _tasks),
        metaflow_version=v.opt(doc, p.RUN_METAFLOW_VERSION, str, "", at),
        project=v.opt(doc, p.RUN_PROJECT, str, "", at),
        project_branch=v.opt(doc, p.RUN_PROJECT_BRANCH, str, "", at),
        created_at=v.opt(doc, p.RUN_CREATED_AT, str, "", at),
        finished_at=v.opt(doc, p.RUN_FINISHED_AT, str, "", at),
        parameters=v.table_of(
            v.opt(doc, p.RUN_PARAMETERS, dict, {}, at), at / p.RUN_PARAMETERS, _parameter_name, _json_value
        ),
        include_files=v.table_of(
            v.opt(doc, p.RUN_INCLUDE_FILES, dict, {}, at), at / p.RUN_INCLUDE_FILES, _parameter_name, _included
        ),
        configs=v.table_of(v.opt(doc, p.RUN_CONFIGS, dict, {}, at), at / p.RUN_CONFIGS, _parameter_name, v.string),
        input_sizes=v.table_of(v.opt(doc, p.RUN_INPUT_SIZES, dict, {}, at), at / p.RUN_INPUT_SIZES, _sha1, _size),
    )


def _tasks(value: Any, at: v.At) -> tuple[InspectedTask, ...]:
    return tuple(v.list_of(value, at, _task))


def _task(d: Any, at: v.At) -> InspectedTask:
    v.only(v.of_type(d, dict, at), _TASK_KEYS, at)
    return InspectedTask(
        task_id=v.name(v.need(d, p.TASK_ID, str, at), at / p.TASK_ID),
        successful=v.need(d, p.TASK_SUCCESSFUL, bool, at),
        finished=v.need(d, p.TASK_FINISHED, bool, at),
        foreach=v.matching(
            v.need(d, p.TASK_FOREACH, str, at), _FOREACH, 'a foreach index path ("-", "3", "1.2")', at / p.TASK_FOREACH
        ),
        metadata=v.table_of(v.opt(d, p.TASK_METADATA, dict, {}, at), at / p.TASK_METADATA, _metadata_key, v.string),
        ds_type=v.opt(d, p.TASK_DS_TYPE, str, "local", at),
        ds_root=v.opt(d, p.TASK_DS_ROOT, (str, type(None)), None, at),
        artifacts=v.table_of(v.opt(d, p.TASK_ARTIFACTS, dict, {}, at), at / p.TASK_ARTIFACTS, v.name, _artifact),
        stderr=v.opt(d, p.TASK_STDERR, str, "", at),
        caught=caught_from_dict(d[p.TASK_CAUGHT], at / p.TASK_CAUGHT) if d.get(p.TASK_CAUGHT) is not None else None,
    )


def _artifact(d: Any, at: v.At) -> InspectedArtifact:
    v.only(v.of_type(d, dict, at), _ARTIFACT_KEYS, at)
    return InspectedArtifact(
        sha1=_sha1(v.need(d, p.ARTIFACT_SHA1, str, at), at / p.ARTIFACT_SHA1),
        size=_size(v.need(d, p.ARTIFACT_SIZE, int, at), at / p.ARTIFACT_SIZE),
        type=v.need(d, p.ARTIFACT_TYPE, str, at),
    )


def _included(d: Any, at: v.At) -> IncludedFile:
    v.only(v.of_type(d, dict, at), _INCLUDED_KEYS, at)
    return IncludedFile(
        # it names the file the contents are kept in
        sha256=v.hex_digest(v.need(d, p.INCLUDED_SHA256, str, at), 64, at / p.INCLUDED_SHA256),
        size=_size(v.need(d, p.INCLUDED_SIZE, int, at), at / p.INCLUDED_SIZE),
        is_text=v.need(d, p.INCLUDED_IS_TEXT, bool, at),
        encoding=v.need(d, p.INCLUDED_ENCODING, str, at),
    )


def _parameter_name(value: Any, at: v.At) -> str:
    return v.matching(value, v.PARAMETER_NAME, "a parameter name", at)


def _metadata_key(value: Any, at: v.At) -> str:
    if not isinstance(value, str) or not value.startswith(p.METADATA_PREFIX):
        at.fail(value, f"a metadata key of repro's (starting with {p.METADATA_PREFIX!r})")
    return value


def _sha1(value: Any, at: v.At) -> str:
    return v.hex_digest(value, 40, at)


def _size(value: Any, at: v.At) -> int:
    size: int = v.of_type(value, int, at)
    if size < 0:
        at.fail(value, "a size in bytes (>= 0)")
    return size


def _json_value(value: Any, at: v.At) -> Any:
    """A parameter's value: anything JSON holds (the inspecting process wrote a value JSON cannot hold
    as its text)."""
    return value
