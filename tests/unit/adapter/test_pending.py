"""adapter/pending: a run's marker through its states, read back like any untrusted file, and which
markers wait for `repro recover` (not those of a repro still running)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from metaflow_repro.adapter import pending, scratch
from metaflow_repro.errors import BadInput
from metaflow_repro.settings import Home

RUN = pending.PendingRun(path="/p/f.py", flow="F", run_id="", elapsed=0.0, lock_sha256="a" * 64)


def _dead_owner() -> str:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return str(scratch.Owner(int(gone.stdout), 1))


def test_a_marker_is_started_by_this_process_and_names_the_run_id_file_beside_it(tmp_path):
    home = Home(tmp_path)
    marker = pending.start(home, RUN)
    run = pending.parse(marker.read_text(), str(marker))
    assert run.state == pending.STARTED and run.run_id == "" and run.owner == str(scratch.me()) and run.alive()
    assert pending.run_id_file(marker).parent == marker.parent and pending.started_run_id(marker) == ""
    pending.run_id_file(marker).write_text("1234\n")  # Metaflow writes it when the run starts
    assert pending.started_run_id(marker) == "1234"
    pending.run_id_file(marker).write_text("../../x")
    with pytest.raises(BadInput, match="run id"):
        pending.started_run_id(marker)
    pending.update(marker, replace(run, state=pending.FINISHED, run_id="1234", elapsed=2.5))
    assert pending.markers_of(home, "F", "1234") == [marker]
    pending.remove(marker)
    assert not marker.exists() and not pending.run_id_file(marker).exists()


def test_only_markers_of_a_repro_that_is_gone_wait_for_recover(tmp_path):
    home = Home(tmp_path)
    pending.start(home, RUN)  # this process: a run in progress
    pending.save(home, replace(RUN, run_id="1", state=pending.RECORDED, owner=_dead_owner()))
    pending.save(home, replace(RUN, run_id="2", state=pending.FINISHED, owner=""))  # an older repro's
    assert pending.waiting(home) == {pending.STARTED: 0, pending.FINISHED: 1, pending.RECORDED: 1}


def test_a_marker_is_validated(tmp_path):
    home = Home(tmp_path)
    path = pending.save(home, replace(RUN, run_id="7", state=pending.FINISHED))
    doc = json.loads(path.read_text())
    for field, bad in (("state", "done"), ("run_id", ""), ("owner", 12), ("move_latest", "yes")):
        with pytest.raises(BadInput, match=field):
            pending.parse(json.dumps({**doc, field: bad}), str(path))
    old = {k: v for k, v in doc.items() if k not in ("state", "owner", "move_latest")}  # written before states
    assert pending.parse(json.dumps(old), str(path)).state == pending.FINISHED


def test_a_marker_of_a_repro_on_another_machine_or_container_waits_until_it_is_a_week_old(tmp_path):
    """A REPRO_HOME shared over NFS or with a container: a pid of another host or pid namespace says
    nothing here, so its marker is a run in progress, for `waiting` and for `recover` alike."""
    import os
    import time

    from metaflow_repro.operations.run import recover
    from metaflow_repro.settings import Settings

    home = Home(tmp_path)
    host, space = scratch._where()
    gone = scratch.Owner.parse(_dead_owner())
    assert gone is not None
    elsewhere = str(scratch.Owner(gone.pid, gone.started, "other-host", space))
    marker = pending.save(home, replace(RUN, run_id="1", state=pending.FINISHED, owner=elsewhere))
    other_ns = str(scratch.Owner(gone.pid, gone.started, host, "ns1"))
    pending.save(home, replace(RUN, run_id="2", state=pending.FINISHED, owner=other_ns))
    assert pending.waiting(home) == {pending.STARTED: 0, pending.FINISHED: 0, pending.RECORDED: 0}
    assert recover(Settings(home=home, store="")) == [] and marker.exists()
    old = time.time() - 8 * 24 * 3600
    os.utime(marker, (old, old))  # a week old: its repro is taken as gone
    assert pending.waiting(home)[pending.FINISHED] == 1
    (found,) = recover(Settings(home=home, store=""))
    assert "/p/f.py" in found.error  # recover takes it (and says its flow file is gone)


def test_a_marker_finds_metaflows_local_datastore_from_the_folder_metaflow_ran_in(tmp_path):
    """Metaflow makes `.metaflow` in the folder it runs in (or takes the nearest above): found from there,
    not from the folder `repro recover` is started in; a datastore the run's environment names is kept."""
    ran_in = tmp_path / "proj" / "sub"
    ran_in.mkdir(parents=True)
    run = replace(RUN, ran_in=str(ran_in), cwd="/elsewhere")
    assert pending.SYSROOT_LOCAL not in pending.locate(run).env  # before the run: no .metaflow yet
    (tmp_path / "proj" / ".metaflow").mkdir()
    assert pending.locate(run).env[pending.SYSROOT_LOCAL] == str(tmp_path / "proj")
    (ran_in / ".metaflow").mkdir()
    assert pending.locate(run).env[pending.SYSROOT_LOCAL] == str(ran_in)
    named = replace(run, env={pending.SYSROOT_LOCAL: "/data"})
    assert pending.locate(named).env == {pending.SYSROOT_LOCAL: "/data"}
    older = replace(RUN, cwd=str(ran_in))  # a marker without ran_in: Metaflow ran where repro did
    assert pending.locate(older).env[pending.SYSROOT_LOCAL] == str(ran_in)
    path = pending.save(Home(tmp_path / "home"), replace(run, run_id="3"))
    assert pending.parse(path.read_text(), str(path)).ran_in == str(ran_in)
