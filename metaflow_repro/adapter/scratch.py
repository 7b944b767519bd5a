"""Temporary files under ``REPRO_HOME/tmp``, never in the system's temporary folder, and who owns them.

Each repro process gets its own folder, ``REPRO_HOME/tmp/<owner>``, named after its owner (pid and start
time, so a recycled pid is not taken for the old process). ``enter`` makes it this process's temporary
folder (``tempfile``'s, and ``TMPDIR`` for every process it starts: Metaflow, uv, tasks) and points
Metaflow's client cache into it; ``enter`` also removes the folders whose owner is gone (a ``repro`` that
was killed). A command that ends normally removes its own folder (``leave``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.settings import Home

#: Metaflow's client cache (``/tmp/metaflow_client`` by default), read by Metaflow at import
CLIENT_CACHE_VAR = "METAFLOW_CLIENT_CACHE_PATH"


@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one with the same pid by its start time (clock ticks since
    boot, ``/proc/<pid>/stat``; 0 where there is no ``/proc``)."""

    pid: int
    started: int

    def __str__(self) -> str:
        return f"{self.pid}-{self.started}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """An owner from ``str(owner)``; None for anything else (a folder or a file not ours)."""
        pid, _, started = text.partition("-")
        if not (pid.isdigit() and started.isdigit()):
            return None
        return cls(int(pid), int(started))

    def alive(self) -> bool:
        if not _pid_exists(self.pid):
            return False
        return not self.started or _start_time(self.pid) == self.started


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
    return Owner(os.getpid(), _start_time(os.getpid()))


def clean(home: Home) -> list[Path]:
    """Remove the temporary folders of processes that are gone; the folders removed."""
    folder = home.tmp
    if not folder.is_dir():
        return []
    gone = []
    for entry in folder.iterdir():
        owner = Owner.parse(entry.name)
        if owner is not None and entry.is_dir() and not owner.alive():
            shutil.rmtree(entry, ignore_errors=True)
            gone.append(entry)
    return gone


def enter(home: Home) -> Path:
    """Clean up after dead owners, then make ``REPRO_HOME/tmp/<me>`` this process's temporary folder
    (and its children's, through ``TMPDIR``), with Metaflow's client cache inside it. Idempotent."""
    clean(home)
    mine = home.tmp / str(me())
    mine.mkdir(parents=True, exist_ok=True)
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
    """Remove this process's temporary folder (a command that ended normally)."""
    shutil.rmtree(mine, ignore_errors=True)
