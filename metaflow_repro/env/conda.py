"""Conda packages with py-rattler: resolve a step's spec against channels, install a locked env.

No conda or mamba binary: rattler solves (``solve``, virtual packages given explicitly and recorded in
the lock) and links (``install``), each time in a short-lived worker process (``rattler_worker``), so no
process of repro's loads rattler. Package files go through the same content-addressed cache as PyPI
files (``PackageCache``), verified against the lock's sha256 there, because rattler does not check a
``file://`` URL's hash. Before rattler sees an archive, repro reads every member and the info documents
that name paths (paths.json, link.json's entry points, has_prefix, files) and refuses any path that is
absolute, has a ``..`` or leads outside the prefix through a link, for each package and for the env's
packages together (``conda_meta``); ``repro store verify`` runs the same checks.
"""

from __future__ import annotations

import bz2
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from metaflow_repro.env import rattler_worker
from metaflow_repro.env.conda_meta import (
    DIR,
    FILE,
    HARDLINK,
    INDEX_JSON,
    INFO_FILES,
    MAX_INFO_BYTES,
    OTHER,
    SHOWN,
    SYMLINK,
    Member,
    PackageMeta,
    env_problems,
    member_problems,
    normal,
    read_meta,
)
from metaflow_repro.errors import BadInput, InfraError, IntegrityError, ResolutionError
from metaflow_repro.fsutil import atomic_write
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


def virtual_package_strings(platform_name: str, settings: Settings) -> tuple[str, ...] | None:
    """``name=version=build`` of each virtual package the solver may assume for ``platform_name`` (None:
    this machine's own, which only rattler can detect)."""
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
        return None  # this machine's, detected by rattler in its worker (less _MACHINE_SPECIFIC)
    return _DEFAULT_VIRTUAL[platform_name.split("-")[0]]


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


def package_of(record: dict, where: str) -> Package:
    """A lock entry from a solved record (the worker's dict of a ``RepoDataRecord``; sha256 and md5 as the
    channel's repodata gives them)."""
    if record["sha256"] is None or record["md5"] is None:
        raise ResolutionError(
            f"{where}: the channel gives no sha256/md5 for {record['file_name']}; repro locks only files it can "
            "verify. Re-index the channel (rattler-index, conda-index)."
        )
    return Package(
        name=record["name"],
        version=record["version"],
        source=record["channel"].rstrip("/"),
        file=record["file_name"],
        url=record["url"],
        sha256=record["sha256"],
        size=record["size"],
        subdir=record["subdir"],
        build=record["build"],
        md5=record["md5"],
    )


def _solve(spec: EnvSpec, urls: list[str], platform_name: str, virtual: tuple[str, ...] | None, settings: Settings):
    """(the solved records, the virtual packages assumed), solved by rattler in its worker process."""
    specs = match_specs(spec)
    request = {"channels": urls, "specs": specs, "platform": platform_name, "virtual": virtual}
    request.update(leave_out=list(_MACHINE_SPECIFIC), cache_dir=str(settings.home.conda_repodata))
    try:
        answer = rattler_worker.ask("solve", request, where=spec.where)
    except rattler_worker.RattlerFailed as exc:
        shown = ", ".join(virtual or ()) or "this machine's"
        if exc.kind == "SolverError":
            raise ResolutionError(
                f"{spec.where}: cannot resolve [{', '.join(specs)}] for {platform_name} from "
                f"{', '.join(urls)} (virtual packages {shown}):\n{exc.detail}\n"
                "Check the names and versions in the channels and pin versions that exist and agree."
            ) from None
        raise InfraError(
            f"{spec.where}: cannot read the conda channels {', '.join(urls)} ({exc.kind}): {exc.detail}\n"
            "Set channels a machine here can reach (a URL or a local folder: channels under [tool.repro], "
            'REPRO_CONDA_CHANNELS), or, where no conda channel is reachable, conda-source = "pypi" under '
            "[tool.repro] (REPRO_CONDA_SOURCE=pypi) to serve @conda libraries from PyPI."
        ) from None
    return answer["records"], tuple(sorted(answer["virtual"]))


def resolve(spec: EnvSpec, platform_name: str, settings: Settings, base: Path) -> PlatformLock:
    """Solve ``spec`` for one platform against its channels (or the settings' channels)."""
    plats.get(platform_name)
    urls = [channel_url(c, base) for c in spec.channels or settings.channels]
    records, virtual = _solve(spec, urls, platform_name, virtual_package_strings(platform_name, settings), settings)
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

#: The verdict of one archive's checks, kept beside the verified file in the package cache with what the
#: env-wide check needs (``conda_meta.PackageMeta``) and its index.json. Its name changes with the checks.
CHECKED_STAMP = ".conda-checked-v3"
META_FILE, INDEX_FILE = ".conda-meta.json", ".index.json"


def _member(m: tarfile.TarInfo) -> Member:
    if m.isfile():
        return Member(m.name, FILE, size=m.size)
    if m.isdir():
        return Member(m.name, DIR)
    if m.issym():
        return Member(m.name, SYMLINK, m.linkname)
    if m.islnk():
        return Member(m.name, HARDLINK, m.linkname)
    return Member(m.name, OTHER)


def _tar_scan(tar: tarfile.TarFile, members: list[Member], info: dict[str, bytes]) -> None:
    """Every member, and the info documents by the path they are extracted to. One that is too large or not a
    regular file is not read (``read_meta`` refuses it, and ``member_problems`` any path given twice)."""
    for m in tar:
        members.append(_member(m))
        if m.isfile() and normal(m.name) in INFO_FILES and m.size <= MAX_INFO_BYTES:
            fh = tar.extractfile(m)
            info[normal(m.name)] = fh.read() if fh else b""


def _conda_scan(path: Path, members: list[Member], info: dict[str, bytes]) -> None:
    """``_tar_scan`` of each inner ``.tar.zst`` of a ``.conda`` zip (two of one name: ValueError, since zipfile
    opens the last of a name and another reader may take the first)."""
    import zstandard

    with zipfile.ZipFile(path) as zf:
        inners = [i for i in zf.infolist() if i.filename.endswith(".tar.zst")]
        names = [i.filename for i in inners]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"the zip holds {', '.join(twice)} more than once")
        for inner in inners:
            with zf.open(inner) as raw:
                stream = zstandard.ZstdDecompressor().stream_reader(raw)
                try:
                    with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as tar:
                        _tar_scan(tar, members, info)
                except zstandard.ZstdError as exc:
                    raise ValueError(f"{inner.filename} is not zstd ({exc})") from None


def read_archive(path: Path, name: str = "") -> tuple[list[Member], dict[str, bytes]]:
    """Every member of a conda archive (by name and kind; nothing is extracted) and its info documents.
    ``name`` is the package's file name when ``path`` is not (a store object), for its format."""
    name, members, info = name or path.name, list[Member](), dict[str, bytes]()
    if name.endswith(".tar.bz2"):
        with open(path, "rb") as fh, tarfile.open(fileobj=bz2.BZ2File(fh), mode="r|") as tar:
            _tar_scan(tar, members, info)
    elif name.endswith(".conda"):
        _conda_scan(path, members, info)
    else:
        raise ValueError(f"{name} is neither a .conda nor a .tar.bz2 archive")
    return members, info


#: How reading a malformed archive fails (zipfile: NotImplementedError for a compression it does not know,
#: RuntimeError for an encrypted member): each a finding, never an exception out of install or verify.
UNREADABLE = (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, RuntimeError)


def scan_archive(path: Path, name: str = "") -> tuple[list[str], PackageMeta | None, bytes]:
    """(what makes a conda archive unsafe to extract or to link, its ``PackageMeta``, its ``info/index.json``).
    Members and the paths its info documents name must stay inside the prefix (``conda_meta``)."""
    name = name or path.name
    try:
        members, info = read_archive(path, name)
    except UNREADABLE as exc:
        return [f"it cannot be read as a conda archive ({exc})"], None, b""
    problems = member_problems(members)
    meta, meta_problems = read_meta(name, members, info)
    problems += meta_problems
    if INDEX_JSON not in info:
        problems.append(f"it has no {INDEX_JSON}")
    return problems, meta, info.get(INDEX_JSON, b"")


def archive_problems(path: Path, name: str = "") -> list[str]:
    """What makes a conda archive unsafe to extract or link (empty: every path stays in the prefix)."""
    return scan_archive(path, name)[0]


def refused(pkg: Package, problems: list[str]) -> str:
    """The words of a refusal: the package and its first findings."""
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return f"conda package {pkg.file} ({pkg.name} {pkg.version}) is refused: " + "; ".join(problems[:SHOWN]) + more


def refusal(pkg: Package, problems: list[str], where: str) -> IntegrityError:
    return IntegrityError(
        f"{where}: {refused(pkg, problems)}. Nothing was installed from it; the channel (or the store) serves a "
        "malformed or malicious package.",
        library=pkg.name,
        path=pkg.file,
    )


def check_archive(pkg: Package, path: Path, where: str) -> PackageMeta:
    """Refuse an archive whose members or info documents lead outside the prefix; return its
    ``PackageMeta``. The verdict, the meta and index.json are kept beside the verified file (the cache
    re-checks the file's sha256 before every use), so each archive is read once."""
    stamp, meta_file, index = (path.parent / n for n in (CHECKED_STAMP, META_FILE, INDEX_FILE))
    if stamp.exists() and stamp.read_text() == pkg.sha256 and index.exists():
        try:
            return PackageMeta.from_dict(json.loads(meta_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # read it again
    problems, meta, index_json = scan_archive(path, pkg.file)
    if problems or meta is None:
        raise refusal(pkg, problems, where)
    atomic_write(index, index_json)
    atomic_write(meta_file, json.dumps(meta.to_dict()).encode())
    atomic_write(stamp, pkg.sha256.encode())
    return meta


def check_env(lock: PlatformLock, metas: list[PackageMeta], where: str) -> None:
    """Refuse an env whose packages, linked together, would write outside the prefix (one package's
    path through another's link)."""
    problems = env_problems(metas, lock.python)
    if problems:
        raise IntegrityError(
            f"{where}: the conda env {lock.env_id[:12]} is refused: " + "; ".join(problems[:SHOWN])
            + ". Nothing was installed; the channel (or the store) serves malformed or malicious packages."
        )  # fmt: skip


def stored_package_problem(path: Path, pkg: Package, key: str, metas: dict[str, PackageMeta]) -> str | None:
    """``repro store verify``: why installing the stored conda package ``pkg`` (at ``path``) would be refused
    (None: fine; its ``PackageMeta`` goes into ``metas`` for ``stored_env_problems``)."""
    problems, meta, _ = scan_archive(path, pkg.file)
    if meta is not None and not problems:
        metas[pkg.sha256] = meta
        return None
    return f"{key}: {refused(pkg, problems)}"


def stored_env_problems(envs: dict[str, PlatformLock], metas: dict[str, PackageMeta]) -> list[str]:
    """``repro store verify``: the conda envs of a record whose packages, each fine alone, would together write
    outside the prefix (``check_env``); packages already found bad are left out."""
    out = []
    for env_id, lock in sorted(envs.items()):
        conda_packages = [p for p in lock.packages if p.is_conda]
        if conda_packages and all(p.sha256 in metas for p in conda_packages):
            try:
                check_env(lock, [metas[p.sha256] for p in conda_packages], f"env {env_id[:12]}")
            except IntegrityError as exc:
                out.append(str(exc))
    return out


# -- install ------------------------------------------------------------------------------------


def _index_matches(p: Package, index: Path, where: str) -> None:
    """The archive's own index.json names the package, version and build the lock does."""
    try:
        doc = json.loads(index.read_bytes())
        found = (str(doc["name"]).lower(), str(doc["version"]), str(doc["build"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{where}: {p.file} has no readable {INDEX_JSON} ({exc})", library=p.name) from None
    if found != (p.name, p.version, p.build):
        raise IntegrityError(
            f"{where}: {p.file} is {found[0]} {found[1]} ({found[2]}), the lock names {p.name} {p.version} ({p.build})",
            library=p.name,
        )


def install(lock: PlatformLock, prefix: Path, files: dict[str, Path], rattler_cache: Path, where: str) -> None:
    """Link every conda package of ``lock`` into ``prefix`` with rattler (in its worker process), from the
    verified files in our cache (``files``: sha256 -> path). Every archive, and the env as a whole, is
    checked first (``check_archive``, ``check_env``). No network: each record's URL is that local file."""
    metas, recs = [], []
    for p in (p for p in lock.packages if p.is_conda):
        path = files[p.sha256]  # its sha256 was checked by the cache
        metas.append(check_archive(p, path, where))
        _index_matches(p, path.parent / INDEX_FILE, where)
        recs.append(
            {"index": str(path.parent / INDEX_FILE), "size": p.size, "sha256": p.sha256, "md5": p.md5}
            | {"file": p.file, "url": path.as_uri(), "channel": p.channel}
        )
    check_env(lock, metas, where)
    # absolute: the worker runs in a folder of its own
    request = {"records": recs, "prefix": os.path.abspath(prefix), "cache_dir": os.path.abspath(rattler_cache)}
    try:
        rattler_worker.ask("install", request, where=where)
    except rattler_worker.RattlerFailed as exc:
        raise InfraError(f"{where}: installing conda env {lock.env_id[:12]} failed: {exc.kind}: {exc.detail}") from None


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
