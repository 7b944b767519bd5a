"""What repro (on the host) and its Metaflow extension (in the runtime and inside tasks) tell each other.

Every name that crosses the boundary is spelled here once: the environment variables the host
passes to tasks, the task metadata keys tasks register and repro reads back, the marker file of a
built environment, what ``metaflow_repro.bridge.prepare`` hands the runtime, and the request and
response shapes of the artifact probe.

Both sides read this module: task-side modules import it relatively (``from . import protocol``),
repro as ``metaflow_extensions.repro.plugins.protocol``. Standard library only (in fact, nothing),
and Python 3.7 syntax: it is imported inside step environments, and loaded by path by the
artifact probe, which runs as a script.
"""

# -- environment variables: host -> runtime -> task ---------------------------------------------

#: the env id the runtime meant the task to run in (``DISABLED`` for a step outside isolation)
ENV_ID_VAR = "REPRO_ENV_ID"
#: the spec id of the task's step (what the user declared)
SPEC_ID_VAR = "REPRO_SPEC_ID"
#: sha256 of the run's code package
CODE_SHA_VAR = "REPRO_CODE_SHA"
#: the hash seed a run must use (replays set the recorded one); read by the runtime
HASH_SEED_VAR = "REPRO_PYTHONHASHSEED"
#: Python's own variables the runtime sets for every task
PYTHONHASHSEED_VAR = "PYTHONHASHSEED"
PYTHONNOUSERSITE_VAR = "PYTHONNOUSERSITE"
PYTHONPYCACHEPREFIX_VAR = "PYTHONPYCACHEPREFIX"
PYTHONDONTWRITEBYTECODE_VAR = "PYTHONDONTWRITEBYTECODE"
#: the seed when neither ``HASH_SEED_VAR`` nor ``PYTHONHASHSEED_VAR`` is set
DEFAULT_HASH_SEED = "0"

#: JSON {step: interpreter path, or "" for a disabled step}: every step's interpreter, so that the
#: environment answers ``executable(step)`` inside a task too (Metaflow's local @parallel and
#: unbounded foreach start their workers from inside the control task with it)
STEP_PYTHONS_VAR = "REPRO_STEP_PYTHONS"

#: every variable above, in the order a task's environment is described
TASK_ENV_VARS = (
    ENV_ID_VAR,
    SPEC_ID_VAR,
    CODE_SHA_VAR,
    PYTHONHASHSEED_VAR,
    PYTHONNOUSERSITE_VAR,
    PYTHONPYCACHEPREFIX_VAR,
    PYTHONDONTWRITEBYTECODE_VAR,
    STEP_PYTHONS_VAR,
)

#: env id of a step that runs outside isolation (``disabled=True``), in the user's own interpreter
DISABLED = "disabled"

# -- environment variables: runtime -> `batch step` (on the host) -> Batch job bootstrap -----------

#: the env's interpreter (``executable()`` in the `batch step` process, which never prepared envs)
STEP_PYTHON_VAR = "REPRO_STEP_PYTHON"
#: s3://bucket/prefix of the store the job's bootstrap fetches from
BOOTSTRAP_STORE_VAR = "REPRO_BOOTSTRAP_STORE"
#: sha256 of the env's bootstrap manifest (``BOOTSTRAP_MANIFEST_KEY`` in that store)
BOOTSTRAP_MANIFEST_VAR = "REPRO_BOOTSTRAP_MANIFEST"
#: the instance cache folder a Batch job mounts and its bootstrap uses (``batch-cache``); unset: none
BATCH_CACHE_VAR = "REPRO_BOOTSTRAP_CACHE"
#: store key of batch_bootstrap.py, by its sha256 (staged by the host, fetched by a job's batch_fetch.py);
#: ``metaflow_repro.store.layout`` builds and parses it from this spelling
BOOTSTRAP_SCRIPT_KEY = "tools/bootstrap/%s/batch_bootstrap.py"
#: store key of an env's bootstrap manifest, by its sha256 (written by the host, fetched by batch_bootstrap.py,
#: which runs alone in the job and so keeps a copy of this spelling that a unit test holds equal to it)
BOOTSTRAP_MANIFEST_KEY = "bootstrap/%s.json"

# -- task metadata: task -> Metaflow's metadata service -> repro --------------------------------

#: every key repro registers starts with this; repro reads back only these
METADATA_PREFIX = "repro-"
META_ENV_ID = "repro-env-id"
META_SPEC_ID = "repro-spec-id"
META_FINGERPRINT = "repro-fingerprint"  # JSON: a summary of the environment's fingerprint
META_PYTHONHASHSEED = "repro-pythonhashseed"
META_INTERPRETER = "repro-interpreter"
META_CODE_SHA = "repro-code-sha"
#: JSON: the runs of other flows the task read through Metaflow's client (input lineage), see below
META_INPUTS = "repro-inputs"
#: JSON: the files the task opened for reading that no snapshot may hold (reads.py writes it), see below
META_READS = "repro-reads"
#: JSON: the objects the task read with ``metaflow.S3`` (s3_reads.py writes it), see below
META_S3_READS = "repro-s3-reads"
METADATA_KEYS = (
    META_ENV_ID,
    META_SPEC_ID,
    META_FINGERPRINT,
    META_PYTHONHASHSEED,
    META_INTERPRETER,
    META_CODE_SHA,
    META_INPUTS,
    META_READS,
    META_S3_READS,
)

# -- files read: what a task reports under META_READS (reads.py writes it) ----------------------------
#
#   {READS_WATCHED: true, READS_FLOW: ["data/train.csv", ..], READS_FLOW_COUNT: n,
#    READS_OUTSIDE: ["/home/u/x.csv", ..], READS_OUTSIDE_COUNT: n,
#    READS_HOSTS: ["huggingface.co:443", ..], READS_HOSTS_COUNT: n,
#    READS_LOOPBACK: ["127.0.0.1:8765", ..], READS_LOOPBACK_COUNT: n}    or {READS_WATCHED: false} (3.7)
#
# READS_FLOW: paths relative to the flow's folder (the host keeps those its code package lacks),
# READS_OUTSIDE: absolute paths elsewhere; READS_HOSTS / READS_LOOPBACK: the network endpoints the task
# contacted ("host:port", "[v6]:port"; a name looked up with no port: "host") but the store's and Metaflow's
# own, on other machines / on this one; each the first READS_MAX_PATHS, the counts of all.

READS_WATCHED = "watched"
READS_FLOW = "flow"
READS_FLOW_COUNT = "flow_count"
READS_OUTSIDE = "outside"
READS_OUTSIDE_COUNT = "outside_count"
READS_HOSTS = "hosts"
READS_HOSTS_COUNT = "hosts_count"
READS_LOOPBACK = "loopback"
READS_LOOPBACK_COUNT = "loopback_count"
READS_MAX_PATHS = 100
#: "0" in a task's environment: no audit hook, nothing reported (what the overhead benchmark compares with)
WATCH_READS_VAR = "REPRO_WATCH_READS"
#: Metaflow's variable naming the folder its code package is extracted in (a task ignores reads there)
EXTRACTED_ROOT_VAR = "METAFLOW_EXTRACTED_ROOT"

# -- S3 objects read: what a task reports under META_S3_READS (s3_reads.py writes it) ---------------
#
#   {S3_OBJECTS: [{S3_URL: "s3://bucket/key", S3_VERSION: "" or id, S3_ETAG: "..", S3_SIZE: n,
#                  S3_SHA256: hex of the bytes read, "" for an ``info`` (no bytes read)}, ..],
#    S3_COUNT: n}                                      the first S3_MAX_OBJECTS, the count of all
#
# In a replay, S3_INPUTS_VAR names a folder the replay prepared (every file verified first): its
# S3_MANIFEST is {url: {S3_SHA256, S3_SIZE, S3_ETAG, S3_VERSION, S3_FILE: a file name in the folder}},
# and the task answers get/get_many/get_recursive/info of those URLs from it, with no network.

S3_OBJECTS = "objects"
S3_COUNT = "count"
S3_URL = "url"
S3_VERSION = "version"
S3_ETAG = "etag"
S3_SIZE = "size"
S3_SHA256 = "sha256"
S3_FILE = "file"
S3_MAX_OBJECTS = 100
S3_INPUTS_VAR = "REPRO_S3_INPUTS"
S3_MANIFEST = "manifest.json"
#: a file in that folder when the record lists every object the steps read and keeps them all: only then
#: does a replay answer a listing read (``get_recursive``/``get_all``) from it
S3_COMPLETE = "complete"

# -- input lineage: what a task reports under META_INPUTS (lineage.py writes it) --------------------
#
#   {"Flow/run_id": {IN_FLOW: .., IN_RUN_ID: .., IN_VIA: VIA_*, IN_TS_EPOCH: ms, IN_USER: ..,
#                    IN_TAGS: [..], IN_SYSTEM_TAGS: [..],
#                    IN_TASKS: {"step/task_id": {IN_ATTEMPT: n, IN_TS_EPOCH: ms,
#                                                IN_ARTIFACTS: {name: {IN_SHA1: .., IN_SIZE: 0, IN_ENCODING: ..}},
#                                                IN_OTHERS: {name: {...the same...}}}},
#                    IN_DATASTORE: {IN_DS_TYPE: "local" | "s3", IN_DS_ROOT: ..}}}
#
# The keys but IN_DATASTORE are those of repro's record (``UpstreamRun``); IN_DATASTORE tells the host
# where to copy the artifacts' bytes from, and is not recorded. Sizes are filled in by the host.

IN_FLOW = "flow"
IN_RUN_ID = "run_id"
IN_VIA = "via"
IN_TS_EPOCH = "ts_epoch"
IN_USER = "user"
IN_TAGS = "tags"
IN_SYSTEM_TAGS = "system_tags"
IN_TASKS = "tasks"
IN_ATTEMPT = "attempt"
IN_ARTIFACTS = "artifacts"  # the task's artifacts the step read (their bytes are snapshotted)
IN_OTHERS = "others"  # the task's other artifacts: listed as the client lists them, never read
IN_SHA1 = "sha1"
IN_SIZE = "size"
IN_ENCODING = "encoding"
IN_DATASTORE = "datastore"
IN_DS_TYPE = "type"
IN_DS_ROOT = "root"
VIA_LATEST_SUCCESSFUL = "latest_successful_run"
VIA_LATEST = "latest_run"
VIA_PATHSPEC = "pathspec"

# -- a built environment's marker: written last by the host's builder, read by tasks ------------

#: file in the environment's folder (``sys.prefix`` inside the task); its presence means "complete"
ENV_MARKER = ".repro-env.json"
MARKER_ENV_ID = "env_id"
MARKER_FINGERPRINT = "fingerprint"  # the fingerprint taken right after the build

# -- the flow's lock file, beside the flow file (the runtime adds it to the code package) ----------

#: ``train.py`` -> ``train.repro.lock``
LOCK_SUFFIX = ".repro.lock"

# -- what metaflow_repro.bridge.prepare returns to the runtime --------------------------------------

#: per step: a dict with these keys, or None for a disabled step
STEP_PYTHON = "python"
STEP_ENV_ID = "env_id"
STEP_SPEC_ID = "spec_id"
#: steps that run as AWS Batch jobs only: the S3 store and the sha256 of the env's bootstrap manifest
STEP_BOOTSTRAP_STORE = "bootstrap_store"
STEP_BOOTSTRAP_MANIFEST = "bootstrap_manifest"
STEP_BATCH_CACHE = "batch_cache"  # the instance cache folder ("": none)
#: and once per run: REPRO_HOME, under which code packages are kept and extracted
PATH_HOME = "home"

# -- the artifact probe (artifact_probe.py): JSON request on stdin, JSON response on stdout -------
#
#   {MODE: MODE_LOAD, SYS_PATH: [...], ITEMS: [{ID: .., PATH: ..}]}
#       -> {id: {STATUS: STATUS_OK | STATUS_WARNING | STATUS_FAILS, DETAIL: "..."}}
#   {MODE: MODE_COMPARE, SYS_PATH: [...], COMPARATORS: [file, ...], OPTIONS: {...},
#    ITEMS: [{ID: .., A: path, B: path}]}
#       -> {id: {VERDICT: VERDICT_EQUIVALENT | VERDICT_DIFFERENT, DETAIL: "..."}}

MODE = "mode"
MODE_LOAD = "load"
MODE_COMPARE = "compare"
MODES = (MODE_LOAD, MODE_COMPARE)
SYS_PATH = "sys_path"
COMPARATORS = "comparators"
OPTIONS = "options"
ITEMS = "items"
ID = "id"
PATH = "path"
A = "a"
B = "b"

STATUS = "status"
STATUS_OK = "ok"
STATUS_WARNING = "warning"
STATUS_FAILS = "fails"
STATUSES = (STATUS_OK, STATUS_WARNING, STATUS_FAILS)
VERDICT = "verdict"
VERDICT_EQUIVALENT = "equivalent"
VERDICT_DIFFERENT = "different"
VERDICTS = (VERDICT_EQUIVALENT, VERDICT_DIFFERENT)
DETAIL = "detail"


def load_request(sys_path, paths):
    """Ask the probe to unpickle each file; ``paths``: id -> file."""
    return {
        MODE: MODE_LOAD,
        SYS_PATH: list(sys_path),
        ITEMS: [{ID: key, PATH: str(path)} for key, path in paths.items()],
    }


def compare_request(sys_path, comparators, options, pairs):
    """Ask the probe to compare pairs of pickles; ``pairs``: id -> (file a, file b)."""
    return {
        MODE: MODE_COMPARE,
        SYS_PATH: list(sys_path),
        COMPARATORS: list(comparators),
        OPTIONS: dict(options),
        ITEMS: [{ID: key, A: str(a), B: str(b)} for key, (a, b) in pairs.items()],
    }


def load_answer(status, detail=""):
    return {STATUS: status, DETAIL: detail}


def compare_answer(verdict, detail=""):
    return {VERDICT: verdict, DETAIL: detail}


# -- errors -----------------------------------------------------------------------------------------

#: a file the extension writes {"exit_code": int, "message": str} to when repro fails inside Metaflow's
#: process (a stale lock, a bad declaration), so the repro process that started the run passes the same
#: error and exit code on; named by the host in this variable
ERROR_FILE_VAR = "REPRO_ERROR_FILE"


# -- a finished run read back: `python -m metaflow_repro.adapter.inspect_run` -> repro (metaflow_repro.model.inspection) --

#: the run (a JSON object on the inspecting process's stdout)
RUN_METAFLOW_VERSION = "metaflow_version"  # the Metaflow whose runtime ran it
RUN_PROJECT = "project"  # @project name, "" without one
RUN_PROJECT_BRANCH = "project_branch"
RUN_SUCCESSFUL = "successful"
RUN_FINISHED = "finished"
RUN_CREATED_AT = "created_at"
RUN_FINISHED_AT = "finished_at"
RUN_STEPS = "steps"  # step -> list of tasks (below)
RUN_PARAMETERS = "parameters"  # name -> value as JSON (str() of a value JSON cannot hold)
RUN_INCLUDE_FILES = "include_files"  # name -> included file (below)
RUN_CONFIGS = "configs"  # name -> the Config's value as JSON text
RUN_INPUT_SIZES = "input_sizes"  # sha1 -> size of each artifact of another flow's run copied (lineage)
#: a task of a step
TASK_ID = "task_id"
TASK_SUCCESSFUL = "successful"
TASK_FINISHED = "finished"
TASK_METADATA = "metadata"  # only the keys starting with METADATA_PREFIX
TASK_DS_TYPE = "ds_type"
TASK_DS_ROOT = "ds_root"
TASK_FOREACH = "foreach"  # the foreach index path ("-" outside any foreach, "1.0" nested)
TASK_ARTIFACTS = "artifacts"  # name -> artifact (below)
TASK_STDERR = "stderr"  # the tail of a failed task's log, "" for a successful one
TASK_CAUGHT = "caught"  # the exception @catch handled (below), or null
CAUGHT_TYPE = "type"  # "module.Class", as Metaflow's MetaflowExceptionWrapper names it
CAUGHT_MESSAGE = "message"
CAUGHT_VAR = "var"  # the artifact @catch(var=...) stored it in, "" without one
#: an artifact of a task
ARTIFACT_SHA1 = "sha1"
ARTIFACT_SIZE = "size"
ARTIFACT_TYPE = "type"
#: an IncludeFile's contents, written content-addressed to the inputs folder
INCLUDED_SHA256 = "sha256"
INCLUDED_SIZE = "size"
INCLUDED_IS_TEXT = "is_text"
INCLUDED_ENCODING = "encoding"
