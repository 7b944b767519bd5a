"""conda-lock's ``conda-lock.yml``: export a step's locked conda env, import one as a step's lock.

Both directions go through conda-lock's own lock-file model (``conda_lock.lockfile``: pydantic
models, its writer and its parser), never hand-written YAML. An imported file is untrusted input:
parsed and validated by conda-lock, then every package again by our own lock model (plain file
names, hex digests), and each conda file's size is taken from the file itself (conda-lock does not
record sizes) after its sha256 matched.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from metaflow_repro.env.cache import PackageCache
from metaflow_repro.env.fetch import Fetcher
from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.model import validate as v
from metaflow_repro.model.lock import Package, PlatformLock, StepLock

FILE_SUFFIX = ".conda-lock.yml"


def _conda_lock():
    try:
        from conda_lock import lockfile
        from conda_lock.lockfile.v2prelim import models
        from conda_lock.models.channel import Channel
    except ImportError:
        raise InfraError("conda-lock export/import needs conda-lock: pip install 'repro[conda-lock]'") from None
    return lockfile, models, Channel


def to_lockfile(steps: list[tuple[str, StepLock]], flow: str, flow_file: str):
    """A conda-lock ``Lockfile`` of the env these steps share (every platform it is locked for)."""
    _, m, channel_cls = _conda_lock()
    first = steps[0][1]
    packages, channels = [], []
    for pname, pl in sorted(first.platforms.items()):
        for p in pl.packages:
            if p.is_conda:
                channels += [p.channel] if p.channel not in channels else []
                hashes = m.HashModel(md5=p.md5, sha256=p.sha256)
                manager, build = "conda", p.build
            else:
                hashes, manager, build = m.HashModel(sha256=p.sha256), "pip", None
            packages.append(
                m.LockedDependency(
                    name=p.name,
                    version=p.version,
                    manager=manager,
                    platform=pname,
                    dependencies={},
                    url=p.url,
                    hash=hashes,
                    build=build,
                    categories={"main"},
                )
            )
    meta = m.LockMeta(
        content_hash={pname: pl.env_id for pname, pl in first.platforms.items()},
        channels=[channel_cls.from_string(c) for c in channels],
        platforms=sorted(first.platforms),
        sources=[flow_file],
        custom_metadata={
            "repro:flow": flow,
            "repro:steps": ",".join(s for s, _ in steps),
            "repro:spec-id": first.spec_id,
            **{f"repro:env-id:{pname}": pl.env_id for pname, pl in first.platforms.items()},
            **{
                f"repro:virtual-packages:{pname}": " ".join(pl.virtual_packages)
                for pname, pl in first.platforms.items()
            },
        },
    )
    return m.Lockfile(package=packages, metadata=meta)


def export(lock_steps: dict[str, StepLock], flow: str, flow_file: str, outdir: Path) -> list[Path]:
    """One ``<step>.conda-lock.yml`` per distinct conda env (steps sharing one env share a file),
    each read back with conda-lock's own parser before it counts as written."""
    lockfile, _, _ = _conda_lock()
    groups: dict[tuple, list[tuple[str, StepLock]]] = {}
    for step, sl in sorted(lock_steps.items()):
        if sl.disabled or not sl.platforms or not any(pl.is_conda for pl in sl.platforms.values()):
            continue
        key = tuple(sorted((p, pl.env_id) for p, pl in sl.platforms.items()))
        groups.setdefault(key, []).append((step, sl))
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for steps in groups.values():
        target = outdir / f"{Path(flow_file).stem}-{steps[0][0]}{FILE_SUFFIX}".replace("_", "-")
        tmp = target.with_name(target.name + ".tmp")
        lockfile.write_conda_lock_file(to_lockfile(steps, flow, flow_file), tmp, metadata_choices=None)
        lockfile.parse_conda_lock_file(tmp)  # conda-lock accepts what it will be asked to install
        tmp.replace(target)
        written.append(target)
    return written


def _channel_of(url: str, subdir: str, file: str) -> str:
    tail = f"/{subdir}/{file}"
    return url[: -len(tail)] if url.endswith(tail) else url.rsplit("/", 2)[0]


def read(path: Path, cache: PackageCache, where: str) -> dict[str, PlatformLock]:
    """Every platform's env in a conda-lock file, as our lock model (files fetched into ``cache``
    and verified: conda-lock records no sizes, and we lock only what we have verified)."""
    lockfile, _, _ = _conda_lock()
    try:
        parsed = lockfile.parse_conda_lock_file(Path(path))
    except Exception as exc:  # conda-lock raises pydantic/yaml/its own errors for a malformed file
        raise BadInput(f"{path}: not a conda-lock file conda-lock can read: {exc}", path=str(path)) from None
    out: dict[str, PlatformLock] = {}
    for pname in parsed.metadata.platforms:
        packages = []
        for dep in (d for d in parsed.package if d.platform == pname):
            at = v.At(f"{path}: package {dep.name} ({pname})")
            name = v.package_name(dep.name, v.At(f"{path}: a package of {pname}") / "name")
            version = v.package_version(dep.version, at / "version")
            file = v.file_name(unquote(urlparse(dep.url).path).rsplit("/", 1)[-1], at / "url")
            sha = v.hex_digest(dep.hash.sha256 or "", 64, at / "hash.sha256")
            if dep.manager == "conda":
                md5 = v.hex_digest(dep.hash.md5 or "", 32, at / "hash.md5")
                subdir = v.name(unquote(urlparse(dep.url).path).rsplit("/", 2)[-2], at / "url")
                pkg = Package(
                    name, version, _channel_of(dep.url, subdir, file), file, dep.url, sha, 0,
                    subdir=subdir, build=v.name(dep.build or "", at / "build"), md5=md5,
                )  # fmt: skip
            else:
                pkg = Package(name, version, "pypi", file, dep.url, sha, 0)
            packages.append(_sized(pkg, cache, where))
        python = next((p.version for p in packages if p.name == "python" and p.is_conda), None)
        if python is None:
            raise BadInput(f"{path}: platform {pname} has no conda python package; repro envs bring their own python")
        virtual = parsed.metadata.custom_metadata or {}
        out[pname] = PlatformLock(
            pname,
            python,
            tuple(packages),
            virtual_packages=tuple(virtual.get(f"repro:virtual-packages:{pname}", "").split()),
        )
    return out


def _sized(pkg: Package, cache: PackageCache, where: str) -> Package:
    """``pkg`` with its real size: the file is fetched into the cache, where its sha256 is checked."""
    from dataclasses import replace

    probe = replace(pkg, size=_size_hint(pkg))
    if probe.size < 0:
        raise BadInput(f"{where}: {pkg.url}: cannot learn the size of {pkg.file}")
    Fetcher(cache).fetch(probe, where)
    return probe


def _size_hint(pkg: Package) -> int:
    parsed = urlparse(pkg.url)
    if parsed.scheme == "file":
        try:
            return Path(unquote(parsed.path)).stat().st_size
        except OSError:
            return -1
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(pkg.url, method="HEAD"), timeout=60) as resp:
            return int(resp.headers.get("Content-Length", -1))
    except (OSError, ValueError):
        return -1
