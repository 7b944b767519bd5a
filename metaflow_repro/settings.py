"""Settings: every environment variable and ``[tool.repro]`` key repro reads, named once here.

``SETTINGS`` is the table: each entry names the variable, the key, the type, the default and says
in one line what it does. ``load_settings`` reads the environment first, then ``[tool.repro]`` in
the nearest ``pyproject.toml``, then the default, and checks each value against its type; a bad
value is a ``BadInput`` that blames where it came from (the variable, or the file and key).
README.md's settings table is ``markdown_table()``, and a test keeps the two in step.

``Home`` is the one place that knows the folders under ``REPRO_HOME``.

Pure apart from reading the environment and one small file; nothing here touches the network.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro._toml import tomllib
from metaflow_repro.errors import BadInput

CONDA_SOURCES = ("conda", "pypi")
#: where `pytest --repro --repro-on` also replays each run (`repro replay --on`)
REPLAY_PLACES = ("local", "docker", "batch")
DEFAULT_CHANNELS = ("conda-forge",)
#: the platform names locks are made for (``metaflow_repro.model.platforms.PLATFORMS``, spelled here because
#: settings sit below the model; tests/unit/test_settings.py keeps the two equal)
PLATFORM_NAMES = ("linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")
DEFAULT_HOME = "~/.cache/repro"
DEFAULT_ARTIFACT_MAX_BYTES = 16 << 20
#: the most an archive repro extracts may hold (as the Batch bootstrap's cap: a 3.11 prefix is ~200 MB)
DEFAULT_ARCHIVE_MAX_BYTES = 2 << 30
#: the most the data files a run's steps read from its flow's folder may hold together in its snapshot
DEFAULT_INPUT_MAX_BYTES = 256 << 20
DEFAULT_REPORT_DIR = "reports"
#: on each Batch instance (a host volume): the ECS-optimized AMI's /var is the instance's own disk
DEFAULT_BATCH_CACHE = "/var/cache/repro"
DEFAULT_IMAGE_MIRROR = "http://deb.debian.org/debian"


# -- REPRO_HOME ------------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _plain(part: str, what: str) -> str:
    if not _PLAIN.match(part or "") or part in (".", ".."):
        raise BadInput(f"{what} {part!r} may only contain letters, digits, '_', '-' and '.'")
    return part


@dataclass(frozen=True)
class Home:
    """The folders under ``REPRO_HOME``; nothing else builds a path below it."""

    root: Path

    def __str__(self) -> str:
        return str(self.root)

    @property
    def packages(self) -> Path:
        """Content-addressed package files (``PackageCache``)."""
        return self.root / "packages"

    @property
    def envs(self) -> Path:
        """Built environments, one folder per env id (``Environments``)."""
        return self.root / "envs"

    @property
    def uv_cache(self) -> Path:
        return self.root / "uv-cache"

    @property
    def builds(self) -> Path:
        """Wheels built here from sdists: ``<sdist sha256>-<python>.json`` names the cached wheel."""
        return self.root / "builds"

    @property
    def conda_pkgs(self) -> Path:
        """rattler's cache of extracted conda packages (filled only from our verified package files)."""
        return self.root / "conda-pkgs"

    @property
    def conda_repodata(self) -> Path:
        """rattler's cache of channels' repodata (resolution only; installs never read it)."""
        return self.root / "conda-repodata"

    @property
    def code(self) -> Path:
        """Metaflow code packages: ``<sha256>.tar.gz`` and their extracted folders ``<sha256[:32]>/``."""
        return self.root / "code"

    def code_package(self, sha256: str) -> Path:
        return self.code / f"{_plain(sha256, 'code package')}.tar.gz"

    def code_folder(self, sha256: str) -> Path:
        return self.code / _plain(sha256, "code package")[:32]

    @property
    def inputs(self) -> Path:
        """Inputs a run read, content-addressed: IncludeFile contents ``sha256/<sha256>``, other flows'
        artifacts ``sha1/<sha1>``."""
        return self.root / "inputs"

    def input_blob(self, sha256: str) -> Path:
        return self.inputs / "sha256" / _plain(sha256, "input")

    def input_artifact(self, sha1: str) -> Path:
        """An artifact of another flow's run that a step read (input lineage): its pickled bytes."""
        return self.inputs / "sha1" / _plain(sha1, "input artifact")

    @property
    def records(self) -> Path:
        """Run records kept here before (and after) they are pushed."""
        return self.root / "records"

    def record(self, flow: str, run_id: str) -> Path:
        return self.records / _plain(flow, "flow name") / f"{_plain(run_id, 'run id')}.json"

    @property
    def pending(self) -> Path:
        """Runs Metaflow finished that are not recorded yet (``repro recover`` records them)."""
        return self.root / "pending"

    @property
    def replays(self) -> Path:
        return self.root / "replays"

    @property
    def tmp(self) -> Path:
        """Temporary files, one folder per repro process (``adapter/scratch``), removed once it is gone."""
        return self.root / "tmp"

    def replays_of(self, flow: str) -> Path:
        """Working folders of the replays of ``flow`` (code, datastore)."""
        return self.replays / _plain(flow, "flow name")

    @property
    def pycache(self) -> Path:
        """Bytecode of step interpreters (PYTHONPYCACHEPREFIX)."""
        return self.root / "pycache"

    @property
    def interpreters(self) -> Path:
        """What each interpreter probe found, keyed by path and the file's mtime, size and inode."""
        return self.root / "interpreters.json"

    @property
    def pytest(self) -> Path:
        return self.root / "pytest"

    def pytest_session(self, uid: str) -> Path:
        """One ``pytest --repro`` session's outcomes, shared by its xdist workers."""
        return self.pytest / _plain(uid, "pytest session id")

    @property
    def store(self) -> Path:
        """The default store's folder (``file://$REPRO_HOME/store``)."""
        return self.root / "store"

    @property
    def images(self) -> Path:
        """Container base images: root file systems as ``<recipe key>.tar`` (``repro image build``),
        so a new Docker data root needs only an import, not a new debootstrap."""
        return self.root / "images"

    def image_rootfs(self, key: str) -> Path:
        return self.images / f"{_plain(key, 'image recipe key')}.tar"

    @property
    def container_runtime(self) -> Path:
        """repro's own dependencies for the Python of a container image, mounted read-only into
        container replays: ``<runtime key>/``."""
        return self.root / "container-runtime"

    @property
    def pythons(self) -> Path:
        """Interpreter snapshots packed from this machine: ``<sha256>.tar.gz`` + ``<sha256>.json``."""
        return self.root / "pythons"

    @property
    def staged(self) -> Path:
        """Objects this host staged for Batch and verified in a store: one ``<digest>.json`` per store
        and key, with the sha256, size and modification time the object had when verified."""
        return self.root / "staged"


# -- value types -----------------------------------------------------------------------------------


class _Type:
    """How a setting's value is read: ``from_text`` for a variable, ``from_toml`` for a key.
    Both raise ValueError when the value is not one of ``expects``."""

    label = ""  # for README's table
    expects = ""  # for error messages

    def from_text(self, text: str) -> Any:
        return text

    def from_toml(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.from_text(value)
        raise ValueError

    def anchored(self, value: Any, base: Path) -> Any:
        """``value`` with the relative paths it holds made absolute against ``base`` (the folder of the
        ``pyproject.toml`` for a key, the current folder for a variable)."""
        return value


class _Text(_Type):
    label = "text"
    expects = "a string"


class _Path(_Type):
    label = "path"
    expects = "a path"

    def from_text(self, text: str) -> Path:
        return Path(text).expanduser().resolve()


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class _Flag(_Type):
    label = "boolean"
    expects = "one of " + ", ".join(_TRUE + _FALSE)

    def from_text(self, text: str) -> bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError

    def from_toml(self, value: Any) -> bool:
        return value if isinstance(value, bool) else super().from_toml(value)


class _Bytes(_Type):
    label = "bytes (integer ≥ 0)"
    expects = "a whole number of bytes, 0 or more"

    def from_text(self, text: str) -> int:
        number = int(text.strip())
        if number < 0:
            raise ValueError
        return number

    def from_toml(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return self.from_text(str(value))
        return super().from_toml(value)


class _Words(_Type):
    label = "list (spaces or commas between items)"
    expects = "a string or a list of strings"

    def from_text(self, text: str) -> tuple[str, ...]:
        return tuple(v for v in text.replace(",", " ").split() if v)

    def from_toml(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        return super().from_toml(value)


class _Platforms(_Words):
    expects = "platform names among " + ", ".join(PLATFORM_NAMES) + " (spaces or commas between them)"

    def from_text(self, text: str) -> tuple[str, ...]:
        return self._known(super().from_text(text))

    def from_toml(self, value: Any) -> tuple[str, ...]:
        return self._known(super().from_toml(value))

    @staticmethod
    def _known(names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in PLATFORM_NAMES]
        if unknown:
            raise ValueError(f"unknown platform {unknown[0]!r}")
        return names


_URL_SCHEMES = ("http", "https", "file")


def _source(text: str) -> str:
    """A package source as written (an index or a find-links entry): an http(s):// or file:// URL, or a
    path; ValueError says what is wrong with anything else."""
    if "://" not in text:
        if not text.strip() or any(c in text for c in "\0\n\r"):
            raise ValueError(f"{text!r} is neither a URL nor a path")
        return text
    parsed = urlparse(text)
    if parsed.scheme not in _URL_SCHEMES or (parsed.scheme != "file" and not parsed.netloc) or " " in text:
        raise ValueError(f"{text!r} is not an http://, https:// or file:// URL")
    return text


def _anchor(source: str, base: Path) -> str:
    """A path made absolute against ``base`` (a URL as it is)."""
    return source if "://" in source else str((base / Path(source).expanduser()).resolve())


class _Source(_Type):
    label = "text"  # README's table says so (settings' labels are kept in step with it)
    expects = "an http://, https:// or file:// URL, or a folder"

    def from_text(self, text: str) -> str:
        return _source(text.strip())

    def anchored(self, value: Any, base: Path) -> Any:
        return _anchor(value, base)


class _Sources(_Words):
    expects = "http://, https:// or file:// URLs, or folders (spaces or commas between them)"

    def from_text(self, text: str) -> tuple[str, ...]:
        return tuple(_source(v) for v in super().from_text(text))

    def from_toml(self, value: Any) -> tuple[str, ...]:
        return tuple(_source(v) for v in super().from_toml(value))

    def anchored(self, value: Any, base: Path) -> Any:
        return tuple(_anchor(v, base) for v in value)


class _Choice(_Type):
    def __init__(self, *choices: str):
        self.choices = choices
        self.label = " \\| ".join(f"`{c}`" for c in choices)
        self.expects = "one of " + ", ".join(choices)

    def from_text(self, text: str) -> str:
        if text not in self.choices:
            raise ValueError
        return text


class _HashSeed(_Type):
    label = "`random` \\| 0–4294967295"
    expects = "'random' or an integer from 0 to 4294967295 (as PYTHONHASHSEED)"

    def from_text(self, text: str) -> str:
        if text != "random" and not (text.isdigit() and int(text) <= 4294967295):
            raise ValueError
        return text

    def from_toml(self, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return self.from_text(str(value))
        return super().from_toml(value)


class _Positive(_Type):
    """A number above 0: seconds (``float``) or a count (``int``)."""

    def __init__(self, kind: type, label: str):
        self.kind, self.label = kind, label
        self.expects = f"{'a number' if kind is float else 'a whole number'} above 0"

    def from_text(self, text: str) -> Any:
        number = self.kind(text.strip())
        if not number > 0:
            raise ValueError
        return number

    def from_toml(self, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.from_text(str(value))
        return super().from_toml(value)


class _InstanceFolder(_Type):
    """A folder on another machine (a Batch instance): an absolute path of plain characters (it goes into
    a job's command unquoted), or ``off``."""

    label = "absolute path \\| `off`"
    # AWS names a Batch volume after its host path: letters, digits, - and _ (Metaflow turns / and . into _)
    expects = "an absolute path of letters, digits and ._/- only, or 'off'"

    def from_text(self, text: str) -> str:
        text = text.strip()
        if text == "off" or (re.fullmatch(r"/[A-Za-z0-9_.-][A-Za-z0-9_./-]*", text) and "/../" not in text + "/"):
            return text
        raise ValueError


TEXT, PATH, FLAG, BYTES, WORDS, HASH_SEED = _Text(), _Path(), _Flag(), _Bytes(), _Words(), _HashSeed()


# -- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting: its ``Settings`` field ``name``, its variable and/or ``[tool.repro]`` key."""

    name: str
    env: str | None
    key: str | None
    type: _Type
    default: Any  # a value, or a function of the settings read before this one
    doc: str
    shown_default: str = ""  # README's wording of the default, when the value itself would not do

    def default_text(self) -> str:
        if self.shown_default:
            return self.shown_default
        if self.default is None or self.default == ():
            return "—"
        if isinstance(self.default, bool):
            return "`1`" if self.default else "`0`"
        return f"`{self.default}`"

    def read(self, environ, table: dict, pyproject: Path | None, before: dict) -> tuple[Any, str]:
        """(value, origin): the variable, else the key, else the default. Origin says which."""
        if self.env and (text := environ.get(self.env)):  # an empty variable counts as unset
            try:
                return self.type.anchored(self.type.from_text(text), Path.cwd()), self.env
            except ValueError as exc:
                raise BadInput(
                    f"{self.env}={text!r} in the environment is not valid{_reason(exc)}: expected {self.type.expects}"
                ) from None
        value = table.get(self.key) if self.key else None
        if value is not None and value != "":
            where = f"{pyproject}: [tool.repro] {self.key}"
            try:
                return self.type.anchored(self.type.from_toml(value), Path(str(pyproject)).parent), where
            except ValueError as exc:
                raise BadInput(
                    f"{where} = {value!r} is not valid{_reason(exc)}: expected {self.type.expects}"
                ) from None
        default = self.default(before) if callable(self.default) else self.default
        return default, "default"

    def from_environment(self, environ=None) -> Any:
        """This setting's value from the environment alone (or the default)."""
        return self.read(os.environ if environ is None else environ, {}, None, {})[0]


def _reason(exc: ValueError) -> str:
    """What a type's ValueError says, as ``" (why)"`` ("" when it says nothing)."""
    return f" ({exc})" if str(exc) else ""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "home",
        "REPRO_HOME",
        "home",
        PATH,
        lambda _: Path(DEFAULT_HOME).expanduser().resolve(),
        "package cache, environments, code packages, run records, replays",
        shown_default=f"`{DEFAULT_HOME}`",
    ),
    Setting(
        "store",
        "REPRO_STORE",
        "store",
        TEXT,
        lambda before: before["home"].store.as_uri(),
        "where runs are recorded and replayed from: `file://…` or `s3://bucket/prefix`",
        shown_default="`file://$REPRO_HOME/store`",
    ),
    Setting(
        "conda_source",
        "REPRO_CONDA_SOURCE",
        "conda-source",
        _Choice(*CONDA_SOURCES),
        "conda",
        "where `@conda` libraries come from: conda packages from `channels` (solved and installed with "
        "py-rattler), or the same names served from PyPI (`pypi`, with a name map such as `pytorch` → `torch`)",
    ),
    Setting(
        "channels",
        "REPRO_CONDA_CHANNELS",
        "channels",
        WORDS,
        DEFAULT_CHANNELS,
        'conda channels for `conda-source = "conda"` (a decorator\'s `channels` wins): names (`conda-forge`), '
        "URLs, or local folders (relative to the `pyproject.toml`)",
        shown_default="`conda-forge`",
    ),
    Setting(
        "virtual_packages",
        "REPRO_VIRTUAL_PACKAGES",
        "virtual-packages",
        WORDS,
        (),
        "conda virtual packages the solver may assume, e.g. `__glibc=2.28 __cuda=12.4` (default: detected on "
        "this machine for its own platform, none for others); recorded in the lock",
    ),
    Setting(
        "platforms",
        "REPRO_PLATFORMS",
        "platforms",
        _Platforms(),
        (),
        "platforms locks are made for (default: this machine's, plus those already in the lock)",
    ),
    Setting(
        "index_url",
        "REPRO_INDEX_URL",
        "index-url",
        _Source(),
        None,
        "package index uv resolves and downloads from (default: uv's own, PyPI)",
    ),
    Setting(
        "find_links",
        "REPRO_FIND_LINKS",
        "find-links",
        _Sources(),
        (),
        "extra folders or URLs of package files uv may use",
    ),
    Setting(
        "artifact_max_bytes",
        "REPRO_ARTIFACT_MAX_BYTES",
        "artifact-max-bytes",
        BYTES,
        DEFAULT_ARTIFACT_MAX_BYTES,
        "artifacts up to this size get a copy in the store, for semantic diffs",
        shown_default="`16777216` (16 MiB)",
    ),
    Setting(
        "frozen", "REPRO_FROZEN", None, FLAG, False, "a stale lock is an error instead of being re-resolved (for CI)"
    ),
    Setting(
        "offline",
        "REPRO_OFFLINE",
        None,
        FLAG,
        False,
        "build environments from the package cache only, never the index (set by replays)",
    ),
    Setting(
        "pythonhashseed",
        protocol.HASH_SEED_VAR,
        None,
        HASH_SEED,
        None,
        "hash seed for every task of a run (replays set the recorded one)",
        shown_default="`PYTHONHASHSEED`, else `0`",
    ),
    Setting(
        "s3_endpoint",
        "AWS_ENDPOINT_URL_S3",
        None,
        TEXT,
        None,
        "endpoint of an S3-compatible server for `s3://` stores (boto3's own variable)",
    ),
    Setting(
        "s3_connect_timeout",
        "REPRO_S3_CONNECT_TIMEOUT",
        None,
        _Positive(float, "seconds"),
        10.0,
        "`s3://` stores: seconds to wait for a connection, per attempt",
    ),
    Setting(
        "s3_read_timeout",
        "REPRO_S3_READ_TIMEOUT",
        None,
        _Positive(float, "seconds"),
        60.0,
        "`s3://` stores: seconds an answer may stay silent, per attempt",
    ),
    Setting(
        "s3_attempts",
        "REPRO_S3_ATTEMPTS",
        None,
        _Positive(int, "integer ≥ 1"),
        3,
        "`s3://` stores: attempts per request (retries back off 0.5 s, 1 s, 2 s, ... and each says so on stderr)",
    ),
    Setting(
        "ssl_cert_file",
        "SSL_CERT_FILE",
        None,
        TEXT,
        None,
        "CA bundle (PEM) trusted for the package index (first choice; e.g. a TLS-intercepting proxy's CA)",
    ),
    Setting(
        "requests_ca_bundle",
        "REQUESTS_CA_BUNDLE",
        None,
        TEXT,
        None,
        "CA bundle trusted for the package index when `SSL_CERT_FILE` is not set",
    ),
    Setting(
        "pip_cert",
        "PIP_CERT",
        None,
        TEXT,
        None,
        "CA bundle trusted when neither is set (else pip's `cert` from its config files; else the system's store)",
    ),
    Setting("debug", "REPRO_DEBUG", None, FLAG, False, "the command line shows a traceback on an internal error"),
    Setting(
        "baseline",
        None,
        "baseline",
        TEXT,
        None,
        "`pytest --repro`: compare each flow's run with this recorded run (`FlowName/run_id` or `latest`)",
    ),
    Setting("update", None, "update", FLAG, False, "`pytest --repro`: record the run in the store as the new baseline"),
    Setting(
        "drift", None, "drift", FLAG, False, "`pytest --repro`: also re-resolve every lock and fail on resolution drift"
    ),
    Setting(
        "report",
        None,
        "report",
        TEXT,
        DEFAULT_REPORT_DIR,
        "`pytest --repro`: folder for the reports (relative to pytest's rootdir)",
    ),
    Setting(
        "on",
        None,
        "on",
        _Choice(*REPLAY_PLACES),
        "local",
        "`pytest --repro`: also replay each run from the store in a fresh container (`docker`: the store must be "
        "`file://` or S3) or on AWS Batch (`batch`: an S3 store and Metaflow's Batch settings); the flow's items "
        "pass only if that replay is identical",
    ),
    Setting(
        "nondeterministic",
        None,
        "nondeterministic",
        WORDS,
        (),
        "artifacts accepted as nondeterministic, `Flow.step.artifact` (shell patterns allowed): `pytest --repro "
        "--repro-repeat N` warns instead of failing when they differ between repeats",
    ),
    Setting(
        "batch_cache",
        "REPRO_BATCH_CACHE",
        "batch-cache",
        _InstanceFolder(),
        DEFAULT_BATCH_CACHE,
        "`--with batch`: a folder of each Batch instance (a host volume every job mounts) where jobs keep verified "
        "interpreters and built envs for the instance's later jobs; `off` builds every job's env from the store "
        "(Fargate queues never get one: they have no host volumes)",
    ),
    Setting(
        "archive_max_bytes",
        "REPRO_ARCHIVE_MAX_BYTES",
        "archive-max-bytes",
        BYTES,
        DEFAULT_ARCHIVE_MAX_BYTES,
        "the most the files of one archive repro unpacks may hold together (a code package, an interpreter "
        "snapshot, an IncludeFile input): a larger one is refused, named, before it fills the disk",
        shown_default="`2147483648` (2 GiB)",
    ),
    Setting(
        "input_max_bytes",
        "REPRO_INPUT_MAX_BYTES",
        "input-max-bytes",
        BYTES,
        DEFAULT_INPUT_MAX_BYTES,
        "the most the data files a run's steps read from the flow's folder (and its code package lacks) may hold "
        "together in its snapshot: they are given back to a replay; larger ones are recorded (path, size, sha256) "
        "but not kept, and a replay names them up front",
        shown_default="`268435456` (256 MiB)",
    ),
    Setting(
        "hermetic",
        "REPRO_HERMETIC",
        "hermetic",
        FLAG,
        False,
        "`pytest --repro`, `repro run`: fail a step that read anything a replay cannot give back (files outside "
        "the snapshot and the flow's folder, data files past input-max-bytes, network endpoints it contacted), "
        "naming them",
    ),
    Setting(
        "hermetic_allow",
        "REPRO_HERMETIC_ALLOW",
        "hermetic-allow",
        WORDS,
        (),
        "what strict mode (`hermetic`) accepts being read from outside the snapshot: path globs "
        "(`/etc/myapp/*`, `data/big/*` relative to the flow's folder) and hosts (`huggingface.co` for any port, "
        "`127.0.0.1:8765`, `*.internal`)",
    ),
    Setting(
        "image_mirror",
        "REPRO_IMAGE_MIRROR",
        None,
        TEXT,
        DEFAULT_IMAGE_MIRROR,
        "`repro image build`: the Debian mirror the base image is bootstrapped from (part of its recipe key: "
        "another mirror makes another image; a replay of a container run imports the recorded image instead)",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Values of ``SETTINGS`` (one field each, same names) for one project."""

    home: Home
    store: str
    conda_source: str | None = "conda"
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    virtual_packages: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    index_url: str | None = None
    find_links: tuple[str, ...] = ()
    artifact_max_bytes: int = DEFAULT_ARTIFACT_MAX_BYTES
    frozen: bool = False
    offline: bool = False
    pythonhashseed: str | None = None
    s3_endpoint: str | None = None
    s3_connect_timeout: float = 10.0
    s3_read_timeout: float = 60.0
    s3_attempts: int = 3
    ssl_cert_file: str | None = None
    requests_ca_bundle: str | None = None
    pip_cert: str | None = None
    debug: bool = False
    baseline: str | None = None
    update: bool = False
    drift: bool = False
    report: str = DEFAULT_REPORT_DIR
    on: str = "local"
    nondeterministic: tuple[str, ...] = ()
    batch_cache: str = DEFAULT_BATCH_CACHE
    archive_max_bytes: int = DEFAULT_ARCHIVE_MAX_BYTES
    input_max_bytes: int = DEFAULT_INPUT_MAX_BYTES
    hermetic: bool = False
    hermetic_allow: tuple[str, ...] = ()
    image_mirror: str = DEFAULT_IMAGE_MIRROR
    config_file: Path | None = None  # the pyproject.toml read, if any
    origins: dict = field(default_factory=dict, compare=False, repr=False)  # name -> variable, file key, "default"

    def given(self, name: str):
        """The value of setting ``name`` if the environment or the file set it, else None."""
        return getattr(self, name) if self.origins.get(name, "default") != "default" else None


_NOT_SETTINGS = {"config_file", "origins"}
assert [f.name for f in fields(Settings) if f.name not in _NOT_SETTINGS] == [s.name for s in SETTINGS], (
    "Settings' fields and SETTINGS must name the same settings, in the same order"
)


def find_pyproject(start: Path) -> Path | None:
    start = start.resolve()
    for folder in [start, *start.parents] if start.is_dir() else [start.parent, *start.parent.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _tool_repro(pyproject: Path) -> dict:
    try:
        with pyproject.open("rb") as fh:
            data = tomllib.load(fh)
    except UnicodeDecodeError as exc:
        raise BadInput(f"{pyproject}: cannot read [tool.repro]: the file is not UTF-8 text ({exc})") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{pyproject}: cannot read [tool.repro]: {exc}") from exc
    table = data.get("tool", {}).get("repro", {})
    if not isinstance(table, dict):
        raise BadInput(f"{pyproject}: [tool.repro] must be a table")
    return table


def load_settings(start: Path | None = None, environ: dict | None = None) -> Settings:
    """Settings for work on the flow at (or folder) ``start``; defaults to the current folder."""
    env = os.environ if environ is None else environ
    pyproject = find_pyproject(Path(start) if start else Path.cwd())
    table = _tool_repro(pyproject) if pyproject else {}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for setting in SETTINGS:
        value, origins[setting.name] = setting.read(env, table, pyproject, values)
        values[setting.name] = Home(value) if setting.name == "home" else value
    return Settings(**values, config_file=pyproject, origins=origins)


def _missing_local(source: str) -> str:
    """The local path a package source names when nothing is there ("" for a remote URL or a path that exists)."""
    if "://" in source:
        parsed = urlparse(source)
        if parsed.scheme != "file":
            return ""
        source = unquote(parsed.path)
    return "" if Path(source).exists() else source


def check_package_sources(settings: Settings) -> None:
    """The package index and find-links that are local folders or files exist: else a ``BadInput`` that names
    the setting (the variable, or the file and key), before uv is asked and would blame the index."""
    for name in ("index_url", "find_links"):
        value = getattr(settings, name)
        for source in (value,) if isinstance(value, str) else value or ():
            missing = _missing_local(source)
            if missing:
                origin = settings.origins.get(name, BY_NAME[name].env)
                raise BadInput(
                    f"{origin}: {missing} does not exist (no such folder or file); set it to a folder of package "
                    "files or an http(s):// URL",
                    path=missing,
                )


#: Metaflow `run` options repro passes itself: given after ``--``, the run would escape repro (its id
#: written elsewhere, repro unable to find the run it started)
OWN_RUN_OPTIONS = ("--run-id-file",)


def check_metaflow_args(args: list[str], where: str = "") -> list[str]:
    """``args``, once checked before Metaflow starts: an option repro gives itself (``OWN_RUN_OPTIONS``) and
    a value with a NUL byte (no command line can carry one) are refused. ``where``: what gave them (a record)."""
    at = f"{where}: " if where else ""
    for i, arg in enumerate(args):
        option = arg.split("=", 1)[0]
        if option in OWN_RUN_OPTIONS:
            raise BadInput(
                f"{at}{option}: repro passes this Metaflow option itself (it finds the run it records through it); "
                "drop it from the arguments after --. `repro store ls` lists the recorded runs."
            )
        if "\0" in arg:
            previous = args[i - 1] if i else ""
            name = option if arg.startswith("--") else previous if previous.startswith("--") else f"argument {i + 1}"
            raise BadInput(
                f"{at}Metaflow run option {name}: the value {arg!r} holds a NUL byte, which no command line can "
                "carry; nothing was run"
            )
    return args


def env_setting(name: str, environ: dict | None = None) -> Any:
    """One setting from the environment alone, without reading any pyproject.toml."""
    return BY_NAME[name].from_environment(environ)


def environ_for(**values: Any) -> dict[str, str]:
    """Environment variables that give a child process these settings: ``environ_for(frozen=True)``."""
    out = {}
    for name, value in values.items():
        setting = BY_NAME[name]
        if setting.env is None:
            raise ValueError(f"setting {name} has no environment variable")
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, (tuple, list)):
            text = " ".join(value)
        elif isinstance(value, Home):
            text = str(value.root)
        else:
            text = str(value)
        try:
            setting.type.from_text(text)  # what we pass on must read back
        except ValueError:
            raise BadInput(f"{setting.env}={text!r} is not valid: expected {setting.type.expects}") from None
        out[setting.env] = text
    return out


def spec_settings(settings: Settings) -> dict[str, Any]:
    """The settings that shape a flow's specs (and so its spec ids), as a run record keeps them:
    a replay passes them back (``spec_environ``) so the recorded lock still matches."""
    out: dict[str, Any] = {"conda_source": settings.conda_source}
    if settings.conda_source == "conda":
        out["channels"] = " ".join(settings.channels)
        out["virtual_packages"] = " ".join(settings.virtual_packages)
    return out


#: the settings ``spec_settings`` records: each is kept as text (words joined by spaces); conda_source
#: may be null or "" in records made before it had a default
RECORDED_SETTINGS = ("conda_source", "channels", "virtual_packages")


def recorded_setting_problem(key: str, value: Any) -> str:
    """Why ``value`` is not a recorded value of setting ``key`` ("" if it is, or ``key`` is not one of
    ``RECORDED_SETTINGS``): its text must read as the SETTINGS table's type says."""
    if key not in RECORDED_SETTINGS or (key == "conda_source" and value in (None, "")):
        return ""
    setting = next(s for s in SETTINGS if s.name == key)
    if not isinstance(value, str):
        return f"text ({setting.type.expects})"
    try:
        setting.type.from_text(value)
    except ValueError:
        return setting.type.expects
    return ""


def spec_environ(recorded: dict[str, Any]) -> dict[str, str]:
    """Environment variables that give a child process the settings ``spec_settings`` recorded."""
    for key in RECORDED_SETTINGS:
        if key in recorded and (problem := recorded_setting_problem(key, recorded[key])):
            raise BadInput(f"the recorded setting {key} = {recorded[key]!r} is not {problem}; the record is corrupt")
    values = {k: recorded[k] for k in ("conda_source", "channels", "virtual_packages") if recorded.get(k)}
    if "conda_source" in recorded and not recorded["conda_source"]:
        # recorded before conda-source had a default: no @conda step could be locked then, so every
        # step was a PyPI env, which is what "pypi" gives (the default now, "conda", would not)
        values["conda_source"] = "pypi"
    if "channels" in values or "virtual_packages" in values:
        values = {k: (tuple(v.split()) if k != "conda_source" else v) for k, v in values.items()}
    return environ_for(**values)


def debug_requested(environ: dict | None = None) -> bool:
    """REPRO_DEBUG, for the last-resort error handler: a value that is not a boolean counts as yes."""
    try:
        return bool(env_setting("debug", environ))
    except BadInput:
        return True


def markdown_table() -> str:
    """README's settings table (``python -m metaflow_repro.settings`` prints it)."""
    rows = ["| Variable | `[tool.repro]` key | Type | Default | What it does |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        rows.append(
            "| "
            + " | ".join(
                [f"`{s.env}`" if s.env else "—", f"`{s.key}`" if s.key else "—", s.type.label, s.default_text(), s.doc]
            )
            + " |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
