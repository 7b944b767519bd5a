"""`--environment=conda` / `--environment=pypi`: every step in its own locked environment.

``init_environment`` runs once, in the runtime (never in a task): it asks repro to lock (or
read the committed lock) and build every step's environment before the first task starts.
Task processes import this module too, so nothing but the standard library and Metaflow here.
"""

import base64
import inspect
import os
import re
import zlib

from metaflow.metaflow_environment import MetaflowEnvironment

from . import protocol
from .decorators import ReproException


def _report(exc):
    """Tell the repro process that started this run (if one did) which error this was, and its exit code."""
    import json

    path = os.environ.get(protocol.ERROR_FILE_VAR)
    if path:
        try:
            with open(path, "w") as fh:
                json.dump({"exit_code": exc.exit_code, "message": str(exc)}, fh)
        except OSError:
            pass


#: how repro's engine starts the line of each environment it builds (``metaflow_repro.env.engine.build_flow``)
BUILDING = "building env "


class _Progress(object):
    """Repro's messages while it prepares the environments, passed on to Metaflow's output, with a
    count of the environments built (the others were reused)."""

    def __init__(self, echo):
        self.echo = echo
        self.built = 0

    def __call__(self, message):
        if message.startswith(BUILDING):
            self.built += 1
        self.echo(message)


def ready_line(envs, built, flow_file):
    """The one line said once every step's environment is ready: how many were built and reused."""
    ids = set(env[protocol.STEP_ENV_ID] for env in envs.values() if env)
    steps = len(envs)
    lock = os.path.splitext(flow_file)[0] + protocol.LOCK_SUFFIX
    reused = max(len(ids) - built, 0)
    if not built:
        return "repro: %d step(s), %d environment(s) reused as %s locks them" % (steps, reused, lock)
    return "repro: %d step(s), %d environment(s) built and %d reused as %s locks them" % (steps, built, reused, lock)


class CondaEnvironment(MetaflowEnvironment):
    TYPE = "conda"

    def __init__(self, flow):
        super(CondaEnvironment, self).__init__(flow)
        self.flow = flow
        self.datastore_type = None
        self._envs = None
        self._paths = {}
        self.hash_seed = (
            os.environ.get(protocol.HASH_SEED_VAR)
            or os.environ.get(protocol.PYTHONHASHSEED_VAR)
            or protocol.DEFAULT_HASH_SEED
        )

    def decospecs(self):
        # Every step gets a @conda (empty unless the user wrote one), so every step is isolated.
        return ("conda",) + super(CondaEnvironment, self).decospecs()

    def validate_environment(self, logger, datastore_type):
        self.datastore_type = datastore_type

    def flow_file(self):
        return os.path.abspath(inspect.getfile(self.flow.__class__))

    def init_environment(self, echo, only_steps=None):
        # Metaflow's own conda environment says "Bootstrapping conda environment...(this could take a few
        # minutes)" here; repro says what it does: resolving (a lock), building, and at the end how many
        # environments it built and reused
        from metaflow_repro.bridge import prepare
        from metaflow_repro.errors import ReproError, from_os_error

        progress = _Progress(echo)
        try:
            self._envs, self._paths = prepare(
                self.flow.__class__,
                self.flow_file(),
                self.datastore_type == "s3",
                log=progress,
                batch_steps=self.batch_steps(),
            )
            echo(ready_line(self._envs, progress.built, os.path.basename(self.flow_file())))
        except (ReproError, OSError) as exc:  # REPRO_HOME read-only, a file...: a message, never a traceback
            error = from_os_error(exc) if isinstance(exc, OSError) else exc
            _report(error)
            raise ReproException(str(error)) from None

    def batch_steps(self):
        """Steps that run as AWS Batch jobs (`run --with batch`, or a step's own @batch)."""
        return tuple(step.name for step in self.flow if any(d.name == "batch" for d in step.decorators))

    def bootstrap_commands(self, step_name, datastore_type):
        """Shell commands a Batch job runs before its task (in Metaflow's `batch step` process on the
        host, which never prepared environments: what it needs comes from the variables the runtime
        set for it). They export the task's repro variables and make the step's environment from the
        S3 store alone (batch_bootstrap.py, fetched from the store by batch_fetch.py, passed inline, both
        run by the image's python3)."""
        cmds = []
        exports = []
        for name in protocol.TASK_ENV_VARS:
            value = os.environ.get(name)
            if value is None or name == protocol.PYTHONPYCACHEPREFIX_VAR:  # a host path
                continue
            if _WORD.match(value):
                exports.append("%s=%s" % (name, value))
            else:  # JSON, spaces, quotes (REPRO_STEP_PYTHONS): zlib'd (one path per step: it shrinks
                # well) and through base64, which needs no quoting
                encoded = base64.b64encode(zlib.compress(value.encode("utf-8"), 9)).decode("ascii")
                cmds.append("%s=$(echo %s | base64 -d | python3 -c %s)" % (name, encoded, INFLATE_PROGRAM))
                exports.append(name)
        store = os.environ.get(protocol.BOOTSTRAP_STORE_VAR)
        manifest = os.environ.get(protocol.BOOTSTRAP_MANIFEST_VAR)
        cache = os.environ.get(protocol.BATCH_CACHE_VAR) or ""
        if store and manifest and cache:
            # the instance's cached interpreters and envs are shared by its jobs, and checked file by file:
            # their tasks write no bytecode there (a .pyc could not be checked)
            exports.append("PYTHONDONTWRITEBYTECODE=1")
        if exports:
            cmds.append("export " + " ".join(exports))
        if store and manifest:
            # only batch_fetch.py (zlib'd, ~1.3 KB in base64) is inline: AWS Batch refuses commands over 8192
            # characters, so batch_bootstrap.py is a store object the host staged, fetched and checked by sha256
            cmds.append(
                "echo %s | base64 -d | python3 -c %s %s %s %s %s%s"
                % (
                    inline_fetcher(),
                    FETCH_PROGRAM,
                    _shell_word("store", store),
                    protocol.BOOTSTRAP_SCRIPT_KEY % bootstrap_script_sha256(),
                    bootstrap_script_sha256(),
                    _shell_word("manifest", manifest),
                    " " + _shell_word("instance cache", cache) if cache else "",
                )
            )
        return cmds

    def home(self):
        """REPRO_HOME, where the run's code package is kept and extracted."""
        return self._paths[protocol.PATH_HOME]

    def step_env(self, step_name):
        if self._envs is None:
            raise ReproException("internal: environments were not prepared before step '%s'" % step_name)
        return self._envs.get(step_name)

    def step_pythons(self):
        """{step: interpreter, "" if disabled}: what tasks are told (``protocol.STEP_PYTHONS_VAR``)."""
        return dict((s, env[protocol.STEP_PYTHON] if env else "") for s, env in (self._envs or {}).items())

    def _pythons(self):
        """Each step's interpreter, or None (disabled): from ``prepare`` in the runtime, from the
        variable the runtime set inside a task (where ``init_environment`` never ran)."""
        if self._envs is not None:
            return dict((s, env[protocol.STEP_PYTHON] if env else None) for s, env in self._envs.items())
        import json

        try:
            told = json.loads(os.environ.get(protocol.STEP_PYTHONS_VAR) or "{}")
        except ValueError:
            told = {}
        return dict((s, p or None) for s, p in told.items()) if isinstance(told, dict) else {}

    def executable(self, step_name, default=None):
        pythons = self._pythons()
        if pythons.get(step_name):
            return pythons[step_name]
        if self._envs is None and os.environ.get(protocol.STEP_PYTHON_VAR):  # `batch step`, on the host
            return os.environ[protocol.STEP_PYTHON_VAR]
        return super(CondaEnvironment, self).executable(step_name, default)

    def interpreter(self, step_name):
        return self._pythons().get(step_name)

    def is_disabled(self, step):
        pythons = self._pythons()
        return bool(pythons) and pythons.get(step.name) is None

    def add_to_package(self):
        from .compat import add_user_content

        flow_file = self.flow_file()
        lock = os.path.splitext(flow_file)[0] + protocol.LOCK_SUFFIX
        return add_user_content(self, [(lock, os.path.basename(lock))] if os.path.exists(lock) else [])


def _here(name):
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


#: what inflates a zlib'd variable in a job (its standard input to its standard output)
INFLATE_PROGRAM = "'import sys, zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read()))'"
#: what a job's python3 runs: batch_fetch.py, zlib'd on its standard input (single quotes: Metaflow wraps
#: the whole command in double quotes)
FETCH_PROGRAM = "'import sys, zlib; exec(zlib.decompress(sys.stdin.buffer.read()))'"


def inline_fetcher():
    """batch_fetch.py, zlib'd and in base64 (plain characters only)."""
    with open(_here("batch_fetch.py"), "rb") as fh:
        return base64.b64encode(zlib.compress(fh.read(), 9)).decode("ascii")


def bootstrap_script_sha256():
    """The sha256 of batch_bootstrap.py as installed here (the host stages these very bytes)."""
    import hashlib

    with open(_here("batch_bootstrap.py"), "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


_WORD = re.compile(r"^[A-Za-z0-9_.:/@=+-]*$")


def _shell_word(what, value):
    """``value`` as it goes into a shell command unquoted (Metaflow wraps the whole command in
    double quotes): plain characters only, or a clear error."""
    if not _WORD.match(value):
        raise ReproException("internal: %s %r cannot be passed to a Batch job" % (what, value))
    return value


class PyPIEnvironment(CondaEnvironment):
    TYPE = "pypi"
