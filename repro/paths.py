"""Containment: every path built from stored (untrusted) data goes through ``inside``.

A record, lock or store key may name a relative path (a flow file inside a code package, a key
inside a store folder). ``inside(root, rel)`` refuses anything that could leave ``root``: absolute
paths, ``..``, Windows drive letters and backslashes, NUL bytes, and (after resolution) symlinks
that point out of it. The message names what the path is, the value and the root.
"""

from __future__ import annotations

import re
from pathlib import Path

from repro.errors import BadInput

_DRIVE = re.compile(r"^[A-Za-z]:")


class OutsideRoot(BadInput):
    """A path from stored data would leave the folder it must stay in."""


def check_relative(rel: object, what: str) -> str:
    """``rel`` if it is a plain relative POSIX path (no resolution: pure)."""
    if (not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\0" in rel
            or _DRIVE.match(rel) or any(part == ".." for part in rel.split("/"))):
        raise OutsideRoot(f"{what} {rel!r} is not a relative path inside its folder "
                          "(absolute, '..', a drive letter or a backslash); the data that names it is "
                          "corrupt or hostile, and it was not used")
    return rel


def inside(root: Path, rel: object, what: str) -> Path:
    """``root / rel``, resolved, refusing any ``rel`` that is not inside ``root`` (also through
    symlinks). ``root`` itself is trusted (it is ours)."""
    check_relative(rel, what)
    base = Path(root).resolve()
    target = (base / rel).resolve()  # follows symlinks, so a link out of root is seen here
    if target != base and base not in target.parents:
        raise OutsideRoot(f"{what} {rel!r} leads to {target}, outside {base} (through a symbolic link); "
                          "it was not used")
    return target
