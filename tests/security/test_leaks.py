"""Issue 22 item 13: repro's temporary files (its own, Metaflow's, uv's, Metaflow's client cache) stay under
``REPRO_HOME/tmp``, one folder per repro process, removed when the command ends and, for a repro that was
killed, at the start of the next command. Real `repro run` subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metaflow_repro.adapter import pending, scratch
from metaflow_repro.settings import Home
from tests.helpers import cli, require
from tests.security.lostflow import Run

CLIENT_CACHE = Path("/tmp/metaflow_client")  # Metaflow's default (METAFLOW_CLIENT_CACHE_PATH)


def _client_caches_of(tmp_path: Path) -> list[Path]:
    """Folders of Metaflow's default client cache for this test's datastore (named after its root)."""
    mark = str(tmp_path).replace("/", "_").replace("-", "_")
    found = CLIENT_CACHE.iterdir() if CLIENT_CACHE.is_dir() else []
    return [p for p in found if mark in p.name.replace("-", "_")]


@pytest.mark.slow
def test_runs_leave_no_temporary_file_outside_repro_home(tmp_path, repro_home):
    home = Home(repro_home)
    system_tmp = tmp_path / "system-tmp"  # where tempfile would put them without REPRO_HOME/tmp
    system_tmp.mkdir()
    run = Run(tmp_path)
    run.env["TMPDIR"] = str(system_tmp)
    done = run.start().finish()
    assert done == 0, run.text
    assert not list(system_tmp.iterdir()), "temporary files outside REPRO_HOME"
    assert not _client_caches_of(tmp_path), "Metaflow's client cache outside REPRO_HOME"
    assert run.proc is not None
    assert not list(home.tmp.glob(f"{run.proc.pid}-*")), "the command's own temporary folder was left"

    killed = Run(tmp_path, sleep=30)
    killed.env["TMPDIR"] = str(system_tmp)
    killed.start()
    killed.until("STEP-RUNNING")
    assert killed.proc is not None
    owner = home.tmp / str(scratch.Owner(killed.proc.pid, scratch._start_time(killed.proc.pid), *scratch._where()))
    assert list(owner.glob("repro-run-*")), "Metaflow's run files are not under REPRO_HOME/tmp"
    killed.kill()
    assert owner.is_dir() and not list(system_tmp.iterdir())
    assert cli("recover", env=killed.env, cwd=killed.proj).code == 0  # the next command cleans up
    assert not owner.exists(), "the killed run's temporary folder was left"
    assert not list(system_tmp.iterdir()) and not _client_caches_of(tmp_path)


def test_only_the_folders_of_dead_owners_are_removed(tmp_path):
    home = Home(tmp_path / "home")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = home.tmp / f"{int(gone.stdout)}-{scratch._start_time(os.getpid()) + 1}"
    recycled = home.tmp / f"{os.getpid()}-{scratch._start_time(os.getpid()) + 1}"  # our pid, not our start
    alive = home.tmp / str(scratch.me())
    other = home.tmp / "not-a-repro-folder"
    for folder in (dead, recycled, alive, other):
        (folder / "x").mkdir(parents=True)
    assert sorted(scratch.clean(home)) == sorted([dead, recycled])
    assert alive.is_dir() and other.is_dir() and not dead.exists() and not recycled.exists()


@pytest.mark.slow
def test_a_run_from_pytest_keeps_metaflow_temporary_files_and_client_cache_under_repro_home(
    tmp_path, repro_home, monkeypatch
):
    """`pytest --repro` calls the pipeline in its own process, which `repro`'s command line never entered:
    the processes a run starts get REPRO_HOME/tmp all the same."""
    from metaflow_repro.operations.run import RunOptions, run_and_record

    run = Run(tmp_path)
    for name in ("METAFLOW_DATASTORE_SYSROOT_LOCAL", "METAFLOW_DEFAULT_DATASTORE", "METAFLOW_DEFAULT_METADATA"):
        monkeypatch.setenv(name, run.env[name])
    monkeypatch.setenv("LOST_SENTINEL", str(run.sentinel))
    monkeypatch.chdir(run.proj)
    outcome = run_and_record(run.flow, RunOptions(capture=True))
    assert outcome.ok, outcome.error or outcome.output[-3000:]
    assert not _client_caches_of(tmp_path), "Metaflow's client cache outside REPRO_HOME"
    mine = Home(repro_home).tmp / str(scratch.me())
    assert list((mine / "metaflow_client").iterdir()), "the read-back's client cache is not under REPRO_HOME/tmp"


_IN_A_CONTAINER = """
import sys, time
from pathlib import Path
from metaflow_repro.adapter import pending, scratch
from metaflow_repro.settings import Home

home = Home(Path(sys.argv[1]))
folder = home.tmp / str(scratch.me())
folder.mkdir(parents=True)
run = pending.PendingRun(path="/p/f.py", flow="F", run_id="", elapsed=0.0, lock_sha256="a" * 64)
pending.start(home, run)
print(folder.name, flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(120)
def test_a_live_repro_in_another_pid_namespace_is_not_taken_for_a_dead_one(tmp_path):
    """REPRO_HOME bind-mounted into a container: a repro there (its own pid namespace: pid 1, 2...) is
    running; this side's clean and recover leave its temporary folder and its marker alone."""
    ok = shutil.which("unshare") and subprocess.run(["unshare", "-pf", "--mount-proc", "true"]).returncode == 0
    require(ok, "`unshare --pid --fork --mount-proc` (cannot create a pid namespace here)")
    from metaflow_repro.operations.run import recover
    from metaflow_repro.settings import Settings

    home = Home(tmp_path / "home")
    inside = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _IN_A_CONTAINER, str(home.root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert inside.stdout is not None
        name = inside.stdout.readline().strip()
        owner = scratch.Owner.parse(name)
        assert owner is not None and owner.pid < 10 and not owner.here(), name  # its pids are not ours
        assert scratch.clean(home) == [] and (home.tmp / name).is_dir()
        assert pending.waiting(home) == {pending.STARTED: 0, pending.FINISHED: 0, pending.RECORDED: 0}
        assert recover(Settings(home=home, store="")) == [] and len(pending.pending(home)) == 1
    finally:
        inside.kill()
        inside.wait()
