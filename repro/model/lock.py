"""The lock file ``<flow stem>.repro.lock``: model, TOML (de)serialisation, validation, diffs.

Deterministic by construction: sorted steps, platforms and packages, no timestamps. Every id in
the file is recomputed on read, so a hand edit (or a merge accident) is caught, not trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from metaflow_extensions.repro.plugins.protocol import LOCK_SUFFIX
from repro._toml import tomllib
from repro.errors import LockFileError
from repro.fsutil import atomic_write
from repro.model.spec import EnvSpec, sha256_json

LOCK_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str
    source: str  # "pypi" or a conda channel URL
    file: str
    url: str
    sha256: str
    size: int

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "source": self.source,
                "file": self.file, "url": self.url, "sha256": self.sha256, "size": self.size}


def env_id_of(platform: str, python: str, packages: tuple[Package, ...]) -> str:
    """Identity of a resolved environment: same id ⇒ byte-identical package set and interpreter."""
    return sha256_json({
        "platform": platform,
        "python": python,
        "implementation": "cpython",
        "packages": [[p.name, p.version, p.source, p.file, p.sha256] for p in sorted(packages)],
    })


@dataclass(frozen=True)
class PlatformLock:
    platform: str
    python: str  # the exact interpreter version, e.g. "3.11.7"
    packages: tuple[Package, ...]

    def __post_init__(self):
        object.__setattr__(self, "packages", tuple(sorted(self.packages)))  # canonical order

    @property
    def env_id(self) -> str:
        return env_id_of(self.platform, self.python, self.packages)

    def by_name(self) -> dict[str, Package]:
        return {p.name: p for p in self.packages}


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
    platforms: dict = field(default_factory=dict)  # name -> PlatformLock

    @property
    def spec_id(self) -> str:
        return self.as_spec(flow="").spec_id

    def as_spec(self, flow: str) -> EnvSpec:
        return EnvSpec(flow=flow, step=self.step, kind=self.kind, source=self.source,
                       python=self.python, libraries=self.libraries, implicit=self.implicit,
                       channels=self.channels, disabled=self.disabled)

    @classmethod
    def from_spec(cls, spec: EnvSpec, platforms: dict) -> "StepLock":
        return cls(step=spec.step, kind=spec.kind, source=spec.source, python=spec.python,
                   libraries=spec.libraries, implicit=spec.implicit, channels=spec.channels,
                   disabled=spec.disabled, platforms=dict(sorted(platforms.items())))


@dataclass(frozen=True)
class Lock:
    flow: str
    file: str
    steps: dict  # step -> StepLock

    def to_toml(self) -> str:
        doc = {"version": LOCK_VERSION, "flow": self.flow, "file": self.file, "steps": {}}
        for name in sorted(self.steps):
            s = self.steps[name]
            entry = {
                "spec_id": s.spec_id, "kind": s.kind, "source": s.source, "python": s.python,
                "disabled": s.disabled, "libraries": dict(s.libraries), "implicit": dict(s.implicit),
            }
            if s.channels:
                entry["channels"] = list(s.channels)
            plats = {}
            for pname in sorted(s.platforms):
                pl = s.platforms[pname]
                plats[pname] = {"env_id": pl.env_id, "python": pl.python,
                                "packages": [p.as_dict() for p in sorted(pl.packages)]}
            if plats:
                entry["platforms"] = plats
            doc["steps"][name] = entry
        header = (f"# repro lock for {self.file} (flow {self.flow}).\n"
                  f"# Written by `repro lock {self.file}`; commit it, do not edit it by hand.\n")
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


_SAFE_FILE = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+\-]*$")


def safe_file_name(name: str, where: str) -> str:
    """Package file names become path components in caches and stores: no separators, no '..'."""
    if not isinstance(name, str) or not _SAFE_FILE.match(name) or ".." in name:
        raise LockFileError(f"{where}: {name!r} is not a plain file name")
    return name


def _need(table: dict, key: str, typ, where: str):
    if key not in table:
        raise LockFileError(f"{where}: missing key '{key}'")
    value = table[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise LockFileError(f"{where}: '{key}' must be {getattr(typ, '__name__', typ)}, got {value!r}")
    return value


def _pairs(table: dict, where: str) -> tuple[tuple[str, str], ...]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise LockFileError(f"{where}: expected a table of name = \"version\"")
    return tuple(sorted(table.items()))


def parse_lock(text: str, path: Path) -> Lock:
    regen = f"Regenerate it with `repro lock {Path(path).with_suffix('').with_suffix('.py').name}`."
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockFileError(f"{path}: not valid TOML ({exc}). {regen}") from None
    where = str(path)
    version = _need(doc, "version", int, where)
    if version > LOCK_VERSION:
        raise LockFileError(f"{path}: lock format version {version} is newer than this repro "
                            f"understands ({LOCK_VERSION}); upgrade repro")
    if version < 1:
        raise LockFileError(f"{path}: unknown lock format version {version}. {regen}")
    flow = _need(doc, "flow", str, where)
    file = _need(doc, "file", str, where)
    steps = {}
    for name, t in _need(doc, "steps", dict, where).items():
        w = f"{path}: step '{name}'"
        if not isinstance(t, dict):
            raise LockFileError(f"{w}: must be a table. {regen}")
        platforms = {}
        if not isinstance(t.get("platforms", {}), dict):
            raise LockFileError(f"{w}: 'platforms' must be a table of platform sections. {regen}")
        for pname, pt in t.get("platforms", {}).items():
            pw = f"{w}, platform {pname}"
            if not isinstance(pt, dict):
                raise LockFileError(f"{pw}: must be a table. {regen}")
            pkgs = []
            for i, p in enumerate(_need(pt, "packages", list, pw)):
                kw = f"{pw}, package #{i + 1}"
                if not isinstance(p, dict):
                    raise LockFileError(f"{kw}: must be a table. {regen}")
                sha = _need(p, "sha256", str, kw)
                if not _SHA256.match(sha):
                    raise LockFileError(f"{kw} ({p.get('name')}): sha256 {sha!r} is not 64 hex digits. {regen}")
                pkgs.append(Package(
                    name=_need(p, "name", str, kw), version=_need(p, "version", str, kw),
                    source=_need(p, "source", str, kw), file=safe_file_name(_need(p, "file", str, kw), kw),
                    url=_need(p, "url", str, kw), sha256=sha, size=_need(p, "size", int, kw)))
            pl = PlatformLock(platform=pname, python=_need(pt, "python", str, pw), packages=tuple(sorted(pkgs)))
            if _need(pt, "env_id", str, pw) != pl.env_id:
                raise LockFileError(f"{pw}: env_id does not match the packages listed (the file was "
                                    f"edited by hand or merged badly). {regen}")
            platforms[pname] = pl
        sl = StepLock(
            step=name, kind=_need(t, "kind", str, w), source=_need(t, "source", str, w),
            python=_need(t, "python", str, w),
            libraries=_pairs(_need(t, "libraries", dict, w), w),
            implicit=_pairs(_need(t, "implicit", dict, w), w),
            channels=tuple(t.get("channels", ())), disabled=_need(t, "disabled", bool, w),
            platforms=platforms,
        )
        if _need(t, "spec_id", str, w) != sl.spec_id:
            raise LockFileError(f"{w}: spec_id does not match the declaration recorded with it (the file "
                                f"was edited by hand or merged badly). {regen}")
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
    return out + diff_requirements(old, spec.requirements)


def diff_packages(old: PlatformLock | None, new: PlatformLock | None,
                  stated: set[str] | frozenset[str] = frozenset()) -> list[Change]:
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
            out.append(Change(name, pa.version, pb.version, role,
                              detail=f"file {pa.file} ({pa.sha256[:12]}) -> {pb.file} ({pb.sha256[:12]})"))
    return out
