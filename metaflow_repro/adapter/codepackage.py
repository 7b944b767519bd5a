"""Metaflow's code package, extracted once per content hash under ``REPRO_HOME/code``.

Step interpreters import Metaflow and repro's extension from it. Reusing one folder per package
(instead of a fresh temporary folder per run) lets compiled bytecode be reused across runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from metaflow_repro.fsutil import DEFAULT_MODE, atomic_write
from metaflow_repro.settings import Home


def _blob_bytes(package) -> bytes:
    blob = package.blob
    return blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob)


def _home(home: Home | str | Path) -> Home:
    return home if isinstance(home, Home) else Home(Path(home))


def save_blob(data: bytes, home: Home | str | Path) -> tuple[str, Path]:
    """Keep the package itself (``<sha256>.tar.gz``): it is what a snapshot stores and replays."""
    digest = hashlib.sha256(data).hexdigest()
    target = _home(home).code_package(digest)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
    return digest, target


def extract(package, home: Home | str | Path) -> tuple[str, dict]:
    """Save and extract ``package`` (a MetaflowPackage) under REPRO_HOME ``home`` if not yet there;
    return (sha256, env vars)."""
    digest, blob = save_blob(_blob_bytes(package), home)
    folder = _home(home).code_folder(digest)
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder.parent))
        try:
            # From the package's own bytes, as a remote worker gets them: Metaflow's extract_into links
            # to the source files of the run that built the package, and a folder shared by content
            # must not depend on where (or whether) that run's files still are.
            _extract_tar(blob, tmp)
            os.chmod(tmp, 0o777 & DEFAULT_MODE | 0o111)  # mkdtemp's 0700 would hide it from other users
            os.rename(tmp, folder)  # atomic; if another run won the race, use its copy
        except OSError:
            if not folder.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    env = {}
    for key, value in (package.get_post_extract_env_vars(package.package_metadata, str(folder)) or {}).items():
        if key.endswith(":"):
            env[key[:-1]] = value
        elif key == "PYTHONPATH":
            env[key] = os.pathsep.join([value, str(folder)])
        else:
            env[key] = value
    env.setdefault("PYTHONPATH", str(folder))
    return digest, env


def import_paths(folder: Path) -> list[str]:
    """What a task puts on ``sys.path`` from an extracted code package: Metaflow 2.19 keeps itself and
    the extensions under ``.mf_code``, the user's files at the top. Host-side probes that unpickle a
    task's artifacts (pickle checks, comparisons) need the same paths, or every artifact whose class
    lives in ``metaflow`` (an IncludeFile's value) looks unreadable."""
    folder = Path(folder)
    inner = folder / ".mf_code"
    return [str(inner), str(folder)] if inner.is_dir() else [str(folder)]


def _extract_tar(blob: Path, dest: Path) -> None:
    import tarfile

    with tarfile.open(blob) as tar:
        if hasattr(tarfile, "data_filter"):  # refuses absolute paths, links out of the folder, devices
            tar.extractall(dest, filter="data")
        else:  # Python < 3.10.12: the package was built here, by Metaflow, from the user's own files
            tar.extractall(dest)
