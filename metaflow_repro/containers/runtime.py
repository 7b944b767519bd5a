"""What runs repro itself inside a container: repro's source (its ``repro`` and ``metaflow_extensions``
packages) and its dependencies installed for the image's Python, each mounted read-only.

The dependencies are installed once per (image Python, pinned set) with ``uv pip install --target``
under ``REPRO_HOME/container-runtime/<key>``, pinned to the versions repro runs with here. This is
repro the tool, never a flow's environment: those are rebuilt in the container from the store.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

import metaflow_repro
from metaflow_repro.containers.image import uv_install_into
from metaflow_repro.errors import InfraError
from metaflow_repro.settings import Home

SRC = "/opt/repro/src"  # repro's packages, read-only
SITE = "/opt/repro/site"  # repro's dependencies, read-only


@dataclass(frozen=True)
class Runtime:
    source: dict[str, Path]  # package name -> its folder on the host
    site: Path  # the dependencies folder on the host

    def volumes(self) -> dict[str, dict[str, str]]:
        out = {str(path): {"bind": f"{SRC}/{name}", "mode": "ro"} for name, path in self.source.items()}
        out[str(self.site)] = {"bind": SITE, "mode": "ro"}
        return out

    @property
    def pythonpath(self) -> str:
        return f"{SRC}:{SITE}"

    @property
    def path(self) -> str:
        return f"{SITE}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _pins(python: str) -> list[str]:
    """repro's own requirements, pinned to the versions installed here (markers judged for ``python``)."""
    out = []
    for text in metadata.requires("metaflow-repro") or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"python_version": python, "extra": ""}):
            continue
        try:
            out.append(f"{req.name}=={metadata.version(req.name)}")
        except metadata.PackageNotFoundError:
            out.append(str(req).split(";")[0])
    return sorted(out)


def _constraints() -> list[str]:
    """Every distribution installed here, pinned: the container's repro runs on the same versions."""
    seen = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in ("metaflow-repro",):
            seen[name.lower()] = f"{name}=={dist.version}"
    return sorted(seen.values())


def prepare(home: Home, python: str, log=print) -> Runtime:
    """repro's source folders and its dependencies for Python ``python`` (major.minor), installed once."""
    pkg_root = Path(metaflow_repro.__file__).resolve().parent
    import metaflow_extensions.repro as ext

    ext_root = Path(next(iter(ext.__path__))).resolve().parent  # the metaflow_extensions namespace folder
    source = {"metaflow_repro": pkg_root, "metaflow_extensions": ext_root}
    pins = _pins(python)
    constraints = _constraints()
    key = hashlib.sha256("\n".join([python, *pins, "--", *constraints]).encode()).hexdigest()[:24]
    site = home.container_runtime / key
    if (site / ".complete").is_file():
        return Runtime(source, site)
    from metaflow_repro.env.uvtool import uv_env

    log(f"installing repro's dependencies for Python {python} into {site} (once)")
    home.container_runtime.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.container_runtime, prefix=".build-") as tmp:
        target = Path(tmp) / "site"
        cons = Path(tmp) / "constraints.txt"
        cons.write_text("\n".join(constraints) + "\n")
        import subprocess

        proc = subprocess.run(
            [*uv_install_into(target, python), "--constraint", str(cons), *pins],
            capture_output=True,
            text=True,
            env=uv_env(home.uv_cache),
        )
        if proc.returncode != 0:
            raise InfraError(f"cannot install repro's dependencies for the container:\n{proc.stderr.strip()[-3000:]}")
        (target / ".complete").write_text(key)
        try:
            os.replace(target, site)
        except OSError:  # another process finished first
            if not (site / ".complete").is_file():
                raise
    return Runtime(source, site)
