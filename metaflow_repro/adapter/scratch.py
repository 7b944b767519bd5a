"""Temporary files under ``REPRO_HOME/tmp``, never in the system's temporary folder, and who owns them.

Each repro process gets its own folder, ``REPRO_HOME/tmp/<owner>``, named after its owner (pid and start
time, so a recycled pid is not taken for the old process, and the machine and pid namespace it runs in,
so that a REPRO_HOME shared with a container or over NFS never takes another machine's live process for
a dead one: see ``Owner``). ``enter`` makes it this process's temporary
folder (``tempfile``'s, and ``TMPDIR`` for every process it starts: Metaflow, uv, tasks) and points
Metaflow's client cache into it; ``enter`` also removes the folders whose owner is gone (a ``repro`` that
was killed). A command that ends normally removes its own folder (``leave``).
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.settings import Home

#: Metaflow's client cache (``/tmp/metaflow_client`` by default), read by Metaflow at import
CLIENT_CACHE_VAR = "METAFLOW_CLIENT_CACHE_PATH"


#: an owner on another machine or in another pid namespace cannot be asked whether it still runs: what it
#: wrote is taken as a live run's until it was last written this long ago (seconds: one week)
FOREIGN_MAX_AGE = 7 * 24 * 3600

_OWNER = re.compile(r"^(\d{1,10})-(\d{1,20})(?:@([A-Za-z0-9._-]{1,64})\+([A-Za-z0-9._-]{1,64}))?$")


@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one with the same pid by its start time (clock ticks since
    boot, ``/proc/<pid>/stat``; 0 where there is no ``/proc``), and from a process of another machine or
    container with the same pid by its ``host`` (``socket.gethostname()``) and ``space`` (its pid
    namespace, ``/proc/self/ns/pid``'s inode, else the kernel's boot id; "" where neither can be read).
    An owner without them (written by an older repro) is taken as this machine's."""

    pid: int
    started: int
    host: str = ""
    space: str = ""

    def __str__(self) -> str:
        where = f"@{self.host}+{self.space}" if self.host or self.space else ""
        return f"{self.pid}-{self.started}{where}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """An owner from ``str(owner)``; None for anything else (a folder or a file not ours)."""
        found = _OWNER.match(text)
        if found is None:
            return None
        pid, started, host, space = found.groups()
        return cls(int(pid), int(started), host or "", space or "")

    def here(self) -> bool:
        """Whether it runs where this process does (same machine, same pid namespace): only then can
        its pid be looked up."""
        return not (self.host or self.space) or (self.host, self.space) == _where()

    def alive(self, written: float | None = None) -> bool:
        """Whether it still runs. An owner elsewhere is taken as alive, unless what it wrote was last
        written (``written``, a file's mtime) more than ``FOREIGN_MAX_AGE`` ago."""
        if not self.here():
            return written is None or time.time() - written < FOREIGN_MAX_AGE
        if not _pid_exists(self.pid):
            return False
        return not self.started or _start_time(self.pid) == self.started


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64]


@functools.lru_cache(maxsize=1)
def _where() -> tuple[str, str]:
    """(host, pid namespace) of this process, as ``Owner`` names them."""
    try:
        space = f"ns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        try:
            space = "boot" + Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            space = ""
    return _safe(socket.gethostname()) or "_", _safe(space)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _start_time(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # the command name (field 2) may hold spaces and parentheses: fields are counted after its last ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22, starttime


def me() -> Owner:
    return Owner(os.getpid(), _start_time(os.getpid()), *_where())


def clean(home: Home) -> list[Path]:
    """Remove the temporary folders of processes that are gone (of an owner on another machine or in
    another container: untouched for ``FOREIGN_MAX_AGE``); the folders removed."""
    folder = home.tmp
    if not folder.is_dir():
        return []
    gone = []
    for entry in folder.iterdir():
        owner = Owner.parse(entry.name)
        if owner is not None and entry.is_dir() and not owner.alive(_written(entry)):
            shutil.rmtree(entry, ignore_errors=True)
            gone.append(entry)
    return gone


def _written(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def enter(home: Home) -> Path:
    """Clean up after dead owners, then make ``REPRO_HOME/tmp/<me>`` this process's temporary folder
    (and its children's, through ``TMPDIR``), with Metaflow's client cache inside it. Idempotent."""
    clean(home)
    mine = home.tmp / str(me())
    for _ in range(3):  # another command's leave() may remove an empty tmp/ between its mkdir and ours
        try:
            mine.mkdir(parents=True, exist_ok=True)
            break
        except FileNotFoundError:
            continue
    os.environ["TMPDIR"] = str(mine)
    os.environ.setdefault(CLIENT_CACHE_VAR, str(mine / "metaflow_client"))
    tempfile.tempdir = str(mine)
    atexit.register(leave, mine)  # the command line calls it itself: it may leave through os._exit
    return mine


def child_env(home: Home) -> dict[str, str]:
    """The temporary folder and Metaflow client cache for the processes a run starts (Metaflow, its
    tasks, the read-back), under ``REPRO_HOME/tmp/<me>``: what ``enter`` gives a ``repro`` command, for
    callers that did not enter (``pytest --repro``, whose own temporary folders stay pytest's)."""
    mine = home.tmp / str(me())
    if not mine.is_dir():
        clean(home)
        mine.mkdir(parents=True, exist_ok=True)
    return {"TMPDIR": str(mine), CLIENT_CACHE_VAR: str(mine / "metaflow_client")}


#: what ``child_env`` sets: where this process keeps temporary files, never where a run is
CHILD_VARS = ("TMPDIR", CLIENT_CACHE_VAR)


def leave(mine: Path) -> None:
    """Remove this process's temporary folder (a command that ended normally), and ``REPRO_HOME/tmp``
    itself when no other process has a folder there: a command that wrote nothing leaves nothing."""
    shutil.rmtree(mine, ignore_errors=True)
    try:
        mine.parent.rmdir()  # only when empty; another process's folder keeps it
    except OSError:
        pass
