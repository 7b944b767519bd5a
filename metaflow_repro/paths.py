"""Containment: every path built from stored (untrusted) data goes through ``inside``.

A record, lock or store key may name a relative path (a flow file inside a code package, a key
inside a store folder). ``inside(root, rel)`` refuses anything that could leave ``root``: absolute
paths, ``..``, Windows drive letters and backslashes, NUL bytes, and (after resolution) symlinks
that point out of it. The message names what the path is, the value and the root.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from metaflow_repro.errors import BadInput

_DRIVE = re.compile(r"^[A-Za-z]:")


class OutsideRoot(BadInput):
    """A path from stored data would leave the folder it must stay in."""


def check_relative(rel: object, what: str) -> str:
    """``rel`` if it is a plain relative POSIX path (no resolution: pure)."""
    if (
        not isinstance(rel, str)
        or not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\0" in rel
        or _DRIVE.match(rel)
        or any(part == ".." for part in rel.split("/"))
    ):
        raise OutsideRoot(
            f"{what} {rel!r} is not a relative path inside its folder "
            "(absolute, '..', a drive letter or a backslash); the data that names it is "
            "corrupt or hostile, and it was not used"
        )
    return rel


def inside(root: Path, rel: object, what: str) -> Path:
    """``root / rel``, resolved, refusing any ``rel`` that is not inside ``root`` (also through
    symlinks). ``root`` itself is trusted (it is ours)."""
    rel_text = check_relative(rel, what)  # ``rel`` itself, now known to be a str
    base = Path(root).resolve()
    target = (base / rel_text).resolve()  # follows symlinks, so a link out of root is seen here
    if target != base and base not in target.parents:
        raise OutsideRoot(
            f"{what} {rel!r} leads to {target}, outside {base} (through a symbolic link); it was not used"
        )
    return target


def usable_home(settings) -> Path:
    """REPRO_HOME must be a writable folder (created if missing): said up front, naming where it was
    set, rather than as a failure deep inside uv or Metaflow."""
    home = settings.home.root
    origin = settings.origins.get("home", "default")
    where = f"REPRO_HOME {home} ({'the default' if origin == 'default' else 'from ' + origin})"
    if home.exists() and not home.is_dir():
        raise BadInput(f"{where} is a file, not a folder; point REPRO_HOME at a folder", path=str(home))
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(
            f"{where} cannot be created: {exc.strerror}; point REPRO_HOME at a writable folder", path=str(home)
        ) from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise BadInput(f"{where} is not writable; point REPRO_HOME at a writable folder", path=str(home))
    return home
