"""What a built environment held when it was built, file by file, and whether it still does.

The manifest (``envs/<env>.files.json``, beside the env's folder, so the folder holds only what the
installer made and its marker) lists every file and link under the env's folder (repro's marker aside),
the bytecode the build compiled included (tasks read it and never write any: a damaged .pyc is a damaged env): a file with its sha256 and the stamp it had then (size, modification time,
inode), a link with its target, and one digest over every entry's path and stamp. ``check`` walks the
folder again and stats every entry: when the digest of those stamps is the recorded one, nothing else
is read (the fast path: no file, not even the list); else each file whose stamp changed is re-hashed, so
an edit that keeps the size (another ``__version__``) is caught by its new modification time and
content. A file added (a ``.pth``, a ``sitecustomize.py``), gone, changed or turned into a link is named.

At the build, a file uv installed takes the sha256 its distribution's RECORD gives, and a file a conda
package linked the one its ``conda-meta`` record gives (right after an install from hash-checked
package files they are the same, as the fingerprint takes RECORD's sizes; tests/security/test_env_reuse.py
re-hashes a real env against them); every other file (the compiled bytecode: RECORD does not list it) is hashed. A 6392-file pandas env: 65 ms, not 0.3-1 s.

The same idea as the Batch instance cache's ``check_tree`` (``batch_bootstrap``), on the host, where
the stamps make reuse cheap. What it cannot see: bytes changed with the size, modification time and
inode put back (bit rot, or someone who meant it); ``repro env build --repair`` re-hashes everything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from metaflow_repro.env.cache import sha256_file
from metaflow_repro.fsutil import atomic_write

FORMAT = 1
FILE, LINK = "f", "l"
#: what builds write in a distribution's INSTALLER (``record_hashes`` trusts only their RECORD files)
INSTALLER = "uv"
#: folders never listed nor walked: none. ``__pycache__`` is listed: the build compiles it (``build.compile_site_packages``)
#: and tasks run with PYTHONDONTWRITEBYTECODE=1, so a .pyc changed, added or gone is damage (the env is rebuilt)
SKIPPED_FOLDERS: tuple[str, ...] = ()


@dataclass
class Check:
    """What ``check`` found: ``problems`` (empty: the env holds what it was built with) and, when some
    files had to be re-hashed and all matched, the manifest with their new stamps (``refreshed``)."""

    problems: list[str] = field(default_factory=list)
    refreshed: dict | None = None


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def stamps_digest(found: dict[str, tuple[str, os.stat_result]]) -> str:
    """One sha256 over every entry's relative path, type and mode, size, modification time and inode."""
    h = hashlib.sha256()
    for rel in sorted(found):
        st = found[rel][1]
        h.update(
            f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode("utf-8", "surrogateescape")
        )
    return h.hexdigest()


def record_hashes(root: Path) -> dict[str, str]:
    """{path relative to ``root``: sha256 in hex} of every file the RECORD of a distribution uv installed under
    ``root`` lists with a sha256 (scripts in ``bin/`` too: RECORD names them ``../../../bin/...``). Not those
    a conda package brought: conda rewrites its build prefix in files after RECORD was written."""
    known = {}
    for record in Path(root).glob("lib/python3*/site-packages/*.dist-info/RECORD"):
        try:
            if (record.parent / "INSTALLER").read_text().strip() != INSTALLER:
                continue
        except OSError:
            continue
        site = os.path.relpath(record.parent.parent, root)
        for line in record.read_text(errors="replace").splitlines():
            parts = line.rsplit(",", 2)
            if len(parts) < 3 or not parts[1].startswith("sha256="):
                continue
            rel = os.path.normpath(os.path.join(site, parts[0]))
            digest = parts[1][len("sha256=") :]
            try:
                known[rel] = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
            except ValueError:
                continue  # not base64: hashed like a file RECORD does not list
    return known


def scan(root: Path, skipped: tuple[str, ...] = ()) -> dict[str, tuple[str, os.stat_result]]:
    """Every entry under ``root`` but folders (links not followed, ``SKIPPED_FOLDERS`` not walked, top-level
    names in ``skipped`` left out): its path relative to ``root`` -> (its path, its lstat)."""
    found: dict[str, tuple[str, os.stat_result]] = {}
    start = len(str(root)) + 1
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if entry.name not in SKIPPED_FOLDERS:
                        stack.append(entry.path)
                elif not (folder == str(root) and entry.name in skipped):
                    found[entry.path[start:]] = (entry.path, st)
    return found


def conda_hashes(root: Path) -> dict[str, str]:
    """{path relative to ``root``: sha256} of every file a conda package linked into ``root`` as it is in the
    package (``conda-meta/*.json``, as rattler wrote it), or as rattler rewrote it (``sha256_in_prefix``, a
    file its build prefix was replaced in); not the entry points rattler writes, nor links."""
    known = {}
    for meta in Path(root).glob("conda-meta/*.json"):
        try:
            paths = json.loads(meta.read_bytes()).get("paths_data", {}).get("paths", [])
        except (OSError, ValueError, AttributeError):
            continue
        for item in paths if isinstance(paths, list) else []:
            if not isinstance(item, dict) or item.get("path_type") != "hardlink":
                continue
            digest = item.get("sha256_in_prefix") if item.get("prefix_placeholder") else item.get("sha256")
            if isinstance(item.get("_path"), str) and isinstance(digest, str) and len(digest) == 64:
                known[os.path.normpath(item["_path"])] = digest
    return known


def _entry(path: str, st: os.stat_result, known: str | None) -> list:
    if stat.S_ISLNK(st.st_mode):
        return [LINK, os.readlink(path)]
    return [FILE, known or sha256_file(Path(path)), *_stamp(st)]


def take(root: Path, env_id: str, skipped: tuple[str, ...] = (), fresh: bool = True) -> dict:
    """The manifest of the env at ``root`` now. ``fresh`` (right after the install): files uv's RECORD or
    a conda package's record lists take the sha256 given there (``record_hashes``, ``conda_hashes``);
    every other file is hashed."""
    known = {**conda_hashes(root), **record_hashes(root)} if fresh else {}
    found = scan(root, skipped)
    files = {rel: _entry(path, st, known.get(rel)) for rel, (path, st) in found.items()}
    return {
        "format": FORMAT,
        "env_id": env_id,
        "nonce": uuid.uuid4().hex,
        "stamps": stamps_digest(found),
        "files": files,
    }


def write(path: Path, manifest: dict) -> None:
    """Two lines: the header (all but the files: what the fast path reads), then the files."""
    header = {k: v for k, v in manifest.items() if k != "files"}
    text = (
        json.dumps(header, sort_keys=True) + "\n" + json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"))
    )
    atomic_write(path, text + "\n")


def read(path: Path, env_id: str, files: bool = True) -> dict | None:
    """The manifest of env ``env_id`` at ``path`` (only its header unless ``files``), or None: missing,
    unreadable, another env's, another format."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.readline())
            if not (isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("env_id") == env_id):
                return None
            if files:
                doc["files"] = json.loads(fh.readline())
    except (OSError, ValueError):
        return None
    return doc if not files or isinstance(doc.get("files"), dict) else None


def _entry_problem(rel: str, path: str, st: os.stat_result, was, full: bool = False) -> tuple[str, list | None]:
    """(what is wrong with one entry, "" if nothing; its entry with the new stamp when it was re-hashed)."""
    if not isinstance(was, list) or not was or was[0] not in (FILE, LINK):
        return f"{rel} is listed wrongly in the manifest", None
    if was[0] == LINK or stat.S_ISLNK(st.st_mode):
        same = was[0] == LINK and stat.S_ISLNK(st.st_mode) and os.readlink(path) == was[1]
        return ("" if same else f"{rel} changed (a link that was not, or another target)"), None
    if not stat.S_ISREG(st.st_mode):
        return f"{rel} is no longer a plain file", None
    same_stamp = was[2:] == _stamp(st)
    if same_stamp and not full:
        return "", None  # as it was when hashed
    if st.st_size != was[2]:
        return f"{rel} changed (size {was[2]} -> {st.st_size})", None
    if sha256_file(Path(path)) != was[1]:
        return f"{rel} changed (same size, other bytes{', same stamp' if same_stamp else ''})", None
    return "", None if same_stamp else [FILE, was[1], *_stamp(st)]


def check(root: Path, path: Path, env_id: str, skipped: tuple[str, ...] = (), full: bool = False) -> Check:
    """Whether the env ``env_id`` at ``root`` holds what the manifest at ``path`` lists (see the module's
    docstring); ``full``: every file re-hashed, whatever its stamp (bit rot keeps it). A folder or file that
    vanishes while it is read (another process rebuilding the env) is a problem too: the caller rebuilds
    under the env's lock, where it looks again."""
    header = read(path, env_id, files=False)
    if header is None:
        return Check([f"its file manifest {path} is missing or unreadable (an env built by an older repro)"])
    try:
        found = scan(root, skipped)
        if not full and header.get("stamps") == stamps_digest(found):
            return Check()  # the fast path: every entry as it was when listed
        manifest = read(path, env_id)
        if manifest is None:
            return Check([f"its file manifest {path} is unreadable"])
        return compare(found, manifest, full)
    except OSError as exc:
        return Check([f"{exc.filename or root} cannot be read ({exc.strerror or exc})"])


def _python_wrote(rel: str) -> bool:
    """A ``.pyc`` in a ``__pycache__`` the build did not list: CPython's own cache of a source repro did not
    compile (a conda env's standard library, read by a probe), not a change to the env. Those the build
    compiled are listed, and checked like any file."""
    return rel.endswith(".pyc") and "__pycache__" in rel.split(os.sep)[:-1]


def compare(found: dict[str, tuple[str, os.stat_result]], manifest: dict, full: bool = False) -> Check:
    """``check``'s slow path: each entry ``scan`` found against the manifest's, file by file (every file
    re-hashed with ``full``)."""
    listed = manifest["files"]
    problems = [f"{rel} was added" for rel in sorted(set(found) - set(listed)) if not _python_wrote(rel)]
    problems += [f"{rel} is gone" for rel in sorted(set(listed) - set(found))]
    stamps = {}
    for rel in sorted(set(found) & set(listed)):
        problem, entry = _entry_problem(rel, *found[rel], listed[rel], full)
        if problem:
            problems.append(problem)
        elif entry is not None:
            stamps[rel] = entry
    if problems:
        return Check(problems)
    return Check(refreshed={**manifest, "stamps": stamps_digest(found), "files": {**listed, **stamps}})
