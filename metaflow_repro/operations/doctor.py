"""`repro doctor`: is this machine ready to lock, build, run and push? One row per fact.

Each check says what it found and whether that is healthy. Checks never raise: a failure is a row
(``ok=False``) with the reason, so one broken thing never hides the others.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.errors import BadInput, ReproError
from metaflow_repro.settings import Settings

#: REPRO_HOME with less free space than this is reported as unhealthy (one env can take hundreds of MB)
MIN_FREE_BYTES = 1024**3
#: seconds the store check waits for an S3 endpoint before calling it unreachable
STORE_TIMEOUT = 5
#: seconds a conda channel, and the Docker daemon, have to answer
CHANNEL_TIMEOUT = DOCKER_TIMEOUT = 5
#: seconds Metaflow has to import and name its extensions, in a process of its own
METAFLOW_TIMEOUT = 60
#: the Metaflow releases repro supports: [oldest, first unsupported)
METAFLOW_RANGE = ((2, 16), (2, 20))
METAFLOW_PIN = "metaflow>=2.16,<2.20"


@dataclass(frozen=True)
class Check:
    what: str  # "python", "uv", "store", "TLS trust", "REPRO_HOME", "conda channel", "docker", "metaflow", ...
    ok: bool
    found: str  # what was found: a version, a path, a URI
    detail: str = ""  # why it is unhealthy and what to do, or more about it
    needed: bool = True  # False: only some commands need it (docker: `--on docker`), so not ok is no problem


def interpreters() -> list[Check]:
    from metaflow_repro.env import pythons

    found = pythons.installed()
    if not found:
        return [Check("python", False, "none", "no CPython 3.7+ found on PATH, under pyenv or by uv")]
    return [Check("python", True, i.version, i.path) for i in found]


def uv() -> Check:
    from metaflow_repro.env.uvtool import uv_bin

    try:
        exe = uv_bin()
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (ReproError, OSError, subprocess.TimeoutExpired) as exc:
        return Check("uv", False, "missing", str(exc))
    if out.returncode != 0:
        return Check("uv", False, exe, out.stderr.strip()[-300:])
    return Check("uv", True, out.stdout.strip(), exe)


def store(uri: str) -> Check:
    """A local store: its folder exists (or can be created) and is writable. S3: head_bucket answers."""
    if uri.startswith("s3://"):
        return _s3_store(uri)
    if "://" in uri and not uri.startswith("file://"):
        return Check("store", False, uri, "unsupported store: use file:///path/to/folder or s3://bucket/prefix")
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return Check("store", False, uri, f"{existing} is not a folder")
    problem = _not_writable(existing)
    if problem:
        return Check("store", False, uri, problem)
    return Check("store", True, uri, "exists" if existing == path else "created on first push")


def _s3_store(uri: str) -> Check:
    from urllib.parse import urlparse

    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    from metaflow_repro.settings import env_setting

    bucket = urlparse(uri).netloc
    if not bucket:
        return Check("store", False, uri, "an S3 store needs a bucket: s3://bucket/prefix")
    config = Config(retries={"max_attempts": 1}, connect_timeout=STORE_TIMEOUT, read_timeout=STORE_TIMEOUT)
    endpoint = env_setting("s3_endpoint")
    try:
        client = boto3.session.Session().client("s3", config=config, endpoint_url=endpoint)
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        return Check("store", False, uri, f"bucket {bucket}: {code or exc}")
    except (BotoCoreError, ValueError) as exc:
        return Check("store", False, uri, f"unreachable ({endpoint or 'AWS'}): {exc}")
    return Check("store", True, uri, f"bucket {bucket} answers" + (f" at {endpoint}" if endpoint else ""))


def tls_trust() -> Check:
    """Where TLS certificates are trusted from: exactly what every connection to a package index uses
    (``metaflow_repro.env.tls.trust``: SSL_CERT_FILE, REQUESTS_CA_BUNDLE, pip's cert, else the system's store)."""
    from metaflow_repro.env import tls

    try:
        chosen = tls.trust()
    except BadInput as exc:
        return Check("TLS trust", False, "a named CA bundle", str(exc))
    if chosen.cafile is not None:
        return Check("TLS trust", True, f"{chosen.source}: {chosen.cafile}")
    paths = ssl.get_default_verify_paths()
    found = paths.cafile or paths.capath or paths.openssl_cafile
    if found and os.path.exists(found):
        return Check("TLS trust", True, f"system: {found}")
    return Check("TLS trust", False, "system", "no CA bundle found: set SSL_CERT_FILE")


def _not_writable(folder: Path) -> str:
    """Why a file cannot be created in ``folder`` ("" if one can): tried for real, since permission
    bits say nothing for root or on a read-only file system."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".repro-doctor-"):
            pass
    except OSError as exc:
        return f"not writable: {exc.strerror or exc}"
    return ""


def home(settings: Settings) -> Check:
    root = settings.home.root
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return Check("REPRO_HOME", False, str(root), f"{existing} is a file, not a folder")
    problem = _not_writable(existing)
    if problem:
        return Check("REPRO_HOME", False, str(root), problem)
    free = shutil.disk_usage(existing).free
    state = "exists" if existing == root else "created on first use"
    if free < MIN_FREE_BYTES:
        return Check("REPRO_HOME", False, str(root), f"{state}, only {free // 2**20} MiB free")
    return Check("REPRO_HOME", True, str(root), f"{state}, writable, {free // 2**30} GiB free")


_CONDA_FIX = (
    "every step (a flow with no decorators too) is resolved from the conda channels while conda-source is "
    '"conda" (the default): set channels this machine reaches (`channels` under [tool.repro] or '
    'REPRO_CONDA_CHANNELS: a URL or a local folder), or conda-source = "pypi" (REPRO_CONDA_SOURCE=pypi) to '
    "serve @conda libraries from PyPI"
)


def conda_channels(settings: Settings) -> list[Check]:
    """One row per conda channel the settings resolve from: its repodata answers (a short timeout,
    TLS trusted as every index connection is), or, for a local folder, is there."""
    if settings.conda_source != "conda":
        source = settings.conda_source or "pypi"
        return [
            Check("conda channel", True, f'not used (conda-source = "{source}")', "@conda libraries come from PyPI")
        ]
    from metaflow_repro.env.conda import channel_url

    base = settings.config_file.parent if settings.config_file else Path.cwd()
    rows = []
    for name in settings.channels:
        try:
            url = channel_url(name, base)
        except BadInput as exc:
            rows.append(Check("conda channel", False, name, f"{exc}; {_CONDA_FIX}"))
            continue
        problem = _channel_problem(url)
        rows.append(Check("conda channel", not problem, url, f"{problem}; {_CONDA_FIX}" if problem else "answers"))
    return rows


def _channel_problem(url: str) -> str:
    """Why ``url``'s noarch repodata cannot be read ("" if it can): a HEAD request, never the whole file."""
    repodata = f"{url}/noarch/repodata.json"
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(url[len("file://") :])) / "noarch" / "repodata.json"
        return "" if path.is_file() else f"{path} is missing: not a conda channel"
    from metaflow_repro.env import tls

    try:
        context = tls.trust().ssl_context()
        request = urllib.request.Request(repodata, method="HEAD")
        with urllib.request.urlopen(request, timeout=CHANNEL_TIMEOUT, context=context):
            return ""
    except urllib.error.HTTPError as exc:
        return f"{repodata}: HTTP {exc.code}"
    except (OSError, ValueError, BadInput) as exc:  # URLError, timeouts, TLS, a bad CA bundle
        return f"cannot reach {repodata}: {getattr(exc, 'reason', None) or exc}"


def docker() -> Check:
    """The Docker daemon that `--on docker` replays run in (DOCKER_HOST): only those need it."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    fix = "only `repro replay --on docker` (and `--repro-on docker`) need it: start dockerd, or set DOCKER_HOST"
    try:
        import docker as sdk

        client = sdk.from_env(timeout=DOCKER_TIMEOUT)
        version = client.version().get("Version", "?")
    except Exception as exc:  # docker.errors.DockerException, requests' errors, a bad DOCKER_HOST
        return Check("docker", False, where, f"no daemon answers ({type(exc).__name__}): {fix}", needed=False)
    return Check("docker", True, f"daemon {version}", where, needed=False)


#: run in a Python of its own: Metaflow's version, and the module each of its conda/pypi environments is from
_METAFLOW_PROBE = """
import json, sys
out = {}
try:
    from metaflow.version import metaflow_version
    out["version"] = metaflow_version
    from metaflow.plugins import ENVIRONMENTS
    out["environments"] = {e.TYPE: sys.modules[e.__module__].__file__ for e in ENVIRONMENTS}
except Exception as exc:
    out["error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


def metaflow() -> list[Check]:
    """Metaflow's release (one repro supports?) and whether the conda and pypi environments Metaflow
    loaded are repro's extension, this installation's: asked of Metaflow in a process of its own."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _METAFLOW_PROBE],
            capture_output=True,
            text=True,
            timeout=METAFLOW_TIMEOUT,
            env={**os.environ, "METAFLOW_USER": os.environ.get("METAFLOW_USER", "repro")},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check("metaflow", False, "?", f"Metaflow did not answer: {exc}")]
    lines = proc.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else {}
    except ValueError:
        found = {}
    if not isinstance(found, dict) or not found:
        why = proc.stderr.strip()[-300:] or f"exit code {proc.returncode}"
        return [Check("metaflow", False, "?", f"cannot import Metaflow ({why}): pip install '{METAFLOW_PIN}'")]
    version = found.get("version", "")
    rows = [metaflow_version_check(version)] if version else []
    if "error" in found:
        return [
            *rows,
            Check("metaflow extension", False, "?", f"importing Metaflow's plugins failed: {found['error']}"),
        ]
    return [*rows, extension_check(found.get("environments") or {}, _our_environment())]


def _our_environment() -> Path:
    import metaflow_repro

    return Path(metaflow_repro.__file__).resolve().parent.parent / "metaflow_extensions/repro/plugins/environment.py"


def metaflow_version_check(version: str) -> Check:
    """Whether ``version`` is a release repro supports (METAFLOW_RANGE)."""
    low, high = METAFLOW_RANGE
    try:
        release = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        release = ()
    if len(release) == 2 and low <= release < high:
        return Check("metaflow", True, version, f"repro supports {low[0]}.{low[1]} to {high[0]}.{high[1] - 1}")
    fix = f"repro supports Metaflow {low[0]}.{low[1]} to {high[0]}.{high[1] - 1}: pip install '{METAFLOW_PIN}'"
    return Check("metaflow", False, version, fix)


def extension_check(environments: dict[str, str], ours: Path) -> Check:
    """Whether Metaflow's ``conda`` and ``pypi`` environments ({TYPE: module file}) are ``ours``."""
    for kind in ("conda", "pypi"):
        loaded = environments.get(kind)
        if loaded is None or Path(loaded).resolve() != ours:
            return Check(
                "metaflow extension",
                False,
                f"--environment={kind}: {loaded or 'none'}",
                f"Metaflow did not load repro's extension ({ours}) for --environment={kind}: another "
                "metaflow_extensions package (an older repro, another extension replacing conda/pypi) comes "
                "first on sys.path or PYTHONPATH; uninstall it, or reinstall repro in this environment",
            )
    return Check("metaflow extension", True, str(ours.parent.parent), "Metaflow's conda and pypi environments")


def checks(settings: Settings) -> list[Check]:
    return [
        *interpreters(),
        uv(),
        store(settings.store),
        tls_trust(),
        home(settings),
        *conda_channels(settings),
        docker(),
        *metaflow(),
    ]
