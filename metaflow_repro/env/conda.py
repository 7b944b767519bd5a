"""Conda packages with py-rattler: resolve a step's spec against channels, install a locked env.

No conda or mamba binary: rattler solves (``rattler.solve``, virtual packages given explicitly and
recorded in the lock) and links (``rattler.install``). Package files go through the same
content-addressed cache as PyPI files (``PackageCache``), verified against the lock's sha256 there,
because rattler does not check a ``file://`` URL's hash. Before rattler sees an archive we read
every member name and refuse absolute paths, ``..`` components and links that leave the prefix.
"""

from __future__ import annotations

import asyncio
import bz2
import gc
import io
import json
import os
import posixpath
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from metaflow_repro.errors import BadInput, InfraError, IntegrityError, ResolutionError
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.lock import Package, PlatformLock
from metaflow_repro.model.spec import EnvSpec, python_specifier
from metaflow_repro.settings import Settings

DEFAULT_ALIAS = "https://conda.anaconda.org/"
#: Detected virtual packages that describe this machine's CPU or kernel build rather than what
#: packages may assume: left out, so two machines of one platform lock alike.
_MACHINE_SPECIFIC = ("__archspec",)
#: Assumed for a platform that is not this machine's (conda-lock's defaults, roughly).
_DEFAULT_VIRTUAL = {
    "linux": ("__unix=0=0", "__linux=0=0", "__glibc=2.17=0"),
    "osx": ("__unix=0=0", "__osx=11.0=0"),
    "win": ("__win=0=0",),
}
SAFE_STAMP = ".members-checked"


def _rattler():
    try:
        import rattler
    except ImportError:  # pragma: no cover - a dependency; kept for a clear message
        raise InfraError("conda-source = 'conda' needs py-rattler: pip install 'py-rattler>=0.28,<0.29'") from None
    return rattler


def _run(coro):
    return asyncio.run(coro)


# -- channels and virtual packages --------------------------------------------------------------


def channel_url(text: str, base: Path) -> str:
    """A channel as the user wrote it, as a URL: URLs as given, local folders as ``file://``
    (relative to ``base``), names under conda's alias (``conda-forge`` → anaconda.org)."""
    text = text.strip().rstrip("/")
    if "://" in text:
        return text
    if text.startswith(("/", ".", "~")) or os.sep in text:
        folder = (base / Path(text).expanduser()).resolve()
        if not folder.is_dir():
            raise BadInput(f"conda channel {text!r}: no such folder {folder}", path=str(folder))
        return folder.as_uri()
    return DEFAULT_ALIAS + text


def project_base(settings: Settings, flow_file: Path) -> Path:
    """Relative channel folders are relative to the project's pyproject.toml (else the flow's folder)."""
    return settings.config_file.parent if settings.config_file else Path(flow_file).resolve().parent


def virtual_package_strings(platform_name: str, settings: Settings) -> tuple[str, ...]:
    """``name=version=build`` of each virtual package the solver may assume for ``platform_name``."""
    if settings.virtual_packages:
        out = []
        for item in settings.virtual_packages:
            parts = item.split("=")
            if not parts[0].startswith("__") or len(parts) > 3 or not all(parts):
                raise BadInput(
                    f"virtual package {item!r} (REPRO_VIRTUAL_PACKAGES / [tool.repro] virtual-packages) "
                    "is not NAME=VERSION[=BUILD] with NAME starting with '__', e.g. __glibc=2.28"
                )
            out.append("=".join([parts[0], parts[1] if len(parts) > 1 else "0", parts[2] if len(parts) > 2 else "0"]))
        return tuple(sorted(out))
    if platform_name == plats.local_platform_name():
        detected = []
        for vp in _rattler().VirtualPackage.detect():
            g = vp.into_generic()
            if g.name.normalized not in _MACHINE_SPECIFIC:
                detected.append(f"{g.name.normalized}={g.version}={g.build_string!s}")
        return tuple(sorted(detected))
    return _DEFAULT_VIRTUAL[platform_name.split("-")[0]]


def _generic(items: tuple[str, ...]) -> list:
    r = _rattler()
    out = []
    for item in items:
        name, version, build = item.split("=")
        out.append(r.GenericVirtualPackage(r.PackageName(name), r.Version(version), r.BuildString(build)))
    return out


def python_match_spec(request: str) -> str:
    """The interpreter's match spec for a ``python=`` request: '3.11.7' exactly, '3.11' a minor series,
    a PEP 440 specifier ('==3.10.*', '>=3.10,<3.11') as the same constraints in conda's syntax."""
    specifier = python_specifier(request)
    if specifier is not None:
        parts = sorted(f"{'==' if s.operator == '===' else s.operator}{s.version}" for s in specifier)
        return "python " + ",".join(parts)
    if request.count(".") == 2:
        return f"python =={request}"
    return f"python {request}.*"


def match_specs(spec: EnvSpec) -> list[str]:
    """The solver's specs: every requirement pinned exactly, plus the interpreter."""
    return [python_match_spec(spec.python)] + [f"{name} =={version}" for name, version in spec.requirements.items()]


# -- resolve ------------------------------------------------------------------------------------


def package_of(record: Any, where: str) -> Package:
    """A lock entry from a solved ``RepoDataRecord`` (sha256 and md5 as the channel's repodata gives them)."""
    if record.sha256 is None or record.md5 is None:
        raise ResolutionError(
            f"{where}: the channel gives no sha256/md5 for {record.file_name}; repro locks only files it can "
            "verify. Re-index the channel (rattler-index, conda-index)."
        )
    return Package(
        name=record.name.normalized,
        version=str(record.version),
        source=(record.channel or "").rstrip("/"),
        file=record.file_name,
        url=record.url,
        sha256=record.sha256.hex(),
        size=int(record.size or 0),
        subdir=str(record.subdir),
        build=str(record.build),
        md5=record.md5.hex(),
    )


def _solve(r, urls, specs, platform_name, virtual, cache_dir) -> tuple[list, tuple[str, str] | None]:
    """(records, None) or ([], (error kind, message)). rattler's objects (its gateway and runtime
    threads) must not outlive this call: an exception that kept them alive through its traceback
    until interpreter exit makes CPython abort at finalisation, so only the words leave here."""
    # A local channel is read afresh every time: its repodata can change within the same second as a
    # cached copy (a re-index), which a cache keyed on file times would not notice (stale drift checks).
    local = {u: r.SourceConfig(cache_action="no-cache") for u in urls if u.startswith("file:")}
    gateway = r.Gateway(cache_dir=cache_dir, per_channel_config=local)
    try:
        coro = r.solve([r.Channel(u) for u in urls], specs, gateway=gateway, platforms=[platform_name, "noarch"],
                       virtual_packages=virtual)  # fmt: skip
        return _run(coro), None
    except Exception as exc:  # rattler raises its own exception types per failure
        failure = (type(exc).__name__, str(exc).strip())
    finally:
        del gateway
    # A failed solve can leave rattler's runtime threads busy with the gateway; a process that exits
    # right away (the command line, on the error) then aborted in CPython's finalisation (1 run in 6).
    gc.collect()
    time.sleep(0.05)
    return [], failure


def resolve(spec: EnvSpec, platform_name: str, settings: Settings, base: Path) -> PlatformLock:
    """Solve ``spec`` for one platform against its channels (or the settings' channels)."""
    r = _rattler()
    plats.get(platform_name)
    urls = [channel_url(c, base) for c in spec.channels or settings.channels]
    virtual = virtual_package_strings(platform_name, settings)
    specs = match_specs(spec)
    records, failure = _solve(r, urls, specs, platform_name, _generic(virtual), settings.home.conda_repodata)
    if failure is not None:
        kind, text = failure
        if kind == "SolverError":
            raise ResolutionError(
                f"{spec.where}: cannot resolve [{', '.join(specs)}] for {platform_name} from "
                f"{', '.join(urls)} (virtual packages {', '.join(virtual) or 'none'}):\n{text}\n"
                "Check the names and versions in the channels and pin versions that exist and agree."
            )
        raise InfraError(
            f"{spec.where}: cannot read the conda channels {', '.join(urls)} ({kind}): {text}\n"
            "Set channels a machine here can reach (a URL or a local folder: channels under [tool.repro], "
            'REPRO_CONDA_CHANNELS), or, where no conda channel is reachable, conda-source = "pypi" under '
            "[tool.repro] (REPRO_CONDA_SOURCE=pypi) to serve @conda libraries from PyPI."
        )
    packages = tuple(package_of(rec, spec.where) for rec in records)
    python = next((p.version for p in packages if p.name == "python"), None)
    if python is None:
        raise ResolutionError(f"{spec.where}: the solution for {platform_name} has no python package")
    if spec.pip:
        packages += pip_packages(spec, platform_name, python, settings, {p.name for p in packages})
    return PlatformLock(platform=platform_name, python=python, packages=packages, virtual_packages=virtual)


def pip_packages(
    spec: EnvSpec, platform_name: str, python: str, settings: Settings, conda_names: set[str]
) -> tuple[Package, ...]:
    """The @pypi packages that go on top of the conda env: exactly those pinned (uv --no-deps,
    for the interpreter the channel gave), none that a conda package already provides."""
    from metaflow_repro.env import pypi

    clash = sorted(n for n, _ in spec.pip if n in conda_names)
    if clash:
        raise ResolutionError(
            f"{spec.where}: {', '.join(clash)} would be installed twice, by conda and by pip (@pypi); "
            "drop it from @pypi (conda provides it) or pin it in @conda"
        )
    pip_spec = EnvSpec(
        flow=spec.flow, step=spec.step, kind="pypi", source="pypi", python=python, libraries=spec.pip, where=spec.where
    )
    return pypi.resolve(pip_spec, platform_name, python, settings, no_deps=True).packages


# -- archives -----------------------------------------------------------------------------------


def _member_problem(name: str, linkname: str, is_link: bool, is_hardlink: bool) -> str:
    if name.startswith("/") or posixpath.isabs(name):
        return f"member {name!r} has an absolute path"
    if ".." in name.split("/"):
        return f"member {name!r} has a '..' component"
    if is_link:
        if linkname.startswith("/"):
            return f"link {name!r} points at the absolute path {linkname!r}"
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), linkname))
        if target == ".." or target.startswith("../"):
            return f"link {name!r} -> {linkname!r} leaves the prefix"
    if is_hardlink and (linkname.startswith("/") or ".." in linkname.split("/")):
        return f"hard link {name!r} -> {linkname!r} leaves the prefix"
    return ""


INDEX_JSON = "info/index.json"


def _tar_scan(tar: tarfile.TarFile, found: dict[str, bytes]) -> list[str]:
    out = []
    for m in tar:
        problem = _member_problem(m.name, m.linkname, m.issym(), m.islnk())
        if problem:
            out.append(problem)
        elif not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            out.append(f"member {m.name!r} is not a file, folder or link")
        elif m.name == INDEX_JSON and m.isfile():
            fh = tar.extractfile(m)
            found[INDEX_JSON] = fh.read() if fh else b""
    return out


def scan_archive(path: Path) -> tuple[list[str], bytes]:
    """(what makes a conda archive unsafe to extract, its ``info/index.json``). Every member is read
    by name only; a member outside the prefix, an absolute link or a link leaving it is a problem."""
    name, found = path.name, dict[str, bytes]()
    if name.endswith(".tar.bz2"):
        with open(path, "rb") as fh, tarfile.open(fileobj=bz2.BZ2File(fh), mode="r|") as tar:
            problems = _tar_scan(tar, found)
    elif name.endswith(".conda"):
        import zstandard

        problems = []
        with zipfile.ZipFile(path) as zf:
            for inner in zf.namelist():
                if not inner.endswith(".tar.zst"):
                    continue
                with zf.open(inner) as raw:
                    stream = zstandard.ZstdDecompressor().stream_reader(raw)
                    with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as tar:
                        problems += _tar_scan(tar, found)
    else:
        return [f"{name} is neither a .conda nor a .tar.bz2 archive"], b""
    if INDEX_JSON not in found:
        problems.append(f"it has no {INDEX_JSON}")
    return problems, found.get(INDEX_JSON, b"")


def archive_problems(path: Path) -> list[str]:
    """What makes a conda archive unsafe to extract (empty: every member stays in the prefix)."""
    return scan_archive(path)[0]


def check_archive(pkg: Package, path: Path, where: str) -> Path:
    """Refuse an archive with members outside the prefix; return its ``info/index.json``, kept
    beside the verified file with the verdict (the cache re-checks the file's sha256 before every
    use), so each archive is read once."""
    stamp, index = path.parent / SAFE_STAMP, path.parent / ".index.json"
    if stamp.exists() and stamp.read_text() == pkg.sha256 and index.exists():
        return index
    try:
        problems, index_json = scan_archive(path)
        json.loads(index_json or b"{}")
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        problems, index_json = [f"it cannot be read as an archive ({exc})"], b""
    if problems:
        raise IntegrityError(
            f"{where}: conda package {pkg.file} ({pkg.name} {pkg.version}) is refused: "
            + "; ".join(problems[:5])
            + ". Nothing was installed from it; the channel serves a malformed or malicious package.",
            library=pkg.name,
            path=pkg.file,
        )
    index.write_bytes(index_json)
    stamp.write_text(pkg.sha256)
    return index


# -- install ------------------------------------------------------------------------------------


def install(lock: PlatformLock, prefix: Path, files: dict[str, Path], rattler_cache: Path, where: str) -> None:
    """Link every conda package of ``lock`` into ``prefix`` with rattler, from the verified files
    in our cache (``files``: sha256 -> path). No network: each record's URL is that local file."""
    r = _rattler()
    recs = []
    for p in (p for p in lock.packages if p.is_conda):
        index = check_archive(p, files[p.sha256], where)  # the file's sha256 was checked by the cache
        record = r.PackageRecord.from_index_json(index, size=p.size, sha256=p.sha256, md5=p.md5)
        if (record.name.normalized, str(record.version), str(record.build)) != (p.name, p.version, p.build):
            raise IntegrityError(
                f"{where}: {p.file} is {record.name.normalized} {record.version} ({record.build}), "
                f"the lock names {p.name} {p.version} ({p.build})",
                library=p.name,
            )
        recs.append(r.RepoDataRecord(record, p.file, files[p.sha256].as_uri(), p.channel))

    async def run():
        await r.install(
            recs, prefix, cache_dir=rattler_cache, show_progress=False, execute_link_scripts=False, platform=None
        )

    failure = None
    try:
        _run(run())
    except Exception as exc:  # only the words leave (see _solve: rattler objects must not outlive the call)
        failure = f"{type(exc).__name__}: {exc}"
    if failure is not None:
        raise InfraError(f"{where}: installing conda env {lock.env_id[:12]} failed: {failure}")


def installed(prefix: Path) -> dict[str, dict]:
    """What ``conda-meta/`` says is linked in ``prefix``: name -> {version, build, sha256}."""
    out = {}
    for meta in sorted(Path(prefix, "conda-meta").glob("*.json")):
        try:
            doc = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        out[doc.get("name", "")] = {k: doc.get(k) for k in ("version", "build", "sha256")}
    return out


def file_url_path(url: str) -> Path | None:
    parsed = urlparse(url)
    return Path(parsed.path) if parsed.scheme == "file" else None
