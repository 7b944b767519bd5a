"""Resolve against PyPI (or a configured index / find-links folder) with ``uv pip compile``.

uv writes a PEP 751 ``pylock.toml`` for the target platform; we keep exactly one wheel per
package (the one an installer would pick there) with its URL, sha256 and size. Wheels only:
an sdist would need a build at install time, which could neither be offline nor reproducible.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from repro._toml import tomllib
from repro.env.uvtool import run_uv
from repro.errors import InfraError, ResolutionError
from repro.model import platforms as plats
from repro.model.lock import Package, PlatformLock
from repro.model.spec import EnvSpec
from repro.settings import Settings

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
    req: Path, out: Path, platform: plats.Platform, python: str, settings: Settings, no_deps: bool = False
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
        "--no-build",
        "--quiet",
        "--no-header",
    ]
    if no_deps:
        args.append("--no-deps")
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


def parse_pylock(text: str, folder: Path, platform: plats.Platform, python: str, spec: EnvSpec) -> tuple[Package, ...]:
    doc = tomllib.loads(text)
    packages = []
    for entry in doc.get("packages", []):
        name, version = entry["name"], entry["version"]
        wheels = {(w.get("url") or w.get("path")).rsplit("/", 1)[-1]: w for w in entry.get("wheels", [])}
        chosen = plats.best_wheel(list(wheels), platform, python)
        if chosen is None:
            raise ResolutionError(
                f"{spec.where}: {name} {version} has no wheel for {platform.name} / Python {python}; "
                "repro installs wheels only (an sdist build is neither offline nor reproducible). "
                "Pin a version that publishes wheels for this platform and Python."
            )
        packages.append(_file_package(name, version, wheels[chosen], folder))
    return tuple(sorted(packages))


def resolve(spec: EnvSpec, platform_name: str, python: str, settings: Settings, no_deps: bool = False) -> PlatformLock:
    """Resolve ``spec`` for one platform and exact Python version (``no_deps``: exactly the
    requirements, none of their dependencies: pip packages on top of a conda env)."""
    platform = plats.get(platform_name)
    with tempfile.TemporaryDirectory(prefix="repro-resolve-") as tmp:
        folder = Path(tmp)
        req, out = folder / "requirements.in", folder / "pylock.toml"
        req.write_text(requirements_in(spec))
        proc = run_uv(compile_args(req, out, platform, python, settings, no_deps), settings.home.uv_cache, cwd=folder)
        if proc.returncode != 0:
            message = proc.stderr.strip()
            if proc.returncode != UV_FAILURE:
                raise InfraError(
                    f"{spec.where}: cannot reach the package index while resolving for {platform_name}:\n{message}"
                )
            libs = ", ".join(f"{n}=={v}" for n, v in spec.requirements.items())
            raise ResolutionError(
                f"{spec.where}: cannot resolve [{libs}] for {platform_name} (Python {python}):\n"
                f"{message}\nCheck the names and versions on your package index and pin versions "
                "that exist and agree with each other."
            )
        packages = parse_pylock(out.read_text(), folder, platform, python, spec)
    return PlatformLock(
        platform=platform_name, python=python, packages=packages, name_map=tuple(name_map(spec).items())
    )
