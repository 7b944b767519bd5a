"""adapter/scratch: who owns a temporary folder or a pending marker. A REPRO_HOME shared with a container
or over NFS holds owners of other machines and pid namespaces: their pids mean nothing here, so they are
taken as alive (never cleaned, never recovered) until what they wrote is a week old (issue 22 item 13)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from metaflow_repro.adapter import scratch
from metaflow_repro.settings import Home

WEEK = 7 * 24 * 3600


def _dead_pid() -> int:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(gone.stdout)


def test_an_owner_names_its_host_and_pid_namespace_and_reads_back():
    me = scratch.me()
    host, space = scratch._where()
    assert (me.pid, me.host, me.space) == (os.getpid(), host, space) and host
    if os.path.exists("/proc/self/ns/pid"):
        assert space == f"ns{os.stat('/proc/self/ns/pid').st_ino}"
    assert scratch.Owner.parse(str(me)) == me and me.here() and me.alive()
    assert scratch.Owner.parse("12-34") == scratch.Owner(12, 34)  # an older repro's: taken as this machine's
    for bad in ("12-34@h/../x+ns1", "12-34@h", "x-1", "12-34@+", "12-34@h+ns1/..", "not-a-repro-folder"):
        assert scratch.Owner.parse(bad) is None, bad


def test_an_owner_of_another_host_or_pid_namespace_is_alive_until_its_files_are_a_week_old():
    host, space = scratch._where()
    dead = _dead_pid()
    assert not scratch.Owner(dead, 1, host, space).alive()  # here: its pid says it is gone
    assert not scratch.Owner(dead, 1).alive()
    now = time.time()
    for elsewhere in (scratch.Owner(dead, 1, "other-host", space), scratch.Owner(dead, 1, host, "ns1")):
        assert not elsewhere.here()
        assert elsewhere.alive() and elsewhere.alive(now) and elsewhere.alive(now - WEEK + 3600)
        assert not elsewhere.alive(now - WEEK - 3600)
    # our own pid and start time, but on another machine: not us, and not looked up here
    mine = scratch.me()
    assert scratch.Owner(mine.pid, mine.started, "other-host", mine.space).alive(now - WEEK - 3600) is False


def test_clean_leaves_the_folders_of_owners_elsewhere_until_they_are_a_week_old(tmp_path):
    home = Home(tmp_path / "home")
    host, space = scratch._where()
    dead = _dead_pid()
    dead_here = home.tmp / str(scratch.Owner(dead, 1, host, space))
    other_host = home.tmp / str(scratch.Owner(dead, 1, "other-host", space))
    other_ns = home.tmp / str(scratch.Owner(dead, 1, host, "ns1"))
    stale = home.tmp / str(scratch.Owner(dead, 2, "other-host", space))
    for folder in (dead_here, other_host, other_ns, stale):
        (folder / "x").mkdir(parents=True)
    old = time.time() - WEEK - 60
    os.utime(stale, (old, old))
    assert sorted(scratch.clean(home)) == sorted([dead_here, stale])
    assert other_host.is_dir() and other_ns.is_dir()
