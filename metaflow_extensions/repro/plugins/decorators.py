"""`@conda`, `@conda_base`, `@pypi`, `@pypi_base`, with Metaflow's attribute names.

Thin: the decorators carry the user's declaration; repro (on the host) decides and builds, and
the environment object hands each step its interpreter. Imported inside tasks as well, so only
the standard library and Metaflow at module level, and Python 3.7 syntax.
"""

import json
import os
import sys

from metaflow.decorators import FlowDecorator, StepDecorator
from metaflow.exception import MetaflowException
from metaflow.metadata_provider import MetaDatum
from metaflow.metaflow_environment import InvalidEnvironmentException

from . import protocol

SUPPORTED_ENVIRONMENTS = ("conda", "pypi")


#: Metaflow's console treats ``*`` as bold markup and drops it (``python='3.10.*'`` would read
#: ``python='3.10.'``); it has no escape, so a literal asterisk is shown as this look-alike
SHOWN_ASTERISK = "\u2217"


class ReproException(MetaflowException):
    headline = "repro"

    def __init__(self, msg="", lineno=None, source_file=None):
        super(ReproException, self).__init__(escape_markup(msg) if msg else msg, lineno=lineno, source_file=source_file)


def escape_markup(text):
    """``text`` as Metaflow's console shows it literally (its echo reads ``*...*`` as bold)."""
    return text.replace("*", SHOWN_ASTERISK)


class _CodePackage(object):
    """The run's code package, extracted once (repro caches it by content) so that step
    interpreters import Metaflow and this extension from it, as a remote worker would."""

    env_vars = None
    sha256 = ""

    @classmethod
    def extract(cls, package, home, pythons=()):
        if cls.env_vars is None:
            from metaflow_repro.adapter.codepackage import extract

            cls.sha256, cls.env_vars = extract(package, home, pythons)


class _ReproStepDecorator(StepDecorator):
    def step_init(self, flow, graph, step, decos, environment, flow_datastore, logger):
        if environment.TYPE not in SUPPORTED_ENVIRONMENTS:
            raise InvalidEnvironmentException(
                "@%s on step '%s' needs --environment=conda (or --environment=pypi): "
                "`python %s --environment=conda run`" % (self.name, step, os.path.basename(flow.script_name))
            )
        kinds = sorted(
            set(d.name for d in decos if d.name in ("conda", "pypi") and getattr(d, "statically_defined", True))
        )
        if len(kinds) > 1:
            raise ReproException(
                "flow %s, step '%s': @conda and @pypi cannot both be used on the same "
                "step; choose one" % (flow.name, step)
            )
        self.step = step
        self.environment = environment
        self._decos = decos

    def runtime_init(self, flow, graph, package, run_id):
        # compiled by each step's interpreter (a disabled step's is this one), as tasks write no bytecode
        pythons = [p or sys.executable for p in self.environment.step_pythons().values()]
        _CodePackage.extract(package, self.environment.home(), pythons)

    def runtime_step_cli(self, cli_args, retry_count, max_user_code_retries, ubf_context):
        env = self.environment.step_env(self.step)
        cli_args.env[protocol.PYTHONHASHSEED_VAR] = self.environment.hash_seed
        cli_args.env[protocol.CODE_SHA_VAR] = _CodePackage.sha256
        cli_args.env[protocol.STEP_PYTHONS_VAR] = json.dumps(self.environment.step_pythons(), sort_keys=True)
        if env is None:  # disabled: the user's own interpreter, outside isolation
            cli_args.env[protocol.ENV_ID_VAR] = protocol.DISABLED
            return
        if env.get(protocol.STEP_BOOTSTRAP_MANIFEST):
            # An AWS Batch job: Metaflow's `batch step` runs here with the runtime's own interpreter
            # (it needs boto3) and writes the job's bootstrap (environment.bootstrap_commands) from these.
            import sys

            cli_args.entrypoint[0] = sys.executable
            cli_args.env[protocol.PYTHONNOUSERSITE_VAR] = "1"
            cli_args.env[protocol.ENV_ID_VAR] = env[protocol.STEP_ENV_ID]
            cli_args.env[protocol.SPEC_ID_VAR] = env[protocol.STEP_SPEC_ID]
            cli_args.env[protocol.STEP_PYTHON_VAR] = env[protocol.STEP_PYTHON]
            cli_args.env[protocol.BOOTSTRAP_STORE_VAR] = env[protocol.STEP_BOOTSTRAP_STORE]
            cli_args.env[protocol.BOOTSTRAP_MANIFEST_VAR] = env[protocol.STEP_BOOTSTRAP_MANIFEST]
            cli_args.env[protocol.BATCH_CACHE_VAR] = self._mount_instance_cache(
                cli_args, env.get(protocol.STEP_BATCH_CACHE) or ""
            )
            return
        cli_args.env.update(_CodePackage.env_vars or {})
        cli_args.env[protocol.PYTHONNOUSERSITE_VAR] = "1"
        # Tasks write no bytecode: CPython writes a .pyc with one unchecked write() before renaming it into
        # place, so on a full disk a truncated .pyc would land and every later import of that module fail
        # ("EOFError: marshal data too short"). They read what repro compiled ahead, beside the sources, each
        # .pyc written whole (plugins/bytecode.py): the env's site-packages at its build, the code package at
        # its extraction; any other module is compiled in memory.
        cli_args.env[protocol.PYTHONDONTWRITEBYTECODE_VAR] = "1"
        cli_args.env[protocol.PYTHONPYCACHEPREFIX_VAR] = ""  # empty is unset: read beside the sources
        cli_args.env[protocol.ENV_ID_VAR] = env[protocol.STEP_ENV_ID]
        cli_args.env[protocol.SPEC_ID_VAR] = env[protocol.STEP_SPEC_ID]
        cli_args.entrypoint[0] = env[protocol.STEP_PYTHON]

    def _mount_instance_cache(self, cli_args, folder):
        """Have the step's Batch job mount ``folder`` of its instance at the same path (``host_volumes``, the
        user's own kept), where its bootstrap keeps and finds verified interpreters and envs; the folder,
        or "" when there is none (``batch-cache = off``, or a Fargate queue: no instance to keep it on)."""
        batch = [d for d in getattr(self, "_decos", ()) if d.name == "batch"]
        if not folder or not batch:
            return ""
        from metaflow_repro.executors.batch import host_volumes_allowed

        if not host_volumes_allowed(batch[0].attributes.get("queue"), log=_stderr):
            return ""
        attributes = batch[0].attributes
        volumes = with_volume(attributes.get("host_volumes"), folder, attributes.get("efs_volumes"))
        if volumes is None:  # the folder is taken by a volume of the user's: no cache, theirs untouched
            return ""
        attributes["host_volumes"] = volumes
        if "host_volumes" in cli_args.command_options:  # Batch's own runtime_step_cli ran first
            cli_args.command_options["host_volumes"] = volumes
        return folder

    def task_pre_step(
        self,
        step_name,
        task_datastore,
        meta,
        run_id,
        task_id,
        flow,
        graph,
        retry_count,
        max_retries,
        ubf_context,
        inputs,
    ):
        import json
        import sys

        from .task_check import EnvironmentMismatch, check, summary

        try:
            env_id, fp = check(step_name)
        except EnvironmentMismatch as exc:
            raise ReproException(str(exc)) from None
        tags = ["attempt_id:%d" % retry_count]
        values = {
            protocol.META_ENV_ID: env_id,
            protocol.META_SPEC_ID: os.environ.get(protocol.SPEC_ID_VAR, ""),
            protocol.META_FINGERPRINT: json.dumps(summary(fp), sort_keys=True),
            protocol.META_PYTHONHASHSEED: os.environ.get(protocol.PYTHONHASHSEED_VAR, ""),
            protocol.META_INTERPRETER: sys.executable,
            protocol.META_CODE_SHA: os.environ.get(protocol.CODE_SHA_VAR, ""),
        }
        meta.register_metadata(
            run_id, step_name, task_id, [MetaDatum(field=k, value=v, type=k, tags=tags) for k, v in values.items()]
        )
        from . import lineage

        lineage.watch(flow.name, run_id)  # input lineage: which runs of other flows this step reads
        self._watch_reads(task_datastore)
        from . import s3_reads

        s3_reads.install(task_datastore, flow.name, run_id)  # metaflow.S3 reads: noted; in a replay, served
        self._task = (meta, run_id, task_id, tags)

    @staticmethod
    def _watch_reads(task_datastore):
        """Note the files this task opens for reading (one audit hook per task process: reads.py)."""
        import sys

        from . import reads

        storage = getattr(task_datastore, "_storage_impl", None)
        kind = getattr(storage, "TYPE", "")
        root = getattr(storage, "datastore_root", "") if kind == "local" else ""
        from metaflow import metaflow_config as mf

        # the datastore's, the metadata service's and the store's own traffic is no step's input
        s3 = getattr(mf, "S3_ENDPOINT_URL", None) or os.environ.get("AWS_ENDPOINT_URL_S3") or ""
        urls = [s3, os.environ.get("AWS_ENDPOINT_URL", ""), os.environ.get("AWS_ENDPOINT_URL_S3", "")]
        urls += [getattr(mf, n, None) or "" for n in ("SERVICE_URL", "SERVICE_INTERNAL_URL")]
        s3_root = getattr(storage, "datastore_root", "") or "" if kind == "s3" else ""
        bucket = s3_root[len("s3://") :].split("/", 1)[0] if s3_root.startswith("s3://") else ""
        hosts = reads.endpoint_hosts([u for u in urls if u], aws_s3=kind == "s3" and not s3, bucket=bucket)
        reads.watch(os.path.dirname(os.path.abspath(sys.argv[0])), root or "", hosts)

    def task_post_step(self, step_name, flow, graph, retry_count, max_user_code_retries):
        from . import lineage, reads, s3_reads

        task = getattr(self, "_task", None)
        if task is None:
            return
        meta, run_id, task_id, tags = task
        values = [(protocol.META_INPUTS, lineage.report()), (protocol.META_READS, reads.report())]
        values.append((protocol.META_S3_READS, s3_reads.report()))
        data = [MetaDatum(field=k, value=v, type=k, tags=tags) for k, v in values if v]
        if data:
            meta.register_metadata(run_id, step_name, task_id, data)


def with_volume(volumes, folder, efs_volumes=None):
    """``@batch(host_volumes=...)`` (None, one "host[:container]" or a list of them) with ``folder`` of the
    instance mounted at the same path; as it is when that mount is there already; None when the user's
    volumes use the folder otherwise (another path of the instance there, or it mounted elsewhere, or an
    EFS volume there): Metaflow names a volume by its host path, so a second one would be refused."""
    volumes = [] if not volumes else [volumes] if isinstance(volumes, str) else list(volumes)
    efs = [] if not efs_volumes else [efs_volumes] if isinstance(efs_volumes, str) else list(efs_volumes)
    for v in volumes:
        host, _, container = v.partition(":")
        if (host, container or host) == (folder, folder):
            return volumes
        if folder in (host, container or host):
            return None
    if any(v.partition(":")[2] == folder for v in efs):
        return None
    return volumes + [folder]


def _stderr(message):
    import sys

    sys.stderr.write("repro: %s\n" % message)


class CondaStepDecorator(_ReproStepDecorator):
    """Run this step in its own environment with exactly these libraries (pinned).

    Parameters: libraries (dict name -> exact version), packages (alias), python (e.g. '3.11'),
    disabled (run in the user's own environment), channels (conda channels).
    """

    name = "conda"
    defaults = {"libraries": {}, "packages": {}, "python": None, "disabled": None, "channels": []}


class PyPIStepDecorator(_ReproStepDecorator):
    """Run this step in its own environment with exactly these PyPI packages (pinned)."""

    name = "pypi"
    defaults = {"packages": {}, "python": None, "disabled": None}


class _ReproFlowDecorator(FlowDecorator):
    def flow_init(self, flow, graph, environment, flow_datastore, metadata, logger, echo, options):
        if environment.TYPE not in SUPPORTED_ENVIRONMENTS:
            raise InvalidEnvironmentException("@%s needs --environment=conda (or --environment=pypi)" % self.name)


class CondaFlowDecorator(_ReproFlowDecorator):
    """Libraries, python and disabled for every step; step-level @conda overrides by name."""

    name = "conda_base"
    defaults = {"libraries": {}, "packages": {}, "python": None, "disabled": None, "channels": []}


class PyPIFlowDecorator(_ReproFlowDecorator):
    """Packages and python for every step; step-level @pypi overrides by name."""

    name = "pypi_base"
    defaults = {"packages": {}, "python": None, "disabled": None}
