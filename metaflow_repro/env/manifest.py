"""What a built environment held when it was built, file by file, and whether it still does.

The manifest (``envs/<env>.files.json``, beside the env's folder, so the folder holds only what the
installer made and its marker) lists every file and link under the env's folder (bytecode folders and
repro's marker aside): a file with its sha256 and the stamp it had then (size, modification time,
inode), a link with its target. ``check`` walks the folder again and stats every entry: a file whose
stamp is the recorded one is taken as it was (the fast path, no read), any other is re-hashed, so an
edit that keeps the size (another ``__version__``) is caught by its new modification time and content.
A file added (a ``.pth``, a ``sitecustomize.py``), gone, changed or turned into a link is named.

The same idea as the Batch instance cache's ``check_tree`` (``batch_bootstrap``), on the host, where
the stamps make reuse cheap. What it cannot see: bytes changed with the size, modification time and
inode put back (bit rot, or someone who meant it); ``repro env build --repair`` re-hashes everything.
"""

from __future__ import annotations

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
#: folders never listed nor walked: bytecode an interpreter writes when it imports (not the installer's)
SKIPPED_FOLDERS = ("__pycache__",)


@dataclass
class Check:
    """What ``check`` found: ``problems`` (empty: the env holds what it was built with) and, when some
    files had to be re-hashed and all matched, the manifest with their new stamps (``refreshed``)."""

    problems: list[str] = field(default_factory=list)
    refreshed: dict | None = None


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


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


def _entry(path: str, st: os.stat_result) -> list:
    if stat.S_ISLNK(st.st_mode):
        return [LINK, os.readlink(path)]
    return [FILE, sha256_file(Path(path)), *_stamp(st)]


def take(root: Path, env_id: str, skipped: tuple[str, ...] = ()) -> dict:
    """The manifest of the env at ``root`` now (every file hashed once)."""
    files = {rel: _entry(path, st) for rel, (path, st) in scan(root, skipped).items()}
    return {"format": FORMAT, "env_id": env_id, "nonce": uuid.uuid4().hex, "files": files}


def write(path: Path, manifest: dict) -> None:
    atomic_write(path, json.dumps(manifest, sort_keys=True, separators=(",", ":")))


def read(path: Path, env_id: str) -> dict | None:
    """The manifest of env ``env_id`` at ``path``, or None (missing, unreadable, another env's, another format)."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    ok = isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("env_id") == env_id
    return doc if ok and isinstance(doc.get("files"), dict) else None


def _entry_problem(rel: str, path: str, st: os.stat_result, was) -> tuple[str, list | None]:
    """(what is wrong with one entry, "" if nothing; its entry with the new stamp when it was re-hashed)."""
    if not isinstance(was, list) or not was or was[0] not in (FILE, LINK):
        return f"{rel} is listed wrongly in the manifest", None
    if was[0] == LINK or stat.S_ISLNK(st.st_mode):
        same = was[0] == LINK and stat.S_ISLNK(st.st_mode) and os.readlink(path) == was[1]
        return ("" if same else f"{rel} changed (a link that was not, or another target)"), None
    if not stat.S_ISREG(st.st_mode):
        return f"{rel} is no longer a plain file", None
    if was[2:] == _stamp(st):
        return "", None  # the fast path: as it was when hashed
    if st.st_size != was[2]:
        return f"{rel} changed (size {was[2]} -> {st.st_size})", None
    if sha256_file(Path(path)) != was[1]:
        return f"{rel} changed (same size, other bytes)", None
    return "", [FILE, was[1], *_stamp(st)]


def check(root: Path, manifest: dict, skipped: tuple[str, ...] = ()) -> Check:
    """Whether the env at ``root`` holds what ``manifest`` lists (see the module's docstring)."""
    listed = manifest["files"]
    found = scan(root, skipped)
    problems = [f"{rel} was added" for rel in sorted(set(found) - set(listed))]
    problems += [f"{rel} is gone" for rel in sorted(set(listed) - set(found))]
    stamps = {}
    for rel in sorted(set(found) & set(listed)):
        problem, entry = _entry_problem(rel, *found[rel], listed[rel])
        if problem:
            problems.append(problem)
        elif entry is not None:
            stamps[rel] = entry
    if problems or not stamps:
        return Check(problems)
    return Check(refreshed={**manifest, "files": {**listed, **stamps}})
