"""An env's ahead-of-time bytecode as one content-addressed object: packed once from the env built here, at
its first push; restored instead of compiled by a build of the same env in a container replay, which fetched
it from the store (a home that packs never restores: it compiles its envs). Disk only.

The object (store key ``bytecode/<sha256>.tar.zst``, kept here as ``REPRO_HOME/bytecode/<sha256>.tar.zst``)
is a deterministic tar (members sorted, mtime 0, owner 0, regular files only) of every
``lib/pythonX.Y/site-packages/**/__pycache__/*.pyc`` of the env, zstd level 3. A ``.pyc`` is timestamp-based
(PEP 552): its header holds its source's modification time and size. uv stamps a source with the time it
unpacked it, so the time field is packed as 0 and rewritten at restore to the restored source's time, the
size field checked against the source's size; a ``.pyc`` Python would find stale is never written.

The object comes from a store: it is untrusted. Its sha256 is checked before it is read, and every member
before anything is written (a regular file, a relative path with no ``..``, under the env's
``lib/pythonX.Y/site-packages/``, in a ``__pycache__`` folder, named ``*.cpython-XY*.pyc`` for the env's
Python, whose source ``.py`` is in the built env, with an unchecked-timestamp header whose size matches it);
anything else refuses the whole object. Each ``.pyc`` is written whole (temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from metaflow_extensions.repro.plugins.bytecode import write_whole
from metaflow_repro.errors import BadInput, IntegrityError
from metaflow_repro.model.validate import cap
from metaflow_repro.settings import Home

ZSTD_LEVEL = 3
#: a bytecode object inflates to at most this (the matplotlib env's: 23 MB)
MAX_BYTES = 1 << 30
_HEADER = 16  # magic, flags, source mtime, source size (PEP 552)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class CorruptBytecode(IntegrityError):
    """A bytecode object whose bytes are not the sha256 the record names (exit 3)."""


class BadBytecode(BadInput):
    """A bytecode object that is the record's but holds what an env build must not write (exit 2)."""


def folder(home: Home) -> Path:
    """Where bytecode objects are kept, with small files per env naming its object: ``packed/<env id>.json``
    (what a push of an env built here packed) and ``envs/<env id>.json`` (what its next build restores: only
    ever an object a replay in a container fetched for it)."""
    return home.root / "bytecode"


def object_path(home: Home, sha256: str) -> Path:
    if not _HEX64.match(sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return folder(home) / f"{sha256}.tar.zst"


#: the two kinds of pointer: an object a build restores, an object a push packed (never restored from)
RESTORE, PACKED = "envs", "packed"


def _pointer(home: Home, env_id: str, kind: str = RESTORE) -> Path:
    return folder(home) / kind / f"{env_id}.json"


def known(home: Home, env_id: str, kind: str = RESTORE) -> str:
    """The sha256 of the bytecode object kept here for ``env_id`` ("" if none, or its file is gone)."""
    try:
        sha = json.loads(_pointer(home, env_id, kind).read_text()).get("sha256", "")
    except (OSError, ValueError, AttributeError):
        return ""
    if not isinstance(sha, str) or not _HEX64.match(sha) or not object_path(home, sha).is_file():
        return ""
    return sha


def remember(home: Home, env_id: str, sha256: str, kind: str = RESTORE) -> None:
    """Say that ``env_id``'s bytecode is the object ``sha256`` (kept here): with ``RESTORE``, its next build
    restores it; with ``PACKED``, a later push names it without packing the env again."""
    _write_whole(_pointer(home, env_id, kind), json.dumps({"env_id": env_id, "sha256": sha256}).encode())


def forget(home: Home, env_id: str, sha256: str) -> None:
    """Drop the object ``sha256`` kept here and ``env_id``'s pointer to it (a damaged copy)."""
    _pointer(home, env_id).unlink(missing_ok=True)
    object_path(home, sha256).unlink(missing_ok=True)


def _write_whole(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(str(path), data)


def _site_packages(env: Path) -> list[Path]:
    return sorted(p for p in env.glob("lib/python3*/site-packages") if p.is_dir() and not p.is_symlink())


def pack(env: Path, env_id: str, home: Home) -> str:
    """The sha256 of the bytecode object of the built env at ``env`` (packed once per env: kept in
    ``folder(home)``); "" if it has no ``.pyc`` files."""
    sha = known(home, env_id, PACKED)
    if sha:
        return sha
    data = pack_bytes(env)
    if not data:
        return ""
    sha = hashlib.sha256(data).hexdigest()
    target = object_path(home, sha)
    if not target.is_file():
        _write_whole(target, data)
    remember(home, env_id, sha, PACKED)  # not a pointer a build restores from: this home compiles its envs
    return sha


def pack_bytes(env: Path) -> bytes:
    """The zstd'd deterministic tar of the env's ``__pycache__/*.pyc`` files that a restore takes (b"" if
    there are none): those of the env's Python, timestamp-based, beside their source (a ``.pyc`` a wheel
    ships is the wheel's, installed again with it)."""
    members = []
    for site in _site_packages(env):
        pattern = _pattern(site.parent.name[len("python") :])
        for folder_, dirs, files in os.walk(site):
            dirs.sort()
            if os.path.basename(folder_) == "__pycache__":
                members += [path for name in files if (path := _packable(env, folder_, name, pattern))]
    if not members:
        return b""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(members):
            with open(path, "rb") as fh:
                data = bytearray(fh.read())
            data[8:12] = bytes(4)  # the source's time: rewritten at restore
            info = tarfile.TarInfo(os.path.relpath(path, env).replace(os.sep, "/"))
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(bytes(data)))
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw.getvalue())


def _packable(env: Path, folder_: str, name: str, pattern: re.Pattern[str]) -> str:
    """The path of the ``.pyc`` ``name`` in the ``__pycache__`` folder ``folder_`` if a restore takes it, else ""."""
    path = os.path.join(folder_, name)
    match = pattern.match(os.path.relpath(path, env).replace(os.sep, "/"))
    source = os.path.join(os.path.dirname(folder_), match.group(1) + ".py") if match else ""
    if not source or os.path.islink(path) or os.path.islink(source) or not os.path.isfile(source):
        return ""
    with open(path, "rb") as fh:
        header = fh.read(_HEADER)
    ok = len(header) == _HEADER and header[4:8] == bytes(4)
    return path if ok and int.from_bytes(header[12:16], "little") == os.stat(source).st_size & 0xFFFFFFFF else ""


def _pattern(major_minor: str) -> re.Pattern[str]:
    """The path of a ``.pyc`` of Python ``major_minor`` ("3.11") in an env; its group 1: the module's name."""
    site, tag = re.escape(major_minor), re.escape("cpython-" + major_minor.replace(".", ""))
    return re.compile(rf"^lib/python{site}/site-packages/(?:[^/]+/)*__pycache__/([^/]+)\.{tag}(?:\.opt-[12])?\.pyc$")


@dataclass(frozen=True)
class _Member:
    target: str  # its path in the env (links resolved)
    mtime: int  # its source's
    data: bytes


def restore(env: Path, obj: Path, sha256: str, python: str, where: str) -> int:
    """Write the ``.pyc`` files of the bytecode object ``obj`` (whose sha256 must be ``sha256``) into the
    built env at ``env`` of Python ``python`` ("3.11.7"), each header's time set to its source's; how many.
    Nothing is written when the object is not that sha256 (CorruptBytecode) or holds anything else
    (BadBytecode)."""
    blob = obj.read_bytes()
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        raise CorruptBytecode(
            f"{where}: bytecode object {obj} has sha256 {got}, not {sha256}; it was not used", path=str(obj)
        )
    members = _checked(env, _inflate(blob, obj, where), python, f"{where}: bytecode object {sha256[:12]}")
    for m in members:
        folder_ = os.path.dirname(m.target)
        if not os.path.isdir(folder_):
            os.mkdir(folder_)
        write_whole(m.target, m.data[:8] + (m.mtime & 0xFFFFFFFF).to_bytes(4, "little") + m.data[12:])
    return len(members)


def _inflate(blob: bytes, obj: Path, where: str) -> bytes:
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as reader:
            raw = reader.read(MAX_BYTES + 1)
    except zstandard.ZstdError as exc:
        raise CorruptBytecode(f"{where}: bytecode object {obj} is not zstd data ({exc}); it was not used") from None
    if len(raw) > MAX_BYTES:
        raise BadBytecode(f"{where}: bytecode object {obj} inflates past {MAX_BYTES} bytes; it was not used")
    return raw


class _Env:
    """The built env a restore writes into: its folders resolved once each, each checked to stay inside it."""

    def __init__(self, root: Path):
        self.root = os.path.realpath(root)
        self.folders: dict[str, str] = {}

    def folder(self, rel: str) -> str:
        """The env's folder ``rel`` (holding a ``__pycache__``), resolved; ValueError if links lead it out
        of the env or its ``__pycache__`` is not a plain folder."""
        found = self.folders.get(rel)
        if found is None:
            found = os.path.realpath(os.path.join(self.root, rel))
            if not found.startswith(self.root + os.sep):
                raise ValueError(f"leads to {found}, outside the env (through a symbolic link)")
            cache = os.path.join(found, "__pycache__")
            if os.path.lexists(cache) and (os.path.islink(cache) or not os.path.isdir(cache)):
                raise ValueError(f"would be written into {cache}, which is not a plain folder")
            self.folders[rel] = found
        return found


def _checked(env: Path, raw: bytes, python: str, where: str) -> list[_Member]:
    """Every member of the tar ``raw``, checked against the built env (see the module's docstring)."""
    pattern = _pattern(".".join(python.split(".")[:2]))
    out, problems, built = [], [], _Env(env)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                try:
                    out.append(_member(built, tar, info, pattern))
                except ValueError as exc:
                    problems.append(f"{info.name!r} {exc}")
    except tarfile.TarError as exc:
        raise BadBytecode(f"{where} is not a tar ({exc}); it was not used") from None
    if problems:
        raise BadBytecode(f"{where} holds what an env build must not write: {cap(problems)}; it was not used")
    return out


def _member(env: _Env, tar: tarfile.TarFile, info: tarfile.TarInfo, pattern: re.Pattern[str]) -> _Member:
    if not info.isreg():
        raise ValueError("is not a regular file")
    name = info.name
    if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError("is not a plain relative path")
    match = pattern.match(name)
    if match is None:
        raise ValueError("is not a .pyc of this env's Python in a __pycache__ folder under its site-packages")
    rel_folder, _, file_name = name.rsplit("/", 2)
    folder_ = env.folder(rel_folder)
    try:
        st = os.lstat(os.path.join(folder_, match.group(1) + ".py"))
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise ValueError(f"has no source {rel_folder}/{match.group(1)}.py in the built env")
    fh = tar.extractfile(info)
    data = fh.read() if fh is not None else b""
    if len(data) < _HEADER or data[4:8] != bytes(4):
        raise ValueError("is not a timestamp-based .pyc")
    if int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF:
        raise ValueError(f"was compiled from another {rel_folder}/{match.group(1)}.py (its size differs)")
    return _Member(os.path.join(folder_, "__pycache__", file_name), int(st.st_mtime), data)
