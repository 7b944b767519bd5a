"""RunRecord: what a run was (environments, fingerprints, artifacts, pickle checks), as versioned JSON.

Pure: building from Metaflow lives in ``collect``, storage in ``snapshot``. The JSON is the
public, documented schema (``SCHEMA_VERSION``); readers refuse records from a newer schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from metaflow_repro.errors import BadInput
from metaflow_repro.model import validate as v
from metaflow_repro.model.findings import Choice
from metaflow_repro.model.interpreter import Executor, InterpreterSnapshot
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.settings import HASH_SEED, recorded_setting_problem

SCHEMA = "repro.run-record"
SCHEMA_VERSION = 6  # 2: replay_of, include_files, configs, run_options; 3: inputs, interpreters, executor;
# 4: a task's caught exception; 5: data_files, reads (and their hosts, loopback), s3_inputs, nondeterministic,
# executor.image_sha256, image_given; 6: executor.image_digest, hybrid (a `repro bisect` hybrid run), bytecode
# (older still read)
NO_FOREACH = "-"  # task key of a task outside any foreach
#: code_sha256 of a failed run no task of which got as far as its step (no code package was made): a
#: record naming it names no code object in the store
NO_CODE = "0" * 64
#: the Metaflow `run` options a recorded run may pass on to its replay: they shape the run's graph and
#: results; anything else in a record (``--run-id-file`` writes a file anywhere) is refused
REPLAYED_RUN_OPTIONS = frozenset(
    {"--max-num-splits", "--max-workers", "--tag", "--with", "--namespace", "--max-log-size"}
)


class RunStatus(Choice):
    """How the recorded run ended (``RunRecord.status``)."""

    SUCCESS = "success"
    FAILED = "failed"


class PickleStatus(Choice):
    """Whether an environment that reads an artifact can unpickle it (``PickleCheck.status``)."""

    OK = "ok"
    WARNING = "warning"  # loads, but module versions differ between writer and reader
    FAILS = "fails"


@dataclass(frozen=True)
class ArtifactRecord:
    sha1: str  # Metaflow's content hash: sha1 of the pickled bytes
    size: int
    type: str
    stored: bool = False  # a copy of the blob is in the store (artifacts/sha1/..)


@dataclass(frozen=True)
class Caught:
    """An exception ``@catch`` handled: the task succeeded (Metaflow runs on), its step's work did not."""

    type: str  # "module.Class" ("builtins.ValueError"), as Metaflow names it
    message: str
    var: str = ""  # the artifact ``@catch(var=...)`` keeps it in; "" without one

    @property
    def short_type(self) -> str:
        """The class name, with its module unless that is ``builtins``."""
        return self.type[len("builtins.") :] if self.type.startswith("builtins.") else self.type

    def describe(self) -> str:
        """One line for people: ``caught ValueError: x is odd (in compute_failed)``."""
        where = f" (in {self.var})" if self.var else ""
        return f"caught {self.short_type}: {self.message}{where}"


#: the longest caught message kept (a message can hold a whole payload)
CAUGHT_MESSAGE_MAX = 2000


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    env_id: str  # "disabled" for steps outside isolation
    fingerprint: str  # digest of the environment as seen from inside the task
    interpreter: str
    artifacts: dict[str, ArtifactRecord] = field(default_factory=dict)  # name -> ArtifactRecord
    caught: Caught | None = None  # the exception @catch handled in this task (schema 4)


@dataclass(frozen=True)
class StepRecord:
    spec_id: str
    env_id: str
    disabled: bool
    tasks: dict[str, TaskRecord] = field(default_factory=dict)  # foreach index path ("-", "3", "1.2") -> TaskRecord


@dataclass(frozen=True)
class PickleCheck:
    step: str
    task: str
    artifact: str
    reader_env: str
    reader_steps: tuple[str, ...]
    status: PickleStatus
    detail: str = ""
    static: str = ""  # modules the pickle references whose versions differ, from its opcodes


@dataclass(frozen=True)
class IncludedFileRecord:
    """An ``IncludeFile`` parameter's file: its bytes are the store object ``inputs/sha256/..``."""

    sha256: str
    size: int
    name: str  # the file's original name (no folders)
    is_text: bool = True  # as Metaflow had them: the step sees text decoded with ``encoding``
    encoding: str = "utf-8"


class ConfigSource(Choice):
    """Where a ``Config``'s value came from in the recorded run."""

    DEFAULT = "default"  # the Config's default / default_value
    COMMAND_LINE = "command line"  # --config / --config-value


@dataclass(frozen=True)
class ConfigRecord:
    """A ``Config``'s resolved value, as JSON text (replayed with ``--config-value NAME JSON``)."""

    value: str  # JSON of the parsed value (``plain`` configs: the plain value, JSON-encoded)
    source: ConfigSource = ConfigSource.DEFAULT
    plain: bool = False
    parser: bool = False  # the Config had a parser: the value is its output, not its input


class InputVia(Choice):
    """How a step found another flow's run (``UpstreamRun.via``): only a run found as "latest" can drift."""

    LATEST_SUCCESSFUL = "latest_successful_run"  # Flow(...).latest_successful_run
    LATEST = "latest_run"  # Flow(...).latest_run
    PATHSPEC = "pathspec"  # Run("F/1742"), Task(...), or a run listed some other way


@dataclass(frozen=True)
class InputArtifact:
    """An artifact of another flow's task that a step read: its bytes are the store object ``inputs/sha1/..``."""

    sha1: str  # Metaflow's content hash: sha1 of the pickled bytes
    size: int
    encoding: str = "pickle-v4"  # Metaflow's content type of the pickle


@dataclass(frozen=True)
class UpstreamTask:
    """A task of another flow's run that a step read artifacts of."""

    attempt: int = 0
    ts_epoch: int = 0  # when Metaflow registered it (milliseconds): the client orders by it
    artifacts: dict[str, InputArtifact] = field(default_factory=dict)  # name -> InputArtifact: read, snapshotted
    #: the task's other artifacts, never read: listed so the client lists the task as it was (no bytes kept)
    others: dict[str, InputArtifact] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamRun:
    """A run of another flow (or another run of this flow) that steps read through Metaflow's client."""

    flow: str
    run_id: str
    read_by: tuple[str, ...]  # the steps that read it
    via: InputVia = InputVia.PATHSPEC
    ts_epoch: int = 0  # the run's registration time (milliseconds): ``latest_*`` picks the newest
    user: str = ""
    tags: tuple[str, ...] = ()
    system_tags: tuple[str, ...] = ()
    tasks: dict[str, UpstreamTask] = field(default_factory=dict)  # "step/task_id" -> UpstreamTask

    @property
    def ref(self) -> str:
        return f"{self.flow}/{self.run_id}"


@dataclass(frozen=True)
class DataFile:
    """A file of the flow's folder that steps opened for reading and the code package lacks (schema 5).
    Its bytes are the store object ``inputs/sha256/..`` when ``stored``; a larger one (past
    ``input-max-bytes``) is recorded only, and a replay cannot give it back."""

    sha256: str
    size: int
    read_by: tuple[str, ...]  # the steps that read it
    stored: bool = False


@dataclass(frozen=True)
class StepReads:
    """What a step's tasks read that no snapshot holds (schema 5): files elsewhere on the host."""

    files: tuple[str, ...] = ()  # absolute paths, the first READS_MAX_PATHS
    files_count: int = 0  # how many in all (at least ``len(files)``)
    unwatched: bool = False  # the step's interpreter has no audit hooks (Python 3.7): its reads are unknown
    #: network endpoints the step contacted ("host:port"), the first READS_MAX_PATHS, but the store's and
    #: Metaflow's own; loopback ones (this machine) apart
    hosts: tuple[str, ...] = ()
    hosts_count: int = 0
    loopback: tuple[str, ...] = ()
    loopback_count: int = 0

    def all_hosts(self) -> list[str]:
        """The endpoints listed, elsewhere first, then this machine's."""
        return list(self.hosts) + list(self.loopback)

    def describe(self, step: str) -> str:
        """``train read 2 files outside the snapshot and contacted 127.0.0.1:8765; a replay cannot give these
        back``; "" when it read and contacted nothing."""
        if self.unwatched:
            return (
                f"{step}: its reads were not watched (Python 3.7 has no audit hooks, or REPRO_WATCH_READS=0), "
                "so what it read is unknown"
            )
        return outside_line(step, self.files_count, self.all_hosts(), self.hosts_count + self.loopback_count)


def outside_line(step: str, files: int, hosts: list[str], hosts_count: int) -> str:
    """What a step read that no snapshot holds, in one line ("" for nothing)."""
    said = []
    if files:
        said.append(f"read {files} file{'s' if files != 1 else ''} outside the snapshot")
    if hosts_count:
        more = hosts_count - len(hosts[:5])
        said.append("contacted " + ", ".join(hosts[:5]) + (f" and {more} more" if more else ""))
    return f"{step} {' and '.join(said)}; a replay cannot give these back" if said else ""


@dataclass(frozen=True)
class S3Input:
    """An object a step read with ``metaflow.S3`` (schema 5). Its bytes are the store object
    ``inputs/sha256/..`` when ``stored``; an ``info`` read no bytes (``sha256`` "")."""

    url: str  # s3://bucket/key
    etag: str  # as S3 said it when the step read it ("" if it could not be asked)
    size: int
    sha256: str = ""  # of the bytes the step read
    version: str = ""  # the object's version id, on a versioned bucket
    stored: bool = False

    def changed(self, etag: str, version: str) -> str:
        """How the object ``etag``/``version`` now differs from this one ("" when it does not)."""
        if self.version and version and version != self.version:
            return f"version {_short(self.version)} -> {_short(version)}"
        if self.etag and etag != self.etag:
            return f"ETag {_short(self.etag)} -> {_short(etag)}"
        return ""


def _short(text: str) -> str:
    return text if len(text) <= 8 else text[:6] + "…"


@dataclass(frozen=True)
class StepS3:
    """The objects a step's tasks read with ``metaflow.S3`` (schema 5): the first listed, how many in all."""

    objects: tuple[S3Input, ...] = ()
    count: int = 0


@dataclass(frozen=True)
class Hybrid:
    """A `repro bisect` hybrid run: the run ``replay_of`` names, on its environments with ``changes`` applied.
    ``key``: the hybrid's answer key (sha256 of that run, its code and the hybrid's env ids); ``differing``:
    the ``step.artifact`` names that differed from that run's; ``steps``: the steps it ran (a resume cloned
    the others)."""

    key: str
    changes: tuple[str, ...] = ()
    differing: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunRecord:
    flow: str
    run_id: str
    flow_file: str
    code_sha256: str
    lock_sha256: str
    parameters: dict[str, Any]
    pythonhashseed: str
    metaflow_version: str
    repro_version: str
    host: dict[str, str]
    datastore: dict[str, str | None]
    steps: dict[str, StepRecord]  # step -> StepRecord, in graph order
    envs: dict[str, PlatformLock]  # env id -> the environment (what the store keeps as locks/<env id>.toml)
    created_at: str = ""
    duration_s: float = 0.0
    status: RunStatus = RunStatus.SUCCESS
    pickle_checks: tuple[PickleCheck, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)  # settings that shape specs (conda_source), for replays
    graph: dict[str, tuple[str, ...]] = field(default_factory=dict)  # step -> steps it goes to next
    step_order: tuple[str, ...] = ()  # graph order (JSON objects have none)
    replay_of: str = ""  # for a replay: the REF of the run it replayed
    include_files: dict[str, IncludedFileRecord] = field(
        default_factory=dict
    )  # IncludeFile parameter -> IncludedFileRecord
    configs: dict[str, ConfigRecord] = field(default_factory=dict)  # Config name -> ConfigRecord
    run_options: tuple[str, ...] = ()  # Metaflow `run` options that shape the run (not parameters, not --run-id-file)
    #: which flow this is: "Class:path/of/flow.py" (path from the project root) or "Class:@project/branch"
    identity: str = ""
    #: input lineage: runs of other flows the steps read ("Flow/run_id" -> UpstreamRun)
    inputs: dict[str, UpstreamRun] = field(default_factory=dict)
    #: Python version -> the snapshot of the interpreter the run's environments were made from
    interpreters: dict[str, InterpreterSnapshot] = field(default_factory=dict)
    executor: Executor = field(default_factory=Executor)  # where the run ran
    #: files of the flow's folder that steps read and the code package lacks (path relative to the flow's folder)
    data_files: dict[str, DataFile] = field(default_factory=dict)
    #: step -> what it read outside the snapshot and the flow's folder (steps that read nothing are absent)
    reads: dict[str, StepReads] = field(default_factory=dict)
    #: step -> the objects it read with ``metaflow.S3`` (steps that read none are absent)
    s3_inputs: dict[str, StepS3] = field(default_factory=dict)
    #: step -> its artifacts seen to differ between repeats of this run (`repro check --repeat`); {}: not seen
    nondeterministic: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: a `repro bisect` hybrid (``replay_of`` names the bisected run); None: not one
    hybrid: Hybrid | None = None
    #: env id -> sha256 of the bytecode object (``bytecode/<sha256>.tar.zst``) its first build compiled; {}: none
    bytecode: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.flow}/{self.run_id}"

    def outside_reads(self) -> list[str]:
        """One line per step that read files a replay cannot give back (or whose reads are unknown)."""
        order = [s for s in self.step_order if s in self.reads] + sorted(set(self.reads) - set(self.step_order))
        return [line for step in order if (line := self.reads[step].describe(step))]

    def data_files_not_kept(self) -> list[str]:
        """The flow-folder files a step read whose bytes are not in the snapshot (too large)."""
        return [path for path, f in self.data_files.items() if not f.stored]

    def s3_objects(self) -> dict[str, S3Input]:
        """url -> the object as the first step (in the flow's order) that read its bytes read it."""
        order = [s for s in self.step_order if s in self.s3_inputs] + sorted(set(self.s3_inputs) - set(self.step_order))
        out: dict[str, S3Input] = {}
        for step in order:
            for o in self.s3_inputs[step].objects:
                if o.url not in out or (o.sha256 and not out[o.url].sha256):
                    out[o.url] = o
        return out

    def s3_not_kept(self) -> list[str]:
        """The objects steps read whose bytes are not in the snapshot (past input-max-bytes, or unfetchable)."""
        return [url for url, o in self.s3_objects().items() if o.sha256 and not o.stored]

    def input_artifacts(self) -> dict[str, int]:
        """sha1 -> size of every artifact of another run that a step read (store objects ``inputs/sha1/..``)."""
        return {a.sha1: a.size for r in self.inputs.values() for t in r.tasks.values() for a in t.artifacts.values()}

    def package_shas(self) -> dict[str, str]:
        """sha256 -> file name of every package file the record's environments need."""
        out: dict[str, str] = {}
        for env in self.envs.values():
            for p in env.packages:
                out[p.sha256] = p.file
        return out

    def artifact_shas(self, stored_only: bool = True) -> set[str]:
        return {
            a.sha1
            for s in self.steps.values()
            for t in s.tasks.values()
            for a in t.artifacts.values()
            if a.stored or not stored_only
        }

    def schema_version(self) -> int:
        """The lowest schema that carries this record's fields, so a repro one release older still reads a
        record that uses nothing newer (it refuses a newer schema, and so every record, were it always 6)."""
        newer = self.hybrid is not None or bool(self.executor.image_digest) or bool(self.bytecode)
        return SCHEMA_VERSION if newer else 5

    def to_json(self) -> str:
        doc = {"schema": SCHEMA, "schema_version": self.schema_version(), **asdict(self)}
        doc["status"] = RunStatus(self.status).value
        doc["envs"] = {env_id: _env_dict(pl) for env_id, pl in self.envs.items()}
        doc["pickle_checks"] = [{**asdict(c), "status": PickleStatus(c.status).value} for c in self.pickle_checks]
        doc["configs"] = {n: {**asdict(c), "source": ConfigSource(c.source).value} for n, c in self.configs.items()}
        doc["run_options"] = list(self.run_options)
        doc["inputs"] = {ref: {**asdict(r), "via": InputVia(r.via).value} for ref, r in self.inputs.items()}
        doc["interpreters"] = {k: x.to_dict() for k, x in self.interpreters.items()}
        doc["executor"] = self.executor.to_dict()
        if self.nondeterministic:
            doc["nondeterministic"] = {step: list(names) for step, names in self.nondeterministic.items()}
        else:
            del doc["nondeterministic"]  # optional: older readers never see it
        if self.hybrid is None:
            del doc["hybrid"]  # only a bisection's hybrid run names one
        if not self.bytecode:
            del doc["bytecode"]  # optional: older readers never see it
        for step in doc["steps"].values():
            for task in step["tasks"].values():
                if task["caught"] is None:
                    del task["caught"]  # only a task @catch handled names one
        for key in ("data_files", "reads", "s3_inputs"):
            if not doc[key]:
                del doc[key]  # only a run whose steps read files names them
        for reads in doc.get("reads", {}).values():
            for key in ("hosts", "hosts_count", "loopback", "loopback_count"):
                if not reads[key]:
                    del reads[key]  # only a step that contacted hosts names them
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def _env_dict(pl: PlatformLock) -> dict[str, Any]:
    d = pl.to_dict()
    del d["env_id"]  # the key it is filed under
    return d


# -- the strict decoder ------------------------------------------------------------------------------
# A record may come from a shared store: every field is checked (type, digest format, plain names,
# relative paths, known statuses) before anything uses it. Errors name the field path and the value.

_RECORD_KEYS = frozenset(
    {
        "schema",
        "schema_version",
        "flow",
        "run_id",
        "flow_file",
        "code_sha256",
        "lock_sha256",
        "parameters",
        "pythonhashseed",
        "metaflow_version",
        "repro_version",
        "host",
        "datastore",
        "steps",
        "envs",
        "created_at",
        "duration_s",
        "status",
        "pickle_checks",
        "settings",
        "graph",
        "step_order",
        "replay_of",
        "include_files",
        "configs",
        "run_options",
        "identity",
        "inputs",
        "interpreters",
        "executor",
        "data_files",
        "reads",
        "s3_inputs",
        "nondeterministic",
        "hybrid",
        "bytecode",
    }
)  # replay_of .. identity: version 2; inputs, interpreters, executor: version 3; data_files .. nondeterministic: 5;
# hybrid, bytecode: 6
_INCLUDE_KEYS = frozenset({"sha256", "size", "name", "is_text", "encoding"})
_CONFIG_KEYS = frozenset({"value", "source", "plain", "parser"})
_UPSTREAM_KEYS = frozenset({"flow", "run_id", "read_by", "via", "ts_epoch", "user", "tags", "system_tags", "tasks"})
_UPSTREAM_TASK_KEYS = frozenset({"attempt", "ts_epoch", "artifacts", "others"})
_INPUT_ARTIFACT_KEYS = frozenset({"sha1", "size", "encoding"})
_ENCODING = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")
_TAG = re.compile(r"^[^\x00-\x1f]{1,500}$")
_REF_TEXT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*/[A-Za-z0-9_.\-]+$")
_STEP_KEYS = frozenset({"spec_id", "env_id", "disabled", "tasks"})
_TASK_KEYS = frozenset({"task_id", "env_id", "fingerprint", "interpreter", "artifacts", "caught"})
_CAUGHT_KEYS = frozenset({"type", "message", "var"})
_S3_STEP_KEYS = frozenset({"objects", "count"})
_S3_INPUT_KEYS = frozenset({"url", "etag", "size", "sha256", "version", "stored"})
#: an S3 object's URL: a bucket name as S3 allows it (older buckets: capitals, '_'), then a key of printable characters
S3_URL = re.compile(r"^s3://[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]/[^\x00-\x1f\x7f]{1,1024}\Z")
#: an ETag or version id as S3 gives them: printable ASCII, no spaces
_S3_TOKEN = re.compile(r"^[\x21-\x7e]{0,1024}\Z")
_DATA_FILE_KEYS = frozenset({"sha256", "size", "read_by", "stored"})
_READS_KEYS = frozenset({"files", "files_count", "unwatched", "hosts", "hosts_count", "loopback", "loopback_count"})
#: a network endpoint a step contacted: "host:port", "[v6]:port", or a host alone (looked up with no port)
_HOST = re.compile(r"^(\[[A-Za-z0-9_.%:-]{2,253}\]|[A-Za-z0-9_.%-]{1,253})(:[0-9]{1,5})?\Z")
#: an absolute path a step read, as recorded (shown to people, never opened)
_ABSOLUTE_PATH = re.compile(r"^/[^\x00-\x1f]{0,4095}\Z")
#: an exception's class as Metaflow names it: dotted Python names
_EXCEPTION_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,30}$")
_ARTIFACT_KEYS = frozenset({"sha1", "size", "type", "stored"})
_CHECK_KEYS = frozenset({"step", "task", "artifact", "reader_env", "reader_steps", "status", "detail", "static"})
_TASK_KEY = re.compile(r"^(-|[0-9]+(\.[0-9]+)*)$")
_SCALAR = (str, int, float, bool, type(None))


def _task_key(value: Any, at: v.At) -> str:
    return v.matching(value, _TASK_KEY, 'a foreach index path ("-", "3", "1.2")', at)


def _size(value: Any, at: v.At) -> int:
    size: int = v.of_type(value, int, at)  # of_type returns ``value`` itself
    if size < 0:
        at.fail(value, "a size in bytes (>= 0)")
    return size


def _pickled(d: Any, keys: frozenset[str], at: v.At) -> tuple[str, int]:
    """A task's artifact and another flow's artifact a step read name their bytes alike: Metaflow's sha1 of
    the pickle and its size, checked here once (after the object's keys)."""
    v.only(v.of_type(d, dict, at), keys, at)
    return v.hex_digest(v.need(d, "sha1", str, at), 40, at / "sha1"), _size(v.need(d, "size", int, at), at / "size")


def _artifact(d: Any, at: v.At) -> ArtifactRecord:
    sha1, size = _pickled(d, _ARTIFACT_KEYS, at)
    return ArtifactRecord(
        sha1=sha1,
        size=size,
        type=v.need(d, "type", str, at),
        stored=v.opt(d, "stored", bool, False, at),
    )


def _task(d: Any, at: v.At) -> TaskRecord:
    v.only(v.of_type(d, dict, at), _TASK_KEYS, at)
    return TaskRecord(
        task_id=v.name(v.need(d, "task_id", str, at), at / "task_id"),
        # "" when the task never reported one (it failed before its environment check)
        env_id=v.env_id(v.need(d, "env_id", str, at), at / "env_id", allow_empty=True),
        fingerprint=v.need(d, "fingerprint", str, at),
        interpreter=v.need(d, "interpreter", str, at),
        artifacts=v.table_of(v.opt(d, "artifacts", dict, {}, at), at / "artifacts", v.name, _artifact),
        caught=caught_from_dict(d["caught"], at / "caught") if d.get("caught") is not None else None,
    )


def caught_from_dict(d: Any, at: v.At) -> Caught:
    """Decode a caught exception (a record's, or a run read back): its type a dotted name, its message
    text of bounded length, its artifact a Python identifier."""
    v.only(v.of_type(d, dict, at), _CAUGHT_KEYS, at)
    message = v.need(d, "message", str, at)
    if len(message) > CAUGHT_MESSAGE_MAX:
        (at / "message").fail(message[:40] + "...", f"an exception message of at most {CAUGHT_MESSAGE_MAX} characters")
    var = v.opt(d, "var", str, "", at)
    return Caught(
        type=v.matching(v.need(d, "type", str, at), _EXCEPTION_TYPE, "an exception class (module.Class)", at / "type"),
        message=message,
        var=v.identifier(var, at / "var") if var else "",
    )


def _step(d: Any, at: v.At) -> StepRecord:
    v.only(v.of_type(d, dict, at), _STEP_KEYS, at)
    return StepRecord(
        spec_id=v.hex_digest(v.need(d, "spec_id", str, at), 64, at / "spec_id"),
        env_id=v.env_id(v.need(d, "env_id", str, at), at / "env_id"),
        disabled=v.need(d, "disabled", bool, at),
        tasks=v.table_of(v.opt(d, "tasks", dict, {}, at), at / "tasks", _task_key, _task),
    )


def _check(d: Any, at: v.At) -> PickleCheck:
    v.only(v.of_type(d, dict, at), _CHECK_KEYS, at)
    return PickleCheck(
        step=v.identifier(v.need(d, "step", str, at), at / "step"),
        task=_task_key(v.need(d, "task", str, at), at / "task"),
        artifact=v.name(v.need(d, "artifact", str, at), at / "artifact"),
        reader_env=v.env_id(v.need(d, "reader_env", str, at), at / "reader_env"),
        reader_steps=tuple(v.list_of(v.need(d, "reader_steps", list, at), at / "reader_steps", v.identifier)),
        status=v.choice(v.need(d, "status", str, at), PickleStatus, at / "status"),
        detail=v.opt(d, "detail", str, "", at),
        static=v.opt(d, "static", str, "", at),
    )


def _included(d: Any, at: v.At) -> IncludedFileRecord:
    v.only(v.of_type(d, dict, at), _INCLUDE_KEYS, at)
    encoding = v.opt(d, "encoding", str, "utf-8", at)
    if not re.match(r"^[A-Za-z0-9_.\-]{1,40}$", encoding):
        (at / "encoding").fail(encoding, "an encoding name")
    return IncludedFileRecord(
        sha256=v.hex_digest(v.need(d, "sha256", str, at), 64, at / "sha256"),
        size=_size(v.need(d, "size", int, at), at / "size"),
        name=v.file_name(v.need(d, "name", str, at), at / "name"),
        is_text=v.opt(d, "is_text", bool, True, at),
        encoding=encoding,
    )


def _config(d: Any, at: v.At) -> ConfigRecord:
    v.only(v.of_type(d, dict, at), _CONFIG_KEYS, at)
    value = v.need(d, "value", str, at)
    try:
        v.load_json(value, at / "value")
    except v.Invalid:
        (at / "value").fail(value, "JSON text")
    return ConfigRecord(
        value=value,
        source=v.choice(v.opt(d, "source", str, "default", at), ConfigSource, at / "source"),
        plain=v.opt(d, "plain", bool, False, at),
        parser=v.opt(d, "parser", bool, False, at),
    )


def _count(value: Any, at: v.At) -> int:
    n: int = v.of_type(value, int, at)
    if n < 0:
        at.fail(value, "an integer >= 0")
    return n


def _input_artifact(d: Any, at: v.At) -> InputArtifact:
    sha1, size = _pickled(d, _INPUT_ARTIFACT_KEYS, at)
    return InputArtifact(
        sha1=sha1,
        size=size,
        encoding=v.matching(v.opt(d, "encoding", str, "pickle-v4", at), _ENCODING, "a content type", at / "encoding"),
    )


def _upstream_task_key(value: Any, at: v.At) -> str:
    step, _, task = v.of_type(value, str, at).partition("/")
    v.identifier(step, at)
    v.name(task, at)
    return str(value)


def _upstream_task(d: Any, at: v.At) -> UpstreamTask:
    v.only(v.of_type(d, dict, at), _UPSTREAM_TASK_KEYS, at)
    return UpstreamTask(
        attempt=_count(v.opt(d, "attempt", int, 0, at), at / "attempt"),
        ts_epoch=_count(v.opt(d, "ts_epoch", int, 0, at), at / "ts_epoch"),
        artifacts=v.table_of(v.opt(d, "artifacts", dict, {}, at), at / "artifacts", v.name, _input_artifact),
        others=v.table_of(v.opt(d, "others", dict, {}, at), at / "others", v.name, _input_artifact),
    )


def _tag(value: Any, at: v.At) -> str:
    return v.matching(value, _TAG, "a Metaflow tag", at)


def _upstream(ref: str, d: Any, at: v.At) -> UpstreamRun:
    v.only(v.of_type(d, dict, at), _UPSTREAM_KEYS, at)
    run = UpstreamRun(
        flow=v.identifier(v.need(d, "flow", str, at), at / "flow"),
        run_id=v.name(v.need(d, "run_id", str, at), at / "run_id"),
        read_by=tuple(v.list_of(v.need(d, "read_by", list, at), at / "read_by", v.identifier)),
        via=v.choice(v.opt(d, "via", str, InputVia.PATHSPEC.value, at), InputVia, at / "via"),
        ts_epoch=_count(v.opt(d, "ts_epoch", int, 0, at), at / "ts_epoch"),
        user=_tag(v.opt(d, "user", str, "", at), at / "user") if d.get("user") else "",
        tags=tuple(v.list_of(v.opt(d, "tags", list, [], at), at / "tags", _tag)),
        system_tags=tuple(v.list_of(v.opt(d, "system_tags", list, [], at), at / "system_tags", _tag)),
        tasks=v.table_of(v.opt(d, "tasks", dict, {}, at), at / "tasks", _upstream_task_key, _upstream_task),
    )
    if run.ref != ref:
        at.fail(ref, f"the run it describes ({run.ref})")
    return run


def upstream_runs(value: Any, at: v.At) -> dict[str, UpstreamRun]:
    """Decode an ``inputs`` table (a record's, or what a task reported): "Flow/run_id" -> UpstreamRun."""
    table = v.of_type(value, dict, at)
    out = {}
    for ref, d in table.items():
        v.matching(ref, _REF_TEXT, "a run reference (Flow/run_id)", at / str(ref))
        out[ref] = _upstream(ref, d, at / ref)
    return out


def _run_option(value: Any, at: v.At) -> str:
    text: str = v.of_type(value, str, at)
    if "\0" in text or len(text) > 10000:
        at.fail(value, "a command-line option")
    return text


def _strings(value: Any, at: v.At) -> dict[str, str]:
    return v.table_of(value, at, v.string, v.string)


def _scalars(value: Any, at: v.At) -> dict[str, Any]:
    return v.table_of(value, at, v.string, lambda x, a: v.of_type(x, _SCALAR, a))


def _recorded_settings(value: Any, at: v.At) -> dict[str, Any]:
    """Scalars; the settings a replay passes back (``RECORDED_SETTINGS``) of the type they are recorded as."""
    table = _scalars(value, at)
    for key, x in table.items():
        if problem := recorded_setting_problem(key, x):
            (at / key).fail(x, problem)
    return table


def from_json(text: str, where: str) -> RunRecord:
    """Decode and validate a record: untrusted input (a store, a file a user hands us), so every field is checked.

    Raises ``BadInput`` naming ``where``, the field path and the bad value."""
    doc = v.load_json(text, v.At(where), "a run record")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BadInput(
            f"{where}: not a repro run record (schema is {doc.get('schema') if isinstance(doc, dict) else None!r})"
        )
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadInput(f"{where}: unknown run record schema version {version!r}")
    if version > SCHEMA_VERSION:
        raise BadInput(
            f"{where}: this run record uses schema version {version}, newer than this repro "
            f"understands ({SCHEMA_VERSION}); upgrade repro to read it"
        )
    return _decode(doc, v.At(where))


def _decode(doc: dict[str, Any], at: v.At) -> RunRecord:
    v.only(doc, _RECORD_KEYS, at)
    steps = v.table_of(v.need(doc, "steps", dict, at), at / "steps", v.identifier, _step)
    envs = {}
    for env_id, d in v.need(doc, "envs", dict, at).items():
        if env_id == "disabled" or not isinstance(d, dict):  # disabled steps have no environment
            (at / "envs" / env_id).fail(d, "an environment")
        envs[env_id] = PlatformLock.from_dict(d, at / "envs" / env_id, env_id=v.env_id(env_id, at / "envs" / env_id))
    for name, s in steps.items():
        if s.env_id != "disabled" and s.env_id not in envs:
            (at / "steps" / name / "env_id").fail(s.env_id, "an env id listed in 'envs'")
    order = tuple(v.list_of(v.opt(doc, "step_order", list, [], at), at / "step_order", v.identifier)) or tuple(steps)
    graph = v.table_of(
        v.opt(doc, "graph", dict, {}, at), at / "graph", v.identifier, lambda x, a: tuple(v.list_of(x, a, v.identifier))
    )
    return RunRecord(
        flow=v.identifier(v.need(doc, "flow", str, at), at / "flow"),
        run_id=v.name(v.need(doc, "run_id", str, at), at / "run_id"),
        flow_file=v.relative_path(v.need(doc, "flow_file", str, at), at / "flow_file"),
        code_sha256=v.hex_digest(v.need(doc, "code_sha256", str, at), 64, at / "code_sha256"),
        lock_sha256=v.hex_digest(v.need(doc, "lock_sha256", str, at), 64, at / "lock_sha256"),
        parameters=v.table_of(
            v.need(doc, "parameters", dict, at),
            at / "parameters",
            lambda k, a: v.matching(k, v.PARAMETER_NAME, "a parameter name", a),
            lambda x, a: x,
        ),
        pythonhashseed=v.need(doc, "pythonhashseed", str, at),
        metaflow_version=v.need(doc, "metaflow_version", str, at),
        repro_version=v.need(doc, "repro_version", str, at),
        host=_strings(v.need(doc, "host", dict, at), at / "host"),
        datastore=v.table_of(
            v.need(doc, "datastore", dict, at),
            at / "datastore",
            v.string,
            lambda x, a: v.of_type(x, (str, type(None)), a),
        ),
        steps={name: steps[name] for name in order if name in steps},
        envs=envs,
        created_at=v.opt(doc, "created_at", str, "", at),
        duration_s=v.opt(doc, "duration_s", float, 0.0, at),
        status=v.choice(v.opt(doc, "status", str, RunStatus.SUCCESS.value, at), RunStatus, at / "status"),
        pickle_checks=tuple(v.list_of(v.opt(doc, "pickle_checks", list, [], at), at / "pickle_checks", _check)),
        settings=_recorded_settings(v.opt(doc, "settings", dict, {}, at), at / "settings"),
        graph=graph,
        step_order=order,
        replay_of=(
            v.matching(
                v.opt(doc, "replay_of", str, "", at), _REF_TEXT, "a run reference (Flow/run_id)", at / "replay_of"
            )
            if doc.get("replay_of")
            else ""
        ),
        include_files=v.table_of(
            v.opt(doc, "include_files", dict, {}, at), at / "include_files", _parameter_name, _included
        ),
        configs=v.table_of(v.opt(doc, "configs", dict, {}, at), at / "configs", _parameter_name, _config),
        run_options=tuple(v.list_of(v.opt(doc, "run_options", list, [], at), at / "run_options", _run_option)),
        identity=_identity(v.opt(doc, "identity", str, "", at), at / "identity"),
        inputs=upstream_runs(v.opt(doc, "inputs", dict, {}, at), at / "inputs"),
        interpreters=_interpreters(v.opt(doc, "interpreters", dict, {}, at), at / "interpreters"),
        executor=Executor.from_dict(doc["executor"], at / "executor") if "executor" in doc else Executor(),
        data_files=v.table_of(v.opt(doc, "data_files", dict, {}, at), at / "data_files", data_file_path, _data_file),
        reads=v.table_of(v.opt(doc, "reads", dict, {}, at), at / "reads", v.identifier, _step_reads),
        s3_inputs=v.table_of(v.opt(doc, "s3_inputs", dict, {}, at), at / "s3_inputs", v.identifier, step_s3),
        nondeterministic=_nondeterministic(v.opt(doc, "nondeterministic", dict, {}, at), at / "nondeterministic"),
        hybrid=_hybrid(doc, at),
        bytecode=_bytecode(v.opt(doc, "bytecode", dict, {}, at), envs, at / "bytecode"),
    )


def data_file_path(value: Any, at: v.At) -> str:
    """A data file's path: relative, inside the flow's folder, none of Metaflow's or repro's own folders."""
    path = v.relative_path(value, at)
    parts = path.split("/")
    if any(p in ("", ".") for p in parts) or parts[0] in (".mf_code", ".metaflow") or len(path) > 4096:
        at.fail(value, "a plain relative path of a data file in the flow's folder")
    return path


def _data_file(d: Any, at: v.At) -> DataFile:
    v.only(v.of_type(d, dict, at), _DATA_FILE_KEYS, at)
    return DataFile(
        sha256=v.hex_digest(v.need(d, "sha256", str, at), 64, at / "sha256"),
        size=_size(v.need(d, "size", int, at), at / "size"),
        read_by=tuple(v.list_of(v.need(d, "read_by", list, at), at / "read_by", v.identifier)),
        stored=v.opt(d, "stored", bool, False, at),
    )


def absolute_path(value: Any, at: v.At) -> str:
    """A file a step read outside the snapshot, as the record spells it (absolute, printable)."""
    return v.matching(value, _ABSOLUTE_PATH, "an absolute path", at)


def _step_reads(d: Any, at: v.At) -> StepReads:
    v.only(v.of_type(d, dict, at), _READS_KEYS, at)
    files = tuple(v.list_of(v.opt(d, "files", list, [], at), at / "files", absolute_path))
    count = _count(v.opt(d, "files_count", int, len(files), at), at / "files_count")
    if count < len(files):
        (at / "files_count").fail(count, f"at least the number of files listed ({len(files)})")
    hosts, hosts_count = _hosts(d, "hosts", at)
    loopback, loopback_count = _hosts(d, "loopback", at)
    return StepReads(
        files=files,
        files_count=count,
        unwatched=v.opt(d, "unwatched", bool, False, at),
        hosts=hosts,
        hosts_count=hosts_count,
        loopback=loopback,
        loopback_count=loopback_count,
    )


def host_port(value: Any, at: v.At) -> str:
    """A network endpoint as a step's report and the record spell it (shown to people, never contacted)."""
    return v.matching(value, _HOST, "a host:port", at)


def _hosts(d: dict[str, Any], key: str, at: v.At) -> tuple[tuple[str, ...], int]:
    listed = tuple(v.list_of(v.opt(d, key, list, [], at), at / key, host_port))
    count = _count(v.opt(d, f"{key}_count", int, len(listed), at), at / f"{key}_count")
    if count < len(listed):
        (at / f"{key}_count").fail(count, f"at least the number of {key} listed ({len(listed)})")
    return listed, count


def s3_input(d: Any, at: v.At) -> S3Input:
    """One object a step read with ``metaflow.S3`` (a record's, or a task's report's)."""
    v.only(v.of_type(d, dict, at), _S3_INPUT_KEYS, at)
    sha = v.opt(d, "sha256", str, "", at)
    found = S3Input(
        url=v.matching(v.need(d, "url", str, at), S3_URL, "an s3://bucket/key URL", at / "url"),
        etag=v.matching(v.opt(d, "etag", str, "", at), _S3_TOKEN, "an ETag (printable, no spaces)", at / "etag"),
        size=_size(v.need(d, "size", int, at), at / "size"),
        sha256=v.hex_digest(sha, 64, at / "sha256") if sha else "",
        version=v.matching(v.opt(d, "version", str, "", at), _S3_TOKEN, "a version id (printable)", at / "version"),
        stored=v.opt(d, "stored", bool, False, at),
    )
    if found.stored and not found.sha256:
        (at / "stored").fail(True, "false for an object whose bytes were not read (no sha256)")
    return found


def step_s3(d: Any, at: v.At) -> StepS3:
    """A step's ``metaflow.S3`` reads: each URL once, ``count`` at least the objects listed."""
    v.only(v.of_type(d, dict, at), _S3_STEP_KEYS, at)
    objects = tuple(v.list_of(v.opt(d, "objects", list, [], at), at / "objects", s3_input))
    urls = [o.url for o in objects]
    if len(set(urls)) != len(urls):
        (at / "objects").fail(urls, "each URL once")
    count = _count(v.opt(d, "count", int, len(objects), at), at / "count")
    if count < len(objects):
        (at / "count").fail(count, f"at least the number of objects listed ({len(objects)})")
    return StepS3(objects=objects, count=count)


_HYBRID_KEYS = frozenset({"key", "changes", "differing", "steps"})
_STEP_ARTIFACT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
_CHANGE_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{1,1000}$")


def _hybrid(doc: dict[str, Any], at: v.At) -> Hybrid | None:
    """A bisection hybrid's mark: only on a replay (it names the bisected run); changes are printable lines."""
    d = v.opt(doc, "hybrid", dict, None, at)
    if d is None:
        return None
    at = at / "hybrid"
    if not doc.get("replay_of"):
        at.fail(d, "no hybrid mark on a record that replays no run (replay_of is empty)")
    v.only(d, _HYBRID_KEYS, at)
    return Hybrid(
        key=v.hex_digest(v.need(d, "key", str, at), 64, at / "key"),
        changes=tuple(
            v.list_of(
                v.opt(d, "changes", list, [], at),
                at / "changes",
                lambda x, a: v.matching(x, _CHANGE_TEXT, "a package change", a),
            )
        ),
        differing=tuple(
            v.list_of(
                v.opt(d, "differing", list, [], at),
                at / "differing",
                lambda x, a: v.matching(x, _STEP_ARTIFACT, "step.artifact", a),
            )
        ),
        steps=tuple(v.list_of(v.opt(d, "steps", list, [], at), at / "steps", v.identifier)),
    )


def _nondeterministic(table: dict[str, Any], at: v.At) -> dict[str, tuple[str, ...]]:
    """step -> artifact names (identifiers; "*" for a whole step or task that differed)."""
    return v.table_of(table, at, v.identifier, lambda x, a: tuple(v.list_of(x, a, _artifact_name)))


def _artifact_name(value: Any, at: v.At) -> str:
    return "*" if value == "*" else v.identifier(value, at)


def _bytecode(table: dict[str, Any], envs: dict[str, PlatformLock], at: v.At) -> dict[str, str]:
    """env id (one of the record's envs) -> sha256 of its bytecode object."""

    def env_id(k: Any, a: v.At) -> str:
        if k not in envs:
            a.fail(k, "an env id listed in 'envs'")
        return str(k)

    return v.table_of(table, at, env_id, lambda x, a: v.hex_digest(x, 64, a))


def _interpreters(table: dict[str, Any], at: v.At) -> dict[str, InterpreterSnapshot]:
    out = {}
    for version, d in table.items():
        snap = InterpreterSnapshot.from_dict(d, at / version)
        if snap.python != version:
            (at / version / "python").fail(snap.python, f"the version it is filed under ({version})")
        out[version] = snap
    return out


def _identity(value: str, at: v.At) -> str:
    if not value:
        return ""
    cls, _, where = value.partition(":")
    v.identifier(cls, at)
    if where.startswith("@"):
        if not re.match(r"^@[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$", where):
            at.fail(value, "a flow identity (Class:@project/branch)")
    else:
        v.relative_path(where, at)
    return value


def _parameter_name(k: Any, at: v.At) -> str:
    return v.matching(k, v.PARAMETER_NAME, "a parameter name", at)


# -- what a replay refuses -----------------------------------------------------------------------------
# A record can decode (every field well-formed) and still be one no replay can run: ``replay_problems``
# is the one list of those reasons. ``repro replay`` refuses such a record before anything is fetched
# (``check_replayable``), and ``repro store verify`` reports the same reasons, so the two always agree.


def _smuggled_options(record: RunRecord) -> list[str]:
    return [t for t in record.run_options if t.startswith("--") and t.split("=", 1)[0] not in REPLAYED_RUN_OPTIONS]


def _argv_problems(record: RunRecord) -> list[str]:
    """Values a replay puts on a command line as they are: no NUL may be in one (no process can take it)."""
    problems = [
        f"parameter {name!r} has a value with a NUL character, which no command line can carry"
        for name, value in record.parameters.items()
        if isinstance(value, str) and "\0" in value
    ]
    for name, cfg in record.configs.items():
        plain = json.loads(cfg.value) if cfg.plain else None  # decoded (bounded) when the record was read
        if isinstance(plain, str) and "\0" in plain:
            problems.append(f"config {name!r} has a value with a NUL character, which no command line can carry")
    return problems


def replay_problems(record: RunRecord) -> list[str]:
    """Why no replay can run this (decoded, well-formed) record; empty: nothing here stops one."""
    problems = []
    if smuggled := _smuggled_options(record):
        problems.append(
            f"the record's run options {v.cap(map(repr, smuggled))} are not options a replay passes on "
            f"(only {', '.join(sorted(REPLAYED_RUN_OPTIONS))}); the record is corrupt or hostile"
        )
    if record.code_sha256 == NO_CODE and record.status is RunStatus.SUCCESS:
        # a failed run (or failed replay) no task of which started is recorded without code on purpose
        problems.append(
            "the record says the run succeeded but names no code package (code_sha256 is all zeros); "
            "the record is corrupt or hostile"
        )
    if record.pythonhashseed:
        try:
            HASH_SEED.from_text(record.pythonhashseed)
        except ValueError:
            problems.append(
                f"the record's pythonhashseed {v.short(record.pythonhashseed)} is not {HASH_SEED.expects}, "
                "so a replay cannot set it"
            )
    return problems + _argv_problems(record)


def check_replayable(record: RunRecord, where: str = "") -> None:
    """Refuse (``BadInput``, exit 2) a record ``replay_problems`` finds fault with, naming every reason."""
    problems = replay_problems(record)
    if record.code_sha256 == NO_CODE and record.status is not RunStatus.SUCCESS:
        problems.append(
            "the run failed before any step started (code_sha256 is all zeros), so there is no code to replay"
        )
    if problems:
        raise BadInput(f"{where or record.ref}: cannot be replayed: {'; '.join(problems)}; nothing was fetched or run")
