"""Interpreter snapshots: the exact interpreter a lock names, packed once into a content-addressed
tarball (``pythons/<sha256>.tar.gz`` in the store, with its manifest ``pythons/<sha256>.json``) and
restored at its recorded install prefix where that is missing (a replay on a machine, or in a
container, without that Python).

What is packed: the interpreter's install prefix (``sys.base_prefix``): its binaries, shared
library, headers and standard library, WITHOUT site-packages (an environment's packages come from
its lock), the standard library's own test suites, its static library, the bytecode compiled for
``python -O``/``-OO`` (compiled again on demand, if ever needed), and scripts other packages
installed into ``bin/``. Interpreters are not relocatable (pyenv links ``libpython`` by absolute
RUNPATH), so a snapshot is restored at its prefix, never elsewhere.

A tarball is untrusted until proven: its sha256 is checked before anything is extracted, every
member must be a file, folder or link that stays inside the prefix, and the restored interpreter's
facts must have the recorded fingerprint before it is used. Restoring is ``unpack_interpreter``, the
one extractor the Batch bootstrap uses too (task side, standard library: GNU tar extracts into a
staging folder while every member and the whole gzip stream are checked; renamed into place only when
all checks passed). On the host the restored interpreter is run for its fingerprint in that staging
folder, isolated and with a timeout, before the rename: one that fails leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import zstandard

from metaflow_extensions.repro.plugins.batch_bootstrap import MAX_INFLATED, Refused, unpack_interpreter
from metaflow_repro.env import pythons
from metaflow_repro.env.cache import sha256_file
from metaflow_repro.errors import BadInput, InfraError, IntegrityError
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model.interpreter import GZIP, ZSTD, InterpreterSnapshot, facts_fingerprint
from metaflow_repro.settings import Home

#: files under bin/ that belong to the interpreter (the rest were installed there by packages)
_OWN_BIN = re.compile(r"^(python|pydoc|2to3|idle)[0-9.]*(-[0-9.]+|-config)?$")
#: what a snapshot leaves out: bumping it packs every interpreter again
PACK_FORMAT = 2
#: zstd's level for a snapshot: 72 MB of install prefix to 25 MB in ~1.3 s, inflated in ~0.4 s (gzip: 1.2 s)
ZSTD_LEVEL = 3
_CHUNK = 1 << 20
_TEST_FOLDERS = frozenset({"test", "tests", "idle_test", "turtledemo"})
#: install prefixes that hold more than one interpreter: never packed whole
SYSTEM_PREFIXES = frozenset({"/", "/usr", "/usr/local", "/opt", "/bin"})
_LAYOUT = (
    "import json, sys, sysconfig; "
    "print(json.dumps({'base_prefix': sys.base_prefix, 'stdlib': sysconfig.get_path('stdlib', vars={'base': sys.base_prefix, 'installed_base': sys.base_prefix}), "
    "'purelib': sysconfig.get_path('purelib', vars={'base': sys.base_prefix, 'platbase': sys.base_prefix}), "
    "'platlib': sysconfig.get_path('platlib', vars={'base': sys.base_prefix, 'platbase': sys.base_prefix}), "
    "'executable': sys.executable}))"
)


#: the interpreter inside an install prefix (pyenv, python.org builds and uv's Pythons all put it here)
_EXECUTABLE = re.compile(r"^bin/python3(\.[0-9]+)?$")


def interpreter_roots() -> tuple[str, ...]:
    """The folders interpreters are installed in, one prefix per version (where ``pythons`` looks):
    pyenv's versions folder and uv's Python install folder."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    uv = os.environ.get("UV_PYTHON_INSTALL_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "uv", "python"
    )
    return tuple(dict.fromkeys(os.path.normpath(os.path.abspath(r)) for r in (os.path.join(pyenv, "versions"), uv)))


def location_problem(snap: InterpreterSnapshot) -> str:
    """Why ``snap``'s prefix and executable are not a place repro may create and run an interpreter
    ("" if they are): the prefix must be a folder named for its version (``3.11.7``,
    ``cpython-3.11.7-linux-x86_64-gnu``) right inside one of ``interpreter_roots()``, or the install
    whose ``bin`` is on PATH, and the executable ``bin/python3[.X]`` inside it. Checked before anything
    is created, extracted or run there: a record is untrusted."""
    prefix = PurePosixPath(snap.prefix)
    if not _EXECUTABLE.match(snap.executable):
        return f"executable {snap.executable!r} is not bin/python3 or bin/python3.X inside the install prefix"
    if not prefix.is_absolute() or ".." in prefix.parts or snap.python not in prefix.name:
        return f"prefix {snap.prefix!r} is not an install folder named for Python {snap.python}"
    on_path = {os.path.normpath(f) for f in os.environ.get("PATH", "").split(os.pathsep) if f and os.path.isabs(f)}
    if str(prefix.parent) in interpreter_roots() or str(prefix / "bin") in on_path:
        return ""
    return (
        f"prefix {snap.prefix!r} is not inside an interpreter folder repro installs into "
        f"({', '.join(interpreter_roots())}) nor an install on PATH"
    )


def check_location(snap: InterpreterSnapshot, field: str, where: str) -> None:
    """Refuse (BadInput naming ``field``) a snapshot ``location_problem`` objects to."""
    problem = location_problem(snap)
    if problem:
        raise BadInput(
            f"{where}: {field}: {problem}; refusing to create or run anything there (the record is not "
            "trustworthy, or was made with an interpreter installed elsewhere)"
        )


def _layout(interp: pythons.Interpreter) -> dict:
    proc = subprocess.run([interp.path, "-I", "-c", _LAYOUT], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise InfraError(f"cannot ask {interp.path} where it is installed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def _excluded(rel: PurePosixPath, skip: set[PurePosixPath]) -> bool:
    if any(rel == s or s in rel.parents for s in skip):
        return True
    if rel.name.endswith((".opt-1.pyc", ".opt-2.pyc")):  # bytecode for `python -O`: a third of the bytes
        return True
    if rel.name in _TEST_FOLDERS and "lib" in rel.parts[:1]:  # the standard library's own test suites
        return True
    if len(rel.parts) == 2 and rel.parts[0] == "bin" and not _OWN_BIN.match(rel.name):
        return True
    return rel.suffix == ".a" and rel.parent.name.startswith("config-")


def pack(
    interp: pythons.Interpreter, home: Home, log=lambda m: None, compression: str = ZSTD
) -> tuple[InterpreterSnapshot, Path]:
    """The snapshot of ``interp`` and its tarball under REPRO_HOME/pythons (packed once per compression:
    the result is remembered under the interpreter's path, mtime, size and inode). zstd unless a Batch
    job restores it (``compression=GZIP``: its bootstrap has only the standard library)."""
    index_file = home.pythons / "index.json"
    real = os.path.realpath(interp.path)
    key = pythons._stat_key(real)
    entry_key = real if compression == GZIP else f"{real}|{compression}"
    index = _read_json(index_file)
    entry = index.get(entry_key)
    if isinstance(entry, dict) and entry.get("stat") == key and entry.get("format") == PACK_FORMAT:
        try:
            snap = InterpreterSnapshot.from_dict(entry.get("snapshot"), _at(index_file))
            tarball = home.pythons / snap.file_name
            if snap.compression == compression and tarball.is_file() and tarball.stat().st_size == snap.size:
                return snap, tarball
        except BadInput:
            pass  # a damaged index entry: pack again
    facts = interp.facts or {}
    if not facts.get("python"):
        probed = pythons.probe(interp.path)
        if probed is None:
            raise InfraError(f"{interp.path} is not a usable CPython; cannot snapshot it")
        facts = probed.facts
    lay = _layout(interp)
    prefix = Path(lay["base_prefix"])
    if str(prefix) in SYSTEM_PREFIXES:
        raise BadInput(
            f"{interp.path} is the system's Python (installed in {prefix}, shared with everything else there); "
            "only self-contained installs (pyenv, python.org builds, uv's Pythons) can be snapshot"
        )
    exe = Path(os.path.realpath(lay["executable"]))
    try:
        rel_exe = exe.relative_to(prefix)
    except ValueError:
        raise BadInput(
            f"{interp.path}: its executable {exe} is not inside its install prefix {prefix}; "
            "only self-contained installs (pyenv, python.org builds, uv's Pythons) can be snapshot"
        ) from None
    check_location(
        InterpreterSnapshot("0" * 64, 0, interp.version, str(prefix), str(PurePosixPath(rel_exe)), "0" * 64),
        "install prefix",
        f"{interp.path}: cannot snapshot it, a replay would refuse to restore it",
    )
    skip = {
        PurePosixPath(os.path.relpath(lay[k], prefix))
        for k in ("purelib", "platlib")
        if lay.get(k) and Path(lay[k]).is_relative_to(prefix)
    }
    skip.add(PurePosixPath(os.path.relpath(lay["stdlib"], prefix)) / "test")
    log(f"packing Python {interp.version} ({prefix}) into an interpreter snapshot")
    home.pythons.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.pythons, prefix=".pack-") as tmp:
        partial = Path(tmp) / "python.tar"
        _write_tar(prefix, partial, skip, compression)
        sha = sha256_file(partial)
        snap = InterpreterSnapshot(
            sha256=sha,
            size=partial.stat().st_size,
            python=interp.version,
            prefix=str(prefix),
            executable=str(PurePosixPath(rel_exe)),
            fingerprint=facts_fingerprint(facts),
            compression=compression,
        )
        tarball = home.pythons / snap.file_name
        os.replace(partial, tarball)
    atomic_write(home.pythons / f"{sha}.json", snap.to_json())
    index = _read_json(index_file)
    index[entry_key] = {"stat": key, "format": PACK_FORMAT, "snapshot": snap.to_dict()}
    atomic_write(index_file, json.dumps(index, sort_keys=True, indent=0))
    return snap, tarball


def _compressed(raw, compression: str):
    """Where the tar goes: gzip without a time stamp, or zstd (with its frame checksum, one thread: the
    same bytes every time)."""
    if compression == ZSTD:
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).stream_writer(raw, closefd=False)
    return gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=3)


def _write_tar(prefix: Path, out: Path, skip: set[PurePosixPath], compression: str = GZIP) -> None:
    """A deterministic tarball of ``prefix`` (sorted members, no owners), gzip'd or zstd'd."""
    with (
        open(out, "wb") as raw,
        _compressed(raw, compression) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for folder, dirs, files in os.walk(prefix):
            dirs.sort()
            here = Path(folder)
            rel_here = PurePosixPath(os.path.relpath(folder, prefix))
            for name in sorted(dirs + files):
                rel = rel_here / name if str(rel_here) != "." else PurePosixPath(name)
                if _excluded(rel, skip):
                    if name in dirs and any(rel == s for s in skip):  # keep the folder, empty
                        info = tar.gettarinfo(str(here / name), arcname=str(rel))
                        _plain(info)
                        tar.addfile(info)
                    continue
                path = here / name
                if path.is_symlink() and not _link_inside(path, prefix):
                    continue  # a link out of the install is not part of it
                info = tar.gettarinfo(str(path), arcname=str(rel))
                _plain(info)
                if info.islnk():  # a second name of a hard-linked file: packed as a file of its own
                    info.type, info.linkname, info.size = tarfile.REGTYPE, "", path.stat().st_size
                if info.isfile():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                elif info.isdir() or info.issym():
                    tar.addfile(info)
            dirs[:] = [
                d
                for d in dirs
                if not _excluded((rel_here / d) if str(rel_here) != "." else PurePosixPath(d), skip)
                and not (here / d).is_symlink()
            ]


def _plain(info: tarfile.TarInfo) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = ""


def _link_inside(link: Path, root: Path) -> bool:
    target = os.readlink(link)
    if os.path.isabs(target):
        return False
    return os.path.realpath(os.path.join(link.parent, target)).startswith(str(root) + os.sep)


def restore(
    snap: InterpreterSnapshot,
    tarball: Path | Iterable[bytes],
    where: str = "",
    max_bytes: int = MAX_INFLATED,
) -> pythons.Interpreter:
    """The interpreter of ``snap`` at its recorded prefix: the one there if it has the recorded
    fingerprint, else (the prefix missing) extracted from ``tarball`` (a file, or a zstd snapshot's bytes
    as they download: extracted while they arrive). A gzip'd file's sha256 is checked first; a zstd
    stream's is computed on the way and checked before anything is renamed into place. Also checked:
    the whole compressed stream (gzip's CRC and end, zstd's frame checksum), every member while it is
    extracted into a staging folder, and the interpreter's fingerprint there (``_staged_problem``). It
    never inflates past ``max_bytes`` (``archive-max-bytes``). On any failure nothing of it is left."""
    where = where or f"interpreter snapshot {snap.sha256[:12]} (Python {snap.python})"
    check_location(snap, "snapshot", where)
    prefix = Path(snap.prefix)
    if prefix.exists():
        return _existing(snap, where)
    staged: dict = {}
    try:
        if snap.compression == ZSTD:
            placed = _unpack_zstd(snap, tarball, where, max_bytes, staged)
        else:
            placed = _unpack_gzip(snap, Path(tarball), where, max_bytes, staged)  # type: ignore[arg-type]
    except Refused as exc:
        raise IntegrityError(str(exc)) from None
    pythons.probe.cache_clear()
    if not placed:
        # another process (a replay, an xdist worker, pull_and_restore's threads) restored this prefix
        # meanwhile: theirs is kept, and proven like any interpreter found there
        return _existing(snap, where)
    facts = staged["facts"]
    return pythons.Interpreter(
        path=str(prefix / snap.executable), version=facts["python"], facts_json=json.dumps(facts, sort_keys=True)
    )


def _unpack_gzip(snap: InterpreterSnapshot, tarball: Path, where: str, max_bytes: int, staged: dict) -> bool:
    got = sha256_file(tarball)
    if got != snap.sha256:
        raise IntegrityError(
            f"{where}: {tarball} has sha256 {got}, the record says {snap.sha256}; nothing was extracted"
        )
    with open(tarball, "rb") as fh:
        return unpack_interpreter(
            iter(lambda: fh.read(_CHUNK), b""),
            snap.sha256,
            snap.prefix,
            where,
            max_inflated=max_bytes,
            check=lambda staging: _staged_problem(snap, staging, staged),
        )


class _Hashing:
    """A file-like object over compressed chunks (zstd's reader pulls them), hashing them on the way."""

    def __init__(self, chunks: Iterable[bytes]):
        self.chunks, self.buffer, self.digest, self.size = iter(chunks), b"", hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        if not self.buffer:
            self.buffer = next(self.chunks, b"")
            self.digest.update(self.buffer)
            self.size += len(self.buffer)
        n = len(self.buffer) if n < 0 else n
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def rest(self) -> None:
        """Hash whatever follows the zstd frame too: the digest names all the bytes."""
        while self.read(_CHUNK):
            pass


def _unpack_zstd(
    snap: InterpreterSnapshot, source: Path | Iterable[bytes], where: str, max_bytes: int, staged: dict
) -> bool:
    """Inflated here (zstandard, bounded reads), extracted by GNU tar as the bytes arrive; the sha256
    of the compressed bytes is checked once they all went through, before the interpreter is run."""
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext() as fh:
        chunks = iter(lambda: fh.read(_CHUNK), b"") if fh is not None else source
        hashing = _Hashing(chunks)  # type: ignore[arg-type]
        reader = zstandard.ZstdDecompressor().stream_reader(
            hashing,  # type: ignore[arg-type]
            read_size=_CHUNK,
            read_across_frames=False,
        )

        def check(staging: str) -> str:
            hashing.rest()
            if hashing.digest.hexdigest() != snap.sha256:
                return f"its sha256 is {hashing.digest.hexdigest()}, the record says {snap.sha256}"
            return _staged_problem(snap, staging, staged)

        try:
            return unpack_interpreter(
                iter(lambda: reader.read(_CHUNK), b""),
                None,
                snap.prefix,
                where,
                max_inflated=max_bytes,
                check=check,
                raw=True,
            )
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{where}: not a usable zstd snapshot ({exc}); nothing was extracted") from None


def _existing(snap: InterpreterSnapshot, where: str) -> pythons.Interpreter:
    """The interpreter already at ``snap``'s prefix, if it has the recorded fingerprint."""
    prefix = Path(snap.prefix)
    exe = prefix / snap.executable
    found = pythons.probe(str(exe)) if exe.is_file() else None
    if found is not None and facts_fingerprint(found.facts) == snap.fingerprint:
        return found
    raise InfraError(
        f"{where}: {prefix} exists but is not the recorded interpreter "
        f"(fingerprint {snap.fingerprint[:12]}); it is left alone. Move it away to let repro restore "
        "the snapshot there, or replay on a machine (or `--on docker`) without it"
    )


def _staged_problem(snap: InterpreterSnapshot, staging: str, staged: dict) -> str:
    """Why the interpreter extracted into ``staging`` is not the recorded one ("" if it is: its facts
    are then put in ``staged``). It is run there only, isolated and bounded (``pythons.staged_facts``),
    before anything is at the prefix pyenv and the replays look in."""
    facts, why = pythons.staged_facts(staging, snap.executable)
    if facts is None:
        return f"its interpreter {snap.executable}, run in the staging folder, gave no facts ({why})"
    if facts_fingerprint(facts) != snap.fingerprint:
        return (
            f"the interpreter in it does not have the recorded fingerprint {snap.fingerprint[:12]} "
            "(is this machine's libc or architecture different?)"
        )
    staged["facts"] = facts
    return ""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _at(path: Path):
    from metaflow_repro.model import validate as v

    return v.At(str(path))


def snapshot_interpreters(record, settings, log=lambda m: None) -> dict[str, InterpreterSnapshot]:
    """Python version -> the snapshot of the interpreter each of the record's environments was made
    from (packed here once; ``record`` is a RunRecord made on this machine)."""
    from metaflow_repro.env.engine import environments

    envs = environments(settings)
    out: dict[str, InterpreterSnapshot] = dict(record.interpreters)
    for env_id, pl in sorted(record.envs.items()):
        if pl.python in out or pl.is_conda:  # a conda env brings its own interpreter (a package in the env)
            continue
        built = envs.get(env_id)
        interp = pythons.probe(built.interpreter) if built is not None else None
        if interp is None or interp.version != pl.python:
            interp = pythons.find(pl.python, where=f"{record.ref} env {env_id[:12]}")
        try:
            out[pl.python], _ = pack(interp, settings.home, log=log)
        except BadInput as exc:  # a system Python: replays need that Python installed
            log(f"repro: no interpreter snapshot for Python {pl.python}: {exc}")
    launcher = record.host.get("python", "")  # the Python that ran Metaflow's runtime (a flow's default Python)
    if launcher and launcher not in out:
        interp = pythons.probe(sys.executable)
        if interp is not None and interp.version == launcher:
            try:
                out[launcher], _ = pack(interp, settings.home, log=log)
            except BadInput as exc:
                log(f"repro: no interpreter snapshot for Python {launcher}: {exc}")
    return out
