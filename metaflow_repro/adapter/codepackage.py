"""Metaflow's code package, extracted once per content hash under ``REPRO_HOME/code``.

Step interpreters import Metaflow and repro's extension from it. Reusing one folder per package
(instead of a fresh temporary folder per run) lets compiled bytecode be reused across runs: it is
compiled once, beside the sources, by each step interpreter before the folder is renamed into place
(``plugins/bytecode.py``: every .pyc written whole, or no folder); tasks never write bytecode.

``extract_tar`` is the one way a code package is unpacked (here, and a replay's from the store):
member by member from the stream, each refused before it is written if it would leave the folder, is
not a file or folder, or would take the archive past ``archive-max-bytes`` (``gunzip`` bounds an
IncludeFile input the same way).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from metaflow_extensions.repro.plugins import bytecode
from metaflow_repro.errors import BadInput
from metaflow_repro.fsutil import DEFAULT_MODE, atomic_write
from metaflow_repro.settings import Home, env_setting


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


def extract(package, home: Home | str | Path, pythons: Iterable[str] = ()) -> tuple[str, dict]:
    """Save and extract ``package`` (a MetaflowPackage) under REPRO_HOME ``home`` if not yet there, its
    modules compiled by each interpreter of ``pythons`` (the steps'); return (sha256, env vars)."""
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
            for python in dict.fromkeys(os.path.realpath(p) for p in pythons if p and os.path.isfile(p)):
                bytecode.compile_with(python, [str(tmp)])  # a full disk: OSError, nothing renamed
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
    extract_tar(blob, dest, env_setting("archive_max_bytes"), f"code package {blob.name}")


def _size(n: int) -> str:
    return f"{n} bytes ({n / (1 << 20):.1f} MiB)" if n >= 1 << 20 else f"{n} bytes"


def too_big(what: str, size: int, limit: int) -> BadInput:
    """The error for an archive whose files would hold more than ``limit`` bytes: names it, the
    bound and the setting that raises it."""
    return BadInput(
        f"{what} holds more than {_size(limit)} (at least {_size(size)}), the most an archive may hold "
        "(REPRO_ARCHIVE_MAX_BYTES / [tool.repro] archive-max-bytes); nothing from it was used. "
        "Raise the setting if the archive is genuine",
        path=what,
    )


def _bounded(tar: tarfile.TarFile, limit: int, what: str) -> Iterator[tarfile.TarInfo]:
    """The members of ``tar``, read one by one from its stream, each checked before it is extracted:
    the sizes seen so far (headers say what extraction writes) within ``limit``; without tarfile's
    filters (Python < 3.10.12), only files and folders inside the destination."""
    total = 0
    for member in tar:
        total += max(member.size, 0)
        if total > limit:
            raise too_big(f"{what} (at member {member.name!r})", total, limit)
        if not hasattr(tarfile, "data_filter"):
            parts = member.name.split("/")
            if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
                raise tarfile.TarError(f"unsafe member {member.name!r}")
        yield member


def extract_tar(archive: Path, dest: Path, limit: int, what: str) -> None:
    """Unpack the tar ``archive`` (any compression) into the existing folder ``dest``, refusing
    (BadInput naming ``what``) a member that leaves ``dest``, a link or device (tarfile's "data"
    filter), or files past ``limit`` bytes in all, before that member is written. On a refusal
    ``dest`` is emptied."""
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            members = _bounded(tar, limit, what)
            if hasattr(tarfile, "data_filter"):  # refuses absolute paths, links out of the folder, devices
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except (tarfile.TarError, BadInput, EOFError, zlib.error, OSError) as exc:
        _empty(dest)
        if isinstance(exc, BadInput):
            raise
        if isinstance(exc, OSError) and not isinstance(exc, tarfile.TarError) and exc.filename:
            raise  # the destination's own disk: what it is
        raise BadInput(
            f"{what} is unsafe or not a code package: {type(exc).__name__}: {exc}; nothing from it was used",
            path=what,
        ) from None


def _empty(folder: Path) -> None:
    for entry in list(folder.iterdir()) if folder.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def gunzip(data: bytes, limit: int, what: str) -> bytes:
    """``data`` (one gzip stream) inflated, refused (BadInput naming ``what``) past ``limit`` bytes
    before more than that is ever held, or if it is not whole gzip."""
    out = bytearray()
    rest = data
    while rest:  # one gzip member after another, as gzip.decompress
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflate.decompress(rest, limit + 1 - len(out))  # never 0 (no bound) here
        except zlib.error as exc:
            raise BadInput(f"{what} is not gzip data ({exc})", path=what) from None
        if len(out) > limit:
            raise too_big(what, len(out), limit)
        if not inflate.eof:
            raise BadInput(f"{what} is not whole gzip data (it is cut short)", path=what)
        rest = inflate.unused_data
    return bytes(out)
