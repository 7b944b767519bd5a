"""Writing files whole or not at all, with the permissions a plain ``open`` would have given."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


DEFAULT_MODE = _default_mode()


def atomic_write(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    The file keeps the mode of the file it replaces, or gets the umask's default; mkstemp's 0600
    would make locks and store objects unreadable for a CI job running as another user.
    """
    path = Path(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = DEFAULT_MODE
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    blob = data.encode() if isinstance(data, str) else data
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not exc.filename:  # say which file, and its size
            raise OSError(exc.errno, f"{exc.strerror} (writing {len(blob)} bytes)", str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mount_point(path: Path | str) -> Path:
    """The mount point of the file system ``path`` (or its nearest existing parent) is on."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def space_note(path: Path | str) -> str:
    """Which file system ``path`` is on and how much space it has left, for a message about a full disk."""
    mount = mount_point(path)
    try:
        st = os.statvfs(mount)
    except OSError:
        return f"the file system at {mount}"
    return f"the file system at {mount} has {st.f_bavail * st.f_frsize / 1e6:.1f} MB free of {st.f_blocks * st.f_frsize / 1e6:.0f} MB"
