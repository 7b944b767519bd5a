"""Resolve against PyPI (or a configured index / find-links folder) with ``uv pip compile``.

uv writes a PEP 751 ``pylock.toml`` for the target platform; we keep exactly one wheel per
package (the one an installer would pick there) with its URL, sha256 and size. A package that
publishes no usable wheel is built from its sdist once, at lock time, offline, with locked build
requirements (``metaflow_repro.env.sdist``); the lock records the sdist's and the built wheel's sha256, and
that wheel (cached, snapshotted) is what every environment installs: nothing is built at install time.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from metaflow_repro._toml import tomllib
from metaflow_repro.env import tls
from metaflow_repro.env.uvtool import run_uv
from metaflow_repro.errors import InfraError, ResolutionError
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.lock import Package, PlatformLock
from metaflow_repro.model.spec import EnvSpec
from metaflow_repro.model.validate import cap
from metaflow_repro.settings import Settings, check_package_sources

#: uv's exit codes: 1 = the command failed (no solution: bad names, versions or pins), 2 = an error
#: (the index could not be reached, I/O). The code decides, never the wording of uv's message.
UV_FAILURE, UV_ERROR = 1, 2


#: conda package names whose PyPI distribution has another name (conda-source = "pypi" serves
#: @conda libraries from PyPI under these names; names not listed are the same on both sides, e.g.
#: scikit-learn). Each substitution made is recorded in the lock's ``name_map``.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "py-xgboost": "xgboost",
    "py-lightgbm": "lightgbm",
    "py-opencv": "opencv-python",
    "tensorflow-base": "tensorflow",
    "matplotlib-base": "matplotlib",
    "msgpack-python": "msgpack",
    "python-graphviz": "graphviz",
    "pytables": "tables",
}


def name_map(spec: EnvSpec) -> dict[str, str]:
    """The substitutions made for ``spec``: only @conda names (a @pypi name is a PyPI name)."""
    if spec.kind == "pypi":
        return {}
    return {n: CONDA_TO_PYPI[n] for n in spec.requirements if n in CONDA_TO_PYPI and CONDA_TO_PYPI[n] != n}


def requirements_in(spec: EnvSpec) -> str:
    mapped = name_map(spec)
    return "".join(f"{mapped.get(name, name)}=={version}\n" for name, version in spec.requirements.items())


def compile_args(
    req: Path,
    out: Path,
    platform: plats.Platform,
    python: str,
    settings: Settings,
    no_build: bool = False,
    no_deps: bool = False,
) -> list[str]:
    args = [
        "pip",
        "compile",
        str(req),
        "--format",
        "pylock.toml",
        "-o",
        str(out),
        "--python-version",
        python,
        "--python-platform",
        platform.uv,
        "--quiet",
        "--no-header",
    ]
    if no_build:  # build requirements: wheels only (a build backend built from source is refused)
        args.append("--no-build")
    if no_deps:
        args.append("--no-deps")
    check_package_sources(settings)  # a missing local folder names its setting, not the index
    if settings.index_url:
        args += ["--index-url", settings.index_url]
    for link in settings.find_links:
        args += ["--find-links", link]
    return args


def _file_package(name: str, version: str, wheel: dict, folder: Path) -> Package:
    url = wheel.get("url")
    if url:
        filename = unquote(urlparse(url).path.rsplit("/", 1)[-1])
    else:  # a local find-links folder: pylock gives a path relative to the lock
        local = (folder / wheel["path"]).resolve()
        url, filename = local.as_uri(), local.name
    sha = (wheel.get("hashes") or {}).get("sha256")
    size = wheel.get("size")
    if url.startswith("file://") and (sha is None or size is None):
        data = Path(unquote(urlparse(url).path)).read_bytes()
        sha, size = sha or hashlib.sha256(data).hexdigest(), len(data)
    if not sha or size is None:
        raise InfraError(f"the index gave no sha256/size for {filename}; cannot lock it")
    return Package(name=name, version=version, source="pypi", file=filename, url=url, sha256=sha, size=int(size))


@dataclass(frozen=True)
class Compiled:
    """A pylock read for one platform and Python: the wheel chosen per package, and the sdists of
    the packages that publish no usable wheel (to be built)."""

    wheels: tuple[Package, ...]
    sdists: tuple[Package, ...]


def parse_pylock(text: str, folder: Path, platform: plats.Platform, python: str, where: str) -> Compiled:
    doc = tomllib.loads(text)
    wheels, sdists = [], []
    for entry in doc.get("packages", []):
        name, version = entry["name"], entry["version"]
        files = {(w.get("url") or w.get("path")).rsplit("/", 1)[-1]: w for w in entry.get("wheels", [])}
        chosen = plats.best_wheel(list(files), platform, python)
        if chosen is not None:
            wheels.append(_file_package(name, version, files[chosen], folder))
        elif isinstance(entry.get("sdist"), dict):
            sdists.append(_file_package(name, version, entry["sdist"], folder))
        else:
            raise ResolutionError(
                f"{where}: {name} {version} has no wheel for {platform.name} / Python {python} and no sdist "
                "to build one from. Pin a version that publishes wheels for this platform and Python.",
                library=name,
            )
    return Compiled(tuple(sorted(wheels)), tuple(sorted(sdists)))


def compile_packages(
    requirements: str,
    platform_name: str,
    python: str,
    settings: Settings,
    where: str,
    no_build: bool = False,
    no_deps: bool = False,
) -> Compiled:
    """``uv pip compile`` ``requirements`` for one platform and exact Python (``no_deps``: exactly
    the requirements, none of their dependencies)."""
    platform = plats.get(platform_name)
    with tempfile.TemporaryDirectory(prefix="repro-resolve-") as tmp:
        folder = Path(tmp)
        req, out = folder / "requirements.in", folder / "pylock.toml"
        req.write_text(requirements)
        args = compile_args(req, out, platform, python, settings, no_build=no_build, no_deps=no_deps)
        proc = run_uv(args, settings.home.uv_cache, cwd=folder)
        if proc.returncode != 0:
            message = proc.stderr.strip()
            if proc.returncode != UV_FAILURE:
                raise InfraError(
                    f"{where}: cannot reach the package index while resolving for {platform_name}:\n{message}\n"
                    f"{tls.trust().describe()}"
                )
            libs = cap(requirements.split())
            raise ResolutionError(
                f"{where}: cannot resolve [{libs}] for {platform_name} (Python {python}):\n"
                f"{message}\nCheck the names and versions on your package index and pin versions "
                "that exist and agree with each other."
            )
        return parse_pylock(out.read_text(), folder, platform, python, where)


def resolve(
    spec: EnvSpec,
    platform_name: str,
    python: str,
    settings: Settings,
    previous: PlatformLock | None = None,
    no_deps: bool = False,
) -> PlatformLock:
    """Resolve ``spec`` for one platform and exact Python version (``no_deps``: exactly the
    requirements, none of their dependencies: pip packages on top of a conda env). A package that
    publishes only an sdist gets the wheel ``previous`` (the lock being replaced) or this machine
    already built from the very same sdist (same sha256, same Python), else is built now, once."""
    compiled = compile_packages(requirements_in(spec), platform_name, python, settings, spec.where, no_deps=no_deps)
    built = [_built(sdist, platform_name, python, settings, spec.where, previous) for sdist in compiled.sdists]
    return PlatformLock(
        platform=platform_name,
        python=python,
        packages=(*compiled.wheels, *built),
        name_map=tuple(name_map(spec).items()),
    )


def _built(
    sdist: Package, platform_name: str, python: str, settings: Settings, where: str, previous: PlatformLock | None
) -> Package:
    from metaflow_repro.env import pythons
    from metaflow_repro.env import sdist as sdists
    from metaflow_repro.env.cache import PackageCache
    from metaflow_repro.env.fetch import Fetcher

    before = (previous.by_name() if previous else {}).get(sdist.name)
    if (
        before is not None
        and before.built is not None
        and before.built.sdist == sdist
        and before.built.python == python
    ):
        return before
    builder = sdists.Builder(
        Fetcher(PackageCache(settings.home.packages)), settings.home.builds, settings.home.uv_cache
    )
    known = builder.known(sdist, python)
    if known is not None:
        return known
    interpreter = pythons.find(python, where=where)
    local = plats.local_platform_name()
    path = builder.fetcher.ensure([sdist], where=where)[sdist.sha256]
    requires = compile_packages(
        "".join(f"{r}\n" for r in sdists.build_requirements(path)),
        local,
        interpreter.version,
        settings,
        f"{where}: build requirements of {sdist.file}",
        no_build=True,
    ).wheels
    return builder.build(sdist, requires, interpreter, plats.get(platform_name), where)
