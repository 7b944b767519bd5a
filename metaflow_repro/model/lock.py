"""The lock file ``<flow stem>.repro.lock``: model, TOML (de)serialisation, validation, diffs.

Deterministic by construction: sorted steps, platforms and packages, no timestamps. Every id in
the file is recomputed on read, so a hand edit (or a merge accident) is caught, not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from metaflow_extensions.repro.plugins.protocol import LOCK_SUFFIX
from metaflow_repro.errors import LockFileError
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model import validate as v
from metaflow_repro.model.spec import EnvSpec, sha256_json

LOCK_VERSION = 1


_FILE_KEYS = frozenset({"name", "version", "source", "file", "url", "sha256", "size"})
_PACKAGE_KEYS = _FILE_KEYS | {"built"}
_BUILT_KEYS = frozenset({"python", "sdist", "requires"})
#: Keys only conda packages have (and only written when set, so PyPI entries read and hash as before).
_CONDA_KEYS = frozenset({"subdir", "build", "md5"})
_PLATFORM_KEYS = frozenset({"env_id", "platform", "python", "packages"})
_PLATFORM_OPTIONAL = frozenset({"virtual_packages", "name_map"})


@dataclass(frozen=True, order=True)
class Built:
    """How a wheel was built from a package published only as source: the sdist it came from
    (verified by its sha256), the interpreter that built it and the build requirements, each a
    locked, hash-checked wheel. Wheel builds are not bit-reproducible, so the wheel itself (its
    sha256 is the package's) is kept in the package cache and the store and never rebuilt."""

    python: str  # the exact interpreter version that built it
    sdist: Package
    requires: tuple[Package, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "requires", tuple(sorted(self.requires)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "sdist": self.sdist.as_dict(),
            "requires": [p.as_dict() for p in self.requires],
        }

    @classmethod
    def from_dict(cls, d: Any, at: v.At) -> Built:
        v.only(v.of_type(d, dict, at), _BUILT_KEYS, at)
        sdist = Package.from_dict(v.need(d, "sdist", dict, at), at / "sdist", built_ok=False)
        requires = v.list_of(
            v.need(d, "requires", list, at), at / "requires", lambda x, w: Package.from_dict(x, w, built_ok=False)
        )
        return cls(python=v.name(v.need(d, "python", str, at), at / "python"), sdist=sdist, requires=tuple(requires))


@dataclass(frozen=True, order=True)
class Package:
    """One installed file. ``built``: set when the file is a wheel built from an sdist (the
    sdist's URL is ``url``; ``sha256``/``size`` are the built wheel's)."""

    name: str
    version: str
    source: str  # "pypi" or a conda channel URL (the package's channel)
    file: str
    url: str
    sha256: str
    size: int
    subdir: str = ""  # conda only: the channel's subdir (linux-64, noarch, ...); "" for a PyPI file
    build: str = ""  # conda only: the build string
    md5: str = ""  # conda only: the md5 the channel's repodata gives
    built: Built | None = None

    @property
    def is_conda(self) -> bool:
        return bool(self.subdir)

    @property
    def channel(self) -> str:
        """The conda channel's URL ("" for a PyPI package)."""
        return self.source if self.is_conda else ""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "file": self.file,
            "url": self.url,
            "sha256": self.sha256,
            "size": self.size,
        }
        if self.is_conda:
            d.update(subdir=self.subdir, build=self.build, md5=self.md5)
        if self.built is not None:
            d["built"] = self.built.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, at: v.At, built_ok: bool = True) -> Package:
        """Strict: every key present and typed, sha256 64 hex, file a plain name, size >= 0.
        ``built`` is optional (locks written before sdist builds have none); conda packages carry
        ``subdir``, ``build`` and ``md5`` (all three)."""
        v.only(v.of_type(d, dict, at), (_PACKAGE_KEYS if built_ok else _FILE_KEYS) | _CONDA_KEYS, at)
        size = v.need(d, "size", int, at)
        if size < 0:
            (at / "size").fail(size, "a size in bytes (>= 0)")
        built = Built.from_dict(d["built"], at / "built") if "built" in d else None
        conda: dict[str, str] = {}
        if any(k in d for k in _CONDA_KEYS):  # a conda package: all three, checked
            conda["subdir"] = v.name(v.need(d, "subdir", str, at), at / "subdir")
            conda["build"] = v.name(v.need(d, "build", str, at), at / "build")
            conda["md5"] = v.hex_digest(v.need(d, "md5", str, at), 32, at / "md5")
        return cls(
            name=v.package_name(v.need(d, "name", str, at), at / "name"),
            version=v.package_version(v.need(d, "version", str, at), at / "version"),
            source=v.need(d, "source", str, at),
            file=v.file_name(v.need(d, "file", str, at), at / "file"),
            url=v.need(d, "url", str, at),
            sha256=v.hex_digest(v.need(d, "sha256", str, at), 64, at / "sha256"),
            size=size,
            built=built,
            **conda,
        )


def env_id_of(platform: str, python: str, packages: tuple[Package, ...]) -> str:
    """Identity of a resolved environment: same id ⇒ byte-identical package set and interpreter."""
    return sha256_json(
        {
            "platform": platform,
            "python": python,
            "implementation": "cpython",
            "packages": [[p.name, p.version, p.source, p.file, p.sha256] for p in sorted(packages)],
        }
    )


@dataclass(frozen=True)
class PlatformLock:
    """One resolved environment. Its one codec, ``to_dict``/``from_dict``, is used by the lock
    file's platform sections, the store's ``locks/<env id>.toml`` objects and ``RunRecord.envs``.
    A container that is keyed by the platform (the lock file) or by the env id (the record) leaves
    that key out of the dict and passes it back to ``from_dict``, which checks it."""

    platform: str
    python: str  # the exact interpreter version, e.g. "3.11.7"
    packages: tuple[Package, ...]
    #: conda: the virtual packages the solver assumed (``__glibc=2.36=0``), sorted; () for PyPI envs
    virtual_packages: tuple[str, ...] = ()
    #: conda-source = "pypi": each @conda name that was served under another PyPI name (pytorch -> torch)
    name_map: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple(sorted(self.packages)))  # canonical order
        object.__setattr__(self, "virtual_packages", tuple(sorted(self.virtual_packages)))
        object.__setattr__(self, "name_map", tuple(sorted(self.name_map)))

    @property
    def is_conda(self) -> bool:
        """Built by rattler (its interpreter is the env's own ``python`` package), not a venv."""
        return any(p.is_conda for p in self.packages)

    @property
    def env_id(self) -> str:
        return env_id_of(self.platform, self.python, self.packages)

    def by_name(self) -> dict[str, Package]:
        return {p.name: p for p in self.packages}

    def to_dict(self) -> dict[str, Any]:
        """``{"env_id", "platform", "python", "packages": [...]}``, packages in canonical order."""
        out: dict[str, Any] = {
            "env_id": self.env_id,
            "platform": self.platform,
            "python": self.python,
            "packages": [p.as_dict() for p in self.packages],
        }
        if self.virtual_packages:
            out["virtual_packages"] = list(self.virtual_packages)
        if self.name_map:
            out["name_map"] = dict(self.name_map)
        return out

    @classmethod
    def from_dict(
        cls, d: Any, where: str | v.At, *, platform: str | None = None, env_id: str | None = None
    ) -> PlatformLock:
        """Strict inverse of ``to_dict``. ``platform``/``env_id``: the key the container filed the
        dict under, when the dict leaves it out. An env id must be given (in the dict, here, or
        both) and must be the one the packages hash to. Raises ``validate.Invalid`` (a ``BadInput``) naming the field."""
        at = where if isinstance(where, v.At) else v.At(where)
        v.only(v.of_type(d, dict, at), _PLATFORM_KEYS | _PLATFORM_OPTIONAL, at)
        if "platform" in d or platform is None:
            name = v.name(v.need(d, "platform", str, at), at / "platform")
            if platform is not None and name != platform:
                (at / "platform").fail(name, f"the platform this section is filed under ({platform})")
        else:
            name = v.name(platform, at / "platform")
        python = v.name(v.need(d, "python", str, at), at / "python")
        packages = v.list_of(v.need(d, "packages", list, at), at / "packages", Package.from_dict)
        virtual = v.list_of(v.opt(d, "virtual_packages", list, [], at), at / "virtual_packages", v.string)
        name_map = v.opt(d, "name_map", dict, {}, at)
        for conda_name, pypi_name in name_map.items():
            v.name(conda_name, at / "name_map")
            v.name(v.of_type(pypi_name, str, at / "name_map" / conda_name), at / "name_map" / conda_name)
        pl = cls(
            platform=name,
            python=python,
            packages=tuple(packages),
            virtual_packages=tuple(virtual),
            name_map=tuple(name_map.items()),
        )
        if env_id is None:
            v.need(d, "env_id", str, at)  # an env id is always given: by the dict, or by its container
        for given, where in ((d.get("env_id"), at / "env_id"), (env_id, at)):
            if given is not None and v.env_id(given, where) != pl.env_id:
                raise v.Invalid(
                    where,
                    given,
                    f"{where.field} {given!r}: env_id does not match the packages listed "
                    f"(they hash to {pl.env_id}; edited by hand, merged badly or corrupted)",
                )
        return pl


@dataclass(frozen=True)
class StepLock:
    step: str
    kind: str
    source: str
    python: str  # as requested
    libraries: tuple[tuple[str, str], ...]
    implicit: tuple[tuple[str, str], ...]
    channels: tuple[str, ...]
    disabled: bool
    platforms: dict[str, PlatformLock] = field(default_factory=dict)  # name -> PlatformLock
    pip: tuple[tuple[str, str], ...] = ()  # PyPI packages on top of a conda env (EnvSpec.pip)

    @property
    def spec_id(self) -> str:
        return self.as_spec(flow="").spec_id

    def as_spec(self, flow: str) -> EnvSpec:
        return EnvSpec(flow=flow, **_declared(self))

    @classmethod
    def from_spec(cls, spec: EnvSpec, platforms: dict[str, PlatformLock]) -> StepLock:
        return cls(platforms=dict(sorted(platforms.items())), **_declared(spec))


#: the fields a step lock shares with its EnvSpec (the declaration, from step to pip): carried both ways
#: by one list, so a field added to both is locked and read back without another edit
_DECLARED = tuple(f.name for f in fields(StepLock) if f.name in {g.name for g in fields(EnvSpec)})


def _declared(of: StepLock | EnvSpec) -> dict[str, Any]:
    return {name: getattr(of, name) for name in _DECLARED}


@dataclass(frozen=True)
class Lock:
    flow: str
    file: str
    steps: dict[str, Any]  # step -> StepLock

    def to_toml(self) -> str:
        steps: dict[str, Any] = {}
        doc = {"version": LOCK_VERSION, "flow": self.flow, "file": self.file, "steps": steps}
        for name in sorted(self.steps):
            s = self.steps[name]
            entry: dict[str, Any] = {
                "spec_id": s.spec_id,
                "kind": s.kind,
                "source": s.source,
                "python": s.python,
                "disabled": s.disabled,
                "libraries": dict(s.libraries),
                "implicit": dict(s.implicit),
            }
            if s.channels:
                entry["channels"] = list(s.channels)
            if s.pip:
                entry["pip"] = dict(s.pip)
            plats = {}
            for pname in sorted(s.platforms):
                section = s.platforms[pname].to_dict()
                del section["platform"]  # the section's name
                plats[pname] = section
            if plats:
                entry["platforms"] = plats
            steps[name] = entry
        header = (
            f"# repro lock for {self.file} (flow {self.flow}).\n"
            f"# Written by `repro lock {self.file}`; commit it, do not edit it by hand.\n"
        )
        return header + tomli_w.dumps(doc)


def lock_path(flow_file: Path) -> Path:
    flow_file = Path(flow_file)
    return flow_file.with_name(flow_file.stem + LOCK_SUFFIX)


def write_lock(lock: Lock, path: Path) -> bool:
    """Write atomically; return False (and touch nothing) when the content is unchanged."""
    text = lock.to_toml()
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    atomic_write(path, text)
    return True


def safe_file_name(name: str, where: str) -> str:
    """Package file names become path components in caches and stores: no separators, no '..'."""
    try:
        return v.file_name(name, v.At(where))
    except v.Invalid as exc:
        raise LockFileError(str(exc)) from None


def _pairs(table: dict[str, Any], at: v.At) -> tuple[tuple[str, str], ...]:
    for k, value in table.items():
        v.of_type(value, str, at / k)
    return tuple(sorted(table.items()))


def parse_lock(text: str, path: Path) -> Lock:
    regen = f"Regenerate it with `repro lock {Path(path).with_suffix('').with_suffix('.py').name}`."
    try:
        doc = v.load_toml(text, v.At(str(path)), "valid TOML")
    except v.Invalid as exc:
        raise LockFileError(f"{exc}. {regen}") from None
    try:
        return _decode_lock(doc, path, regen)
    except v.Invalid as exc:
        raise LockFileError(f"{exc}. {regen}") from None


def _decode_lock(doc: dict[str, Any], path: Path, regen: str) -> Lock:
    at = v.At(str(path))
    version = v.need(doc, "version", int, at)
    if version > LOCK_VERSION:
        raise LockFileError(
            f"{path}: lock format version {version} is newer than this repro "
            f"understands ({LOCK_VERSION}); upgrade repro"
        )
    if version < 1:
        raise LockFileError(f"{path}: unknown lock format version {version}. {regen}")
    flow = v.need(doc, "flow", str, at)
    file = v.need(doc, "file", str, at)
    steps = {}
    for name, t in v.need(doc, "steps", dict, at).items():
        w = at / "steps" / name
        v.of_type(t, dict, w)
        platforms = {
            pname: PlatformLock.from_dict(pt, w / "platforms" / pname, platform=pname)
            for pname, pt in v.opt(t, "platforms", dict, {}, w).items()
        }
        sl = StepLock(
            step=name,
            kind=v.need(t, "kind", str, w),
            source=v.need(t, "source", str, w),
            python=v.need(t, "python", str, w),
            libraries=_pairs(v.need(t, "libraries", dict, w), w / "libraries"),
            implicit=_pairs(v.need(t, "implicit", dict, w), w / "implicit"),
            channels=tuple(v.list_of(v.opt(t, "channels", list, [], w), w / "channels", v.string)),
            disabled=v.need(t, "disabled", bool, w),
            platforms=platforms,
            pip=_pairs(v.opt(t, "pip", dict, {}, w), w / "pip"),
        )
        if v.need(t, "spec_id", str, w) != sl.spec_id:
            raise LockFileError(
                f"{path}: step '{name}': spec_id does not match the declaration recorded with it "
                f"(the file was edited by hand or merged badly). {regen}"
            )
        steps[name] = sl
    return Lock(flow=flow, file=file, steps=steps)


def read_lock(path: Path) -> Lock | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LockFileError(f"{path}: cannot read the lock file: {exc}") from None
    return parse_lock(text, path)


# -- differences -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between two versions of a lock or declaration: ``subject`` (a package name,
    or ``python``/``kind``/``source``/``disabled``/``channels``/``step``/``platform``) went from
    ``old`` to ``new`` ("" = absent). ``role``: stated or transitive, for packages."""

    subject: str
    old: str = ""
    new: str = ""
    role: str = ""
    detail: str = ""  # what else changed when the versions are equal (a package's file)

    def __str__(self) -> str:
        role = f" ({self.role})" if self.role else ""
        if self.detail:
            return f"~ {self.subject} {self.old}: {self.detail}{role}"
        if not self.old:
            return f"+ {self.subject} {self.new}{role}".replace("  ", " ").rstrip()
        if not self.new:
            return f"- {self.subject} {self.old}{role}".replace("  ", " ").rstrip()
        return f"~ {self.subject} {self.old} -> {self.new}{role}"


def diff_requirements(old: dict[str, str], new: dict[str, str]) -> list[Change]:
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a != b:
            out.append(Change(name, a or "", b or ""))
    return out


def diff_spec(locked: StepLock, spec: EnvSpec) -> list[Change]:
    """Differences between a step's declaration and what the lock recorded."""
    out = []
    for attr in ("kind", "source", "python", "disabled"):
        a, b = getattr(locked, attr), getattr(spec, attr)
        if a != b:
            out.append(Change(attr, str(a), str(b)))
    if locked.channels != spec.channels:
        out.append(Change("channels", str(list(locked.channels)), str(list(spec.channels))))
    old = {**dict(locked.implicit), **dict(locked.libraries)}
    out += diff_requirements(old, spec.requirements)
    return out + [Change(f"pip {c.subject}", c.old, c.new) for c in diff_requirements(dict(locked.pip), dict(spec.pip))]


def diff_packages(
    old: PlatformLock | None, new: PlatformLock | None, stated: set[str] | frozenset[str] = frozenset()
) -> list[Change]:
    """Package-level differences (old -> new), marking stated vs transitive packages."""
    a = old.by_name() if old else {}
    b = new.by_name() if new else {}
    out = []
    if old and new and old.python != new.python:
        out.append(Change("python", old.python, new.python))
    for name in sorted(set(a) | set(b)):
        pa, pb = a.get(name), b.get(name)
        if pa == pb:
            continue
        role = "stated" if name in stated else "transitive"
        if pa is None or pb is None or pa.version != pb.version:
            out.append(Change(name, pa.version if pa else "", pb.version if pb else "", role))
        else:
            out.append(
                Change(
                    name,
                    pa.version,
                    pb.version,
                    role,
                    detail=f"file {pa.file} ({pa.sha256[:12]}) -> {pb.file} ({pb.sha256[:12]})",
                )
            )
    return out
