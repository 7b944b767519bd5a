"""`repro doctor`: is this machine ready to lock, build, run and push? One row per fact.

Each check says what it found and whether that is healthy. Checks never raise: a failure is a row
(``ok=False``) with the reason, so one broken thing never hides the others.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.errors import BadInput, ReproError
from metaflow_repro.settings import Settings

#: REPRO_HOME with less free space than this is reported as unhealthy (one env can take hundreds of MB)
MIN_FREE_BYTES = 1024**3
#: seconds the store check waits for an S3 endpoint before calling it unreachable
STORE_TIMEOUT = 5


@dataclass(frozen=True)
class Check:
    what: str  # "python", "uv", "store", "TLS trust", "REPRO_HOME"
    ok: bool
    found: str  # what was found: a version, a path, a URI
    detail: str = ""  # why it is unhealthy, or more about it


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


def checks(settings: Settings) -> list[Check]:
    return [*interpreters(), uv(), store(settings.store), tls_trust(), home(settings)]
