"""Run a command whose whole process tree dies with repro, even when repro is killed with SIGKILL.

Metaflow's runtime starts a process per task (and uv, probes, ``batch step`` watchers...). A ``repro`` killed
with ``kill -9`` runs no code of its own, so nothing in it can stop them: left alone they run on as
orphans, finish the run, and nobody records it. ``prctl(PR_SET_PDEATHSIG)`` is not enough: it reaches
the direct child only (Metaflow's runtime, not its tasks), it fires when the *thread* that started the
child ends, and it needs a ``preexec_fn`` (unsafe with threads). So the command runs in a process
group of its own (a new session: the terminal's Ctrl-C does not reach it either; repro forwards it),
and a small watchdog process, started first, holds the read end of a pipe whose write end only repro
holds. The kernel closes that end when repro dies, however it dies: the watchdog reads end-of-file and
stops the whole group (SIGTERM, then SIGKILL after a grace period). When the command ends normally repro
tells the watchdog so, and it exits without touching anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

#: seconds between the watchdog's SIGTERM and its SIGKILL of the group
GRACE = 5.0

#: the watchdog: standard library only, started with -I -S (no site, no user code) so it starts fast.
#: argv: the pipe's read end. It reads the group id, then waits: "done" ends it quietly, end-of-file
#: (repro is gone) stops the group.
_WATCHDOG = r"""
import os, signal, sys, time
fd, grace = int(sys.argv[1]), float(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
data = b""
while True:
    try:
        chunk = os.read(fd, 64)
    except InterruptedError:
        continue
    if not chunk:
        break
    data += chunk
words = data.split()
if not words or words[-1] == b"done":
    sys.exit(0)
pgid = int(words[0])
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False
try:
    os.killpg(pgid, signal.SIGTERM)
except OSError:
    sys.exit(0)
end = time.monotonic() + grace
while alive() and time.monotonic() < end:
    time.sleep(0.05)
if alive():
    os.killpg(pgid, signal.SIGKILL)
"""


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


def run(cmd: list[str], env: dict[str, str], cwd=None, capture: bool = False) -> Finished:
    """Run ``cmd`` in a process group of its own that dies with this process (see the module's
    docstring). Ctrl-C here is passed on to the group; the group is killed if it does not stop."""
    read_end, write_end = os.pipe()
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(read_end), str(GRACE)],
            pass_fds=(read_end,),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(read_end)
    try:
        return _run_watched(cmd, env, cwd, capture, write_end)
    finally:
        os.close(write_end)
        watchdog.wait()


def _run_watched(cmd: list[str], env: dict[str, str], cwd, capture: bool, write_end: int) -> Finished:
    out = subprocess.PIPE if capture else None
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, text=True, stdout=out, stderr=out, start_new_session=True)
    os.write(write_end, f"{proc.pid}\n".encode())  # its group id: the watchdog stops this group if we die
    try:
        stdout, stderr = proc.communicate()
    except BaseException:  # Ctrl-C (or any error here): the group must not outlive us
        _stop(proc)
        raise
    os.write(write_end, b"done\n")
    return Finished(proc.returncode, stdout or "", stderr or "")


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt the group as a terminal's Ctrl-C would, then kill it if it does not end in time."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(timeout=GRACE)
            return
        except subprocess.TimeoutExpired:
            continue
