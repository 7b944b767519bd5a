"""Packages published only as source: build each sdist once into a wheel, offline and isolated.

The build runs ``uv build --wheel`` on the verified sdist with no index and no network: its build
requirements are locked wheels (each hash-checked, from the package cache) offered through a
find-links folder and pinned with ``--build-constraints --require-hashes``, so nothing else can
enter the build environment. The wheel goes into the package cache under its own sha256 and the
lock records both digests (``Package.built``). Wheel builds are not bit-reproducible, which is why a
replay installs the snapshotted wheel and never builds again. A build index in ``REPRO_HOME``
(``builds/<sdist sha256>-<python>.json``) makes every later lock on this machine reuse that wheel.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

from metaflow_repro._toml import tomllib
from metaflow_repro.env import fetch
from metaflow_repro.env.cache import PackageCache, sha256_file
from metaflow_repro.env.pythons import Interpreter
from metaflow_repro.env.uvtool import run_uv
from metaflow_repro.errors import BadInput, IntegrityError, ResolutionError
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model import platforms as plats
from metaflow_repro.model import validate as v
from metaflow_repro.model.lock import Built, Package

#: PEP 517's fallback for a project that declares no ``[build-system]``.
DEFAULT_REQUIRES = ("setuptools>=40.8.0",)
#: Timestamps inside the wheel (zip entries) from a fixed date: many backends then build the same bytes.
SOURCE_DATE_EPOCH = "315532800"
#: How much of a failed build's log the error shows.
LOG_TAIL_LINES = 25


def build_requirements(sdist: Path) -> list[str]:
    """``[build-system] requires`` of the sdist's top-level ``pyproject.toml`` (read from the archive,
    nothing extracted), or PEP 517's default when it has none."""
    text = _top_level_member(sdist, "pyproject.toml")
    if text is None:
        return list(DEFAULT_REQUIRES)
    try:
        doc = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{sdist.name}: its pyproject.toml is not valid TOML ({exc})", path=sdist.name) from None
    system = doc.get("build-system")
    if not isinstance(system, dict) or "requires" not in system:
        return list(DEFAULT_REQUIRES)
    requires = system["requires"]
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise BadInput(f"{sdist.name}: [build-system] requires in its pyproject.toml is not a list of strings")
    return list(requires)


def _top_level_member(archive: Path, name: str, limit: int = 1 << 20) -> bytes | None:
    """The bytes of ``<top folder>/<name>`` in a .tar.gz or .zip sdist (at most ``limit`` bytes)."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.filename.count("/") == 1 and info.filename.endswith("/" + name):
                    with zf.open(info) as fh:
                        return fh.read(limit)
        return None
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            if member.isfile() and member.name.strip("./").count("/") == 1 and member.name.endswith("/" + name):
                member_file = tf.extractfile(member)
                return member_file.read(limit) if member_file else None
    return None


class Builder:
    """Builds sdists into wheels on this machine, at most once per (sdist, interpreter): the sdist and its
    build requirements come through ``fetcher``, the wheel goes into its cache."""

    def __init__(self, fetcher: fetch.Fetcher, index: Path, uv_cache: Path):
        self.fetcher, self.index, self.uv_cache = fetcher, Path(index), uv_cache
        self.cache = fetcher.cache

    def _index_file(self, sdist: Package, python: str) -> Path:
        return self.index / f"{sdist.sha256}-{v.name(python, v.At('python'))}.json"

    def known(self, sdist: Package, python: str) -> Package | None:
        """The wheel this machine already built from ``sdist`` with ``python``, if it is still cached."""
        try:
            data = json.loads(self._index_file(sdist, python).read_text())
            pkg = Package.from_dict(data, v.At(str(self._index_file(sdist, python))))
        except (OSError, ValueError, BadInput):
            return None
        ok = pkg.built is not None and pkg.built.sdist == sdist and pkg.built.python == python
        return pkg if ok and self.cache.has(pkg) else None

    def build(
        self,
        sdist: Package,
        requires: tuple[Package, ...],
        interpreter: Interpreter,
        platform: plats.Platform,
        where: str,
    ) -> Package:
        """Build ``sdist`` with ``interpreter`` and exactly the locked ``requires``; return the
        wheel's ``Package`` (admitted into the cache). Exit 2 (``BadInput``) when the build fails,
        naming the package and the last lines of its log."""
        source = self.fetcher.ensure([sdist], where=where)[sdist.sha256]
        files = self.fetcher.ensure(requires, where=where)
        with tempfile.TemporaryDirectory(prefix="repro-sdist-") as tmp:
            folder = Path(tmp)
            links, out = folder / "links", folder / "out"
            links.mkdir()
            for p in requires:
                os.symlink(files[p.sha256], links / p.file)
            constraints = folder / "build-constraints.txt"
            constraints.write_text("".join(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in requires))
            args = [
                "build",
                str(source),
                "--wheel",
                "--out-dir",
                str(out),
                "--python",
                interpreter.path,
                "--no-index",
                "--find-links",
                str(links),
                "--build-constraints",
                str(constraints),
                "--require-hashes",
                "--no-config",
                "--no-sources",
            ]
            proc = run_uv(args, self.uv_cache, offline=True, cwd=folder, extra={"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
            wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
            if proc.returncode != 0 or len(wheels) != 1:
                log = (proc.stdout + proc.stderr).strip().splitlines()
                tail = "\n".join(f"  | {line}" for line in log[-LOG_TAIL_LINES:])
                raise BadInput(
                    f"{where}: {sdist.name} {sdist.version} publishes no wheel for {platform.name} / Python "
                    f"{interpreter.version}, and building one from its sdist {sdist.file} failed "
                    f"(build requirements: {', '.join(f'{p.name}=={p.version}' for p in requires) or 'none'}; "
                    f"offline, Python {interpreter.version}). Last lines of the build log:\n{tail}\n"
                    "Pin a version that publishes wheels, or fix what the log names.",
                    library=sdist.name,
                    path=sdist.file,
                )
            wheel = wheels[0]
            if plats.best_wheel([wheel.name], platform, interpreter.version) is None:
                raise ResolutionError(
                    f"{where}: {sdist.name} {sdist.version} publishes only an sdist; built here it gives "
                    f"{wheel.name}, which does not install on {platform.name}. Lock this platform on a "
                    f"{platform.name} machine, or pin a version that publishes wheels.",
                    library=sdist.name,
                )
            pkg = Package(
                name=sdist.name,
                version=sdist.version,
                source=sdist.source,
                file=wheel.name,
                url=sdist.url,
                sha256=sha256_file(wheel),
                size=wheel.stat().st_size,
                built=Built(python=interpreter.version, sdist=sdist, requires=requires),
            )
            fetch.add_file(self.cache, pkg, wheel, where)
        self.index.mkdir(parents=True, exist_ok=True)
        atomic_write(self._index_file(sdist, interpreter.version), json.dumps(pkg.as_dict(), sort_keys=True))
        return pkg


def fetcher(cache: PackageCache, uv_cache: Path) -> fetch.Fetcher:
    """A fetcher for ``cache`` that makes a wheel built from its sdist when the lock was made again
    (``rebuild``), with ``uv_cache``: what fetches every package of a lock."""

    def again(pkg: Package, where: str) -> Path:
        return rebuild(found, pkg, where, uv_cache)

    found = fetch.Fetcher(cache, again)
    return found


def rebuild(fetcher: fetch.Fetcher, pkg: Package, where: str, uv_cache: Path) -> Path:
    """Build ``pkg``'s wheel again from its locked sdist, build requirements and interpreter (a
    lock made on another machine, a cache that lost the file) and admit it only if it is the very
    wheel the lock names; builds need not be bit-reproducible, so otherwise say where to get it."""
    from metaflow_repro.env import pythons

    assert pkg.built is not None
    built = pkg.built
    interpreter = pythons.find(built.python, where=where)
    with tempfile.TemporaryDirectory(prefix="repro-rebuild-") as tmp:
        again = Builder(fetcher, Path(tmp), uv_cache).build(
            built.sdist, built.requires, interpreter, plats.get(plats.local_platform_name()), where
        )
    if again.sha256 != pkg.sha256:
        raise IntegrityError(
            f"{where}: the wheel of {pkg.name} {pkg.version} ({pkg.file}, sha256 {pkg.sha256}) was built from "
            f"its sdist {built.sdist.file} when the lock was made and is not in the package cache; built again "
            f"here it has sha256 {again.sha256} (wheel builds are not always bit-reproducible). Get the locked "
            "wheel from a store a run with this lock was pushed to (`repro replay REF` pulls it), or, to "
            "lock the wheel built here instead, delete the lock file and run `repro lock` again (unpinned "
            "transitive packages may move).",
            library=pkg.name,
            path=pkg.file,
        )
    return fetcher.cache.path(pkg)
