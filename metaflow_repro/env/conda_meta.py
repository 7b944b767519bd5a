"""Where a conda package would write, checked before rattler sees it (pure: names and bytes in, findings out).

An archive's member names are only half of it. rattler extracts the archive into its package cache, then links
into the env's prefix every path ``info/paths.json`` names (``info/files`` in old packages), rewrites the prefix
in the files ``info/has_prefix`` names, makes ``bin/<name>`` for each entry point of ``info/link.json``, and
recreates the archive's symbolic links. A path in any of these documents that is absolute, has a ``..``
component, or resolves outside the prefix through a symbolic link (the package's own or another package's of
the same env) would write or delete a file elsewhere: each is a finding here, and the package is refused.

Symbolic links are resolved the way the kernel does (component by component, a link's target read from its
own folder, a ``..`` after a link taken from where the link leads), over the links the archives hold, so a
link to ``.`` followed by ``..`` is caught where a lexical check would pass it.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from metaflow_repro.model.validate import At, Invalid, load_json

#: The info documents that name paths (and index.json, which says whether a package is ``noarch: python``).
INDEX_JSON = "info/index.json"
PATHS_JSON = "info/paths.json"
LINK_JSON = "info/link.json"
HAS_PREFIX = "info/has_prefix"
PATH_LISTS = ("info/files", "info/no_link", "info/no_softlink")
INFO_FILES = (INDEX_JSON, PATHS_JSON, LINK_JSON, HAS_PREFIX, *PATH_LISTS)
#: An info document larger than this is not read, and refuses its package (a python package's paths.json is
#: about 1 MiB): rattler would read what repro did not check.
MAX_INFO_BYTES = 64 << 20
#: More hops than this through symbolic links is a loop (Linux's own limit).
MAX_HOPS = 40
#: How many findings a refusal names.
SHOWN = 5

FILE, DIR, SYMLINK, HARDLINK, OTHER = "file", "dir", "symlink", "hardlink", "other"


@dataclass(frozen=True)
class Member:
    """One archive member: its name, its kind, a link's target (a hard link's is from the archive's root) and
    its size in bytes."""

    name: str
    kind: str
    target: str = ""
    size: int = 0


def normal(name: str) -> str:
    """A member's name as the path it is extracted to (``./info//paths.json`` is ``info/paths.json``)."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


@dataclass(frozen=True)
class PackageMeta:
    """What one package would write: every path its info documents name (with the document naming it), its
    symbolic links (path -> target), and whether it is ``noarch: python`` (its paths move under the env's
    ``lib/pythonX.Y/site-packages`` and ``bin``)."""

    file: str
    paths: tuple[tuple[str, str], ...]
    links: tuple[tuple[str, str], ...]
    noarch_python: bool

    def to_dict(self) -> dict:
        return {"file": self.file, "paths": self.paths, "links": self.links, "noarch_python": self.noarch_python}

    @classmethod
    def from_dict(cls, d: dict) -> PackageMeta:
        return cls(
            str(d["file"]),
            tuple((str(a), str(b)) for a, b in d["paths"]),
            tuple((str(a), str(b)) for a, b in d["links"]),
            bool(d["noarch_python"]),
        )


# -- paths and links ------------------------------------------------------------------------------


def path_problem(path: object) -> str:
    """Why ``path`` cannot be a path inside a prefix ('' when it can): not a string, empty, absolute, a ``..``."""
    if not isinstance(path, str) or not [p for p in path.split("/") if p not in ("", ".")]:
        return "is not a path"
    if "\0" in path:
        return "has a NUL byte"
    if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:([/\\]|$)", path):
        return "is an absolute path"
    if ".." in path.replace("\\", "/").split("/"):
        return "has a '..' component"
    return ""


def resolve(path: str, links: Mapping[str, str]) -> tuple[str, ...] | None:
    """``path`` (relative to a root) with every symbolic link of ``links`` followed, as its components; None
    when it leaves the root (a ``..`` above it, an absolute link target) or loops."""
    pending = list(reversed(path.split("/")))
    here: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return None
            here.pop()
            continue
        target = links.get("/".join([*here, part]))
        if target is None:
            here.append(part)
            continue
        hops += 1
        if hops > MAX_HOPS or target.startswith("/"):
            return None
        pending.extend(reversed(target.split("/")))
    return tuple(here)


def physical(links: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """``links`` keyed by where each one lands: a link made under another link's path lands where that one
    leads (``a -> .`` then ``a/x``: ``x``). The flag is False when one would land outside the root (it is
    left out) or the keys do not settle."""
    cur = {normal(k): t for k, t in links.items()}
    settled = True
    for _ in range(len(cur) + 1):
        new = {}
        for key, target in cur.items():
            parent = resolve(posixpath.dirname(key), cur)
            if parent is None:
                settled = False
                continue
            new["/".join([*parent, posixpath.basename(key)])] = target
        if new == cur:
            return cur, settled
        cur = new
    return cur, False


def _escape(what: str, path: str, links: Mapping[str, str]) -> str:
    """A finding when ``path`` leaves the root through ``links`` ('' when it stays inside)."""
    if resolve(path, links) is None:
        return f"{what} {path!r} leads outside the prefix (through '..' or a symbolic link, or a link loop)"
    return ""


def _link_target(name: str, target: str) -> str:
    """Where a symbolic link ``name`` -> ``target`` leads, relative to the root (unresolved)."""
    parent = posixpath.dirname(name)
    return f"{parent}/{target}" if parent else target


def _links_of(members: Iterable[Member]) -> tuple[dict[str, str], list[str]]:
    links, settled = physical({m.name: m.target for m in members if m.kind == SYMLINK})
    return links, [] if settled else [UNSETTLED]


UNSETTLED = "its symbolic links lead outside the prefix or through each other without end"


def member_problems(members: Iterable[Member]) -> list[str]:
    """What makes an archive unsafe to extract into a folder: a member outside it (by name, or through
    the archive's own links), a link leaving it, a member that is not a file, folder or link, a path
    that two members share (extraction keeps one, the checks may have read the other)."""
    members = list(members)
    links, problems = _links_of(members)
    return problems + _duplicates(members) + [p for p in (_member_problem(m, links) for m in members) if p]


def _duplicates(members: list[Member]) -> list[str]:
    """A finding per path that more than one member is extracted to (the same folder twice is harmless)."""
    counts = Counter(normal(m.name) for m in members if m.kind != DIR)
    counts.update(normal(m.name) for m in members if m.kind == DIR and counts[normal(m.name)])
    return [f"member {name!r} is in the archive {n} times" for name, n in sorted(counts.items()) if n > 1]


def _member_problem(m: Member, links: Mapping[str, str]) -> str:
    bad = path_problem(m.name)
    if bad:
        return f"member {m.name!r} {bad}"
    if m.kind == OTHER:
        return f"member {m.name!r} is not a file, folder or link"
    if m.kind == SYMLINK and m.target.startswith("/"):
        return f"link {m.name!r} points at the absolute path {m.target!r}"
    if m.kind == SYMLINK:
        inside = resolve(_link_target(m.name, m.target), links) is not None
        return "" if inside else f"link {m.name!r} -> {m.target!r} leaves the prefix"
    if m.kind == HARDLINK and (path_problem(m.target) or resolve(m.target, links) is None):
        return f"hard link {m.name!r} -> {m.target!r} leaves the prefix"
    return _escape("member", m.name, links)


# -- the info documents ---------------------------------------------------------------------------


class _Bad(Exception):
    """A malformed info document (its words become a finding)."""


def _json(info: Mapping[str, bytes], name: str) -> object:
    """The decoded document, within a size and a depth limit (never a RecursionError)."""
    try:
        return load_json(info[name], At(""), "JSON", max_bytes=MAX_INFO_BYTES)
    except Invalid as exc:
        raise _Bad(f"{name} is {exc}") from None


def _paths_json(info: Mapping[str, bytes]) -> list[object]:
    doc = _json(info, PATHS_JSON)
    entries = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _Bad(f"{PATHS_JSON} has no list of 'paths' entries")
    return [e.get("_path") for e in entries]


def _entry_points(info: Mapping[str, bytes]) -> list[object]:
    """The commands of ``info/link.json``'s entry points ("name = module:func"): each becomes ``bin/<name>``."""
    doc = _json(info, LINK_JSON)
    noarch = doc.get("noarch", {}) if isinstance(doc, dict) else None
    points = noarch.get("entry_points", []) if isinstance(noarch, dict) else None
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise _Bad(f"{LINK_JSON} has malformed 'noarch' entry points")
    return [p.split("=", 1)[0].strip() for p in points]


def _has_prefix(info: Mapping[str, bytes]) -> list[object]:
    """The paths of ``info/has_prefix``: each line is ``PATH`` or ``PLACEHOLDER MODE PATH`` (maybe quoted)."""
    out: list[object] = []
    for line in _text(info, HAS_PREFIX).splitlines():
        if not line.strip():
            continue
        try:
            parts = [p.strip("\"'") for p in shlex.split(line, posix=False)]
        except ValueError:
            parts = []
        if len(parts) not in (1, 3):
            raise _Bad(f"{HAS_PREFIX} has a malformed line {line[:200]!r}")
        out.append(parts[-1])
    return out


def _text(info: Mapping[str, bytes], name: str) -> str:
    try:
        return info[name].decode()
    except UnicodeDecodeError:
        raise _Bad(f"{name} is not UTF-8 text") from None


def _lines(name: str):
    return lambda info: [x for x in _text(info, name).splitlines() if x.strip()]


#: Each info document that names paths, and how its paths are read (link.json: the entry points' commands).
_READERS = {
    PATHS_JSON: _paths_json,
    HAS_PREFIX: _has_prefix,
    LINK_JSON: _entry_points,
    **{name: _lines(name) for name in PATH_LISTS},
}
ENTRY_POINT = f"{LINK_JSON} entry point"


def _named_paths(info: Mapping[str, bytes]) -> tuple[list[tuple[str, object]], list[str]]:
    """(document, path) for every path the info documents name (an entry point's command, for link.json),
    and what was malformed."""
    found: list[tuple[str, object]] = []
    bad = []
    for name, read in _READERS.items():
        if name in info:
            try:
                found += [(ENTRY_POINT if name == LINK_JSON else name, p) for p in read(info)]
            except _Bad as exc:
                bad.append(str(exc))
    return found, bad


def _plain_name(cmd: object) -> bool:
    return isinstance(cmd, str) and bool(cmd) and cmd not in (".", "..") and not any(c in cmd for c in "/\\\0")


def _path_of(doc: str, raw: object) -> tuple[str, str]:
    """(the path in the package, '') or ('', the finding): an entry point's command becomes ``bin/<command>``."""
    if doc == ENTRY_POINT:
        return ("bin/" + str(raw), "") if _plain_name(raw) else ("", f"{doc} {raw!r} is not a plain command name")
    bad = path_problem(raw)
    return ("", f"{doc}: {raw!r} {bad}") if bad else (str(raw), "")


def _noarch_python(info: Mapping[str, bytes]) -> bool:
    for name in (INDEX_JSON, LINK_JSON):
        try:
            doc = _json(info, name) if name in info else {}
        except _Bad:
            continue  # a finding of _index_problems or _named_paths
        noarch = doc.get("noarch") if isinstance(doc, dict) else None
        if noarch == "python" or (isinstance(noarch, dict) and noarch.get("type") == "python"):
            return True
    return False


def _unread(members: Iterable[Member], info: Mapping[str, bytes]) -> list[str]:
    """A finding per info document in the archive that was not read (too large, not a regular file): rattler
    would read what repro did not check."""
    out = []
    for m in (m for m in members if normal(m.name) in INFO_FILES):
        if m.kind != FILE:
            out.append(f"{normal(m.name)} is a {m.kind}, not a regular file")
        elif m.size > MAX_INFO_BYTES:
            out.append(f"{normal(m.name)} is {m.size} bytes, more than the {MAX_INFO_BYTES} bytes repro reads")
        elif normal(m.name) not in info:
            out.append(f"{normal(m.name)} could not be read")
    return out


def _index_problems(info: Mapping[str, bytes]) -> list[str]:
    try:
        _json(info, INDEX_JSON) if INDEX_JSON in info else None
    except _Bad as exc:
        return [str(exc)]
    return []


def read_meta(file: str, members: Iterable[Member], info: Mapping[str, bytes]) -> tuple[PackageMeta, list[str]]:
    """The package's ``PackageMeta`` and the findings of its info documents: malformed, oversized or unread
    documents, and paths that are absolute, have a ``..`` or (with the package's own links) lead outside the
    prefix."""
    members = list(members)
    links, _ = _links_of(members)  # member_problems names links that do not settle
    named, problems = _named_paths(info)
    problems += _unread(members, info) + _index_problems(info)
    paths = []
    for doc, raw in named:
        path, bad = _path_of(doc, raw)
        problems.append(bad or _escape(f"{doc}:", path, links))
        if not bad:
            paths.append((doc, path))
    own = tuple(sorted((m.name, m.target) for m in members if m.kind == SYMLINK))
    meta = PackageMeta(file, tuple(paths), own, _noarch_python(info))
    return meta, [p for p in problems if p]


# -- one env --------------------------------------------------------------------------------------


def placed(path: str, meta: PackageMeta, python: str) -> str:
    """Where a package's path goes in the prefix: a ``noarch: python`` package's ``site-packages/`` and
    ``python-scripts/`` move under ``lib/pythonX.Y/site-packages/`` and ``bin/`` (rattler's rule)."""
    if meta.noarch_python:
        minor = ".".join(python.split(".")[:2])
        if path.startswith("site-packages/"):
            return f"lib/python{minor}/{path}"
        if path.startswith("python-scripts/"):
            return "bin/" + path[len("python-scripts/") :]
    return path


def env_problems(metas: Iterable[PackageMeta], python: str) -> list[str]:
    """Findings for one env's packages linked into one prefix: every path each names, and every link's target,
    resolved through the links of all of them (a package may write through another's link)."""
    metas = list(metas)
    links, settled = physical({placed(p, m, python): t for m in metas for p, t in m.links})
    out = [] if settled else [f"the env's packages together: {UNSETTLED}"]
    for m in metas:
        for doc, path in m.paths:
            bad = _escape(f"{doc}:", placed(path, m, python), links)
            out += [f"{m.file}: {bad}"] if bad else []
        for name, target in m.links:
            if resolve(_link_target(placed(name, m, python), target), links) is None:
                out.append(f"{m.file}: link {name!r} -> {target!r} leaves the prefix (with the env's other links)")
    return out
