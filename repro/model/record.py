"""RunRecord: what a run was (environments, fingerprints, artifacts, pickle checks), as versioned JSON.

Pure: building from Metaflow lives in ``collect``, storage in ``snapshot``. The JSON is the
public, documented schema (``SCHEMA_VERSION``); readers refuse records from a newer schema.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from repro.errors import BadInput

SCHEMA = "repro.run-record"
SCHEMA_VERSION = 1
NO_FOREACH = "-"  # task key of a task outside any foreach


@dataclass(frozen=True)
class ArtifactRecord:
    sha1: str  # Metaflow's content hash: sha1 of the pickled bytes
    size: int
    type: str
    stored: bool = False  # a copy of the blob is in the store (artifacts/sha1/..)


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    env_id: str  # "disabled" for steps outside isolation
    fingerprint: str  # digest of the environment as seen from inside the task
    interpreter: str
    artifacts: dict = field(default_factory=dict)  # name -> ArtifactRecord


@dataclass(frozen=True)
class StepRecord:
    spec_id: str
    env_id: str
    disabled: bool
    tasks: dict = field(default_factory=dict)  # foreach index path ("-", "3", "1.2") -> TaskRecord


@dataclass(frozen=True)
class PickleCheck:
    step: str
    task: str
    artifact: str
    reader_env: str
    reader_steps: tuple
    status: str  # "ok" | "warning" | "fails"
    detail: str = ""
    static: str = ""  # modules the pickle references whose versions differ, from its opcodes


@dataclass(frozen=True)
class RunRecord:
    flow: str
    run_id: str
    flow_file: str
    code_sha256: str
    lock_sha256: str
    parameters: dict
    pythonhashseed: str
    metaflow_version: str
    repro_version: str
    host: dict
    datastore: dict
    steps: dict  # step -> StepRecord, in graph order
    envs: dict  # env id -> {"platform", "python", "packages": [...]} (what the store keeps)
    created_at: str = ""
    duration_s: float = 0.0
    status: str = "success"
    pickle_checks: tuple = ()
    settings: dict = field(default_factory=dict)  # settings that shape specs (conda_source), for replays
    graph: dict = field(default_factory=dict)  # step -> steps it goes to next
    step_order: tuple = ()  # graph order (JSON objects have none)

    @property
    def ref(self) -> str:
        return f"{self.flow}/{self.run_id}"

    def package_shas(self) -> dict:
        """sha256 -> file name of every package file the record's environments need."""
        out = {}
        for env in self.envs.values():
            for p in env["packages"]:
                out[p["sha256"]] = p["file"]
        return out

    def artifact_shas(self, stored_only: bool = True) -> set:
        return {a.sha1 for s in self.steps.values() for t in s.tasks.values() for a in t.artifacts.values()
                if a.stored or not stored_only}

    def to_json(self) -> str:
        doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **asdict(self)}
        doc["pickle_checks"] = [asdict(c) for c in self.pickle_checks]
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def from_json(text: str, where: str) -> RunRecord:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{where}: not a run record (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BadInput(f"{where}: not a repro run record (schema is {doc.get('schema') if isinstance(doc, dict) else None!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise BadInput(f"{where}: unknown run record schema version {version!r}")
    if version > SCHEMA_VERSION:
        raise BadInput(f"{where}: this run record uses schema version {version}, newer than this repro "
                       f"understands ({SCHEMA_VERSION}); upgrade repro to read it")
    try:
        steps = {}
        for name, s in doc["steps"].items():
            tasks = {}
            for key, t in s["tasks"].items():
                arts = {n: ArtifactRecord(**a) for n, a in t["artifacts"].items()}
                tasks[key] = TaskRecord(**{**t, "artifacts": arts})
            steps[name] = StepRecord(**{**s, "tasks": tasks})
        checks = tuple(PickleCheck(**{**c, "reader_steps": tuple(c["reader_steps"])}) for c in doc.get("pickle_checks", []))
        fields = {k: v for k, v in doc.items()
                  if k not in ("schema", "schema_version", "steps", "pickle_checks", "step_order", "graph")}
        order = tuple(doc.get("step_order") or steps)
        steps = {name: steps[name] for name in order if name in steps}
        graph = {k: tuple(v) for k, v in doc.get("graph", {}).items()}
        return RunRecord(**fields, steps=steps, pickle_checks=checks, step_order=order, graph=graph)
    except (KeyError, TypeError) as exc:
        raise BadInput(f"{where}: malformed run record ({type(exc).__name__}: {exc})") from None
