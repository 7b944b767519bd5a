"""Issue 22 item 4: `kill -9` of `repro run` loses no finished run and leaves no half record.

Real `repro run` subprocesses, killed with SIGKILL at each phase (found in their output), then
`repro recover`: Metaflow's processes die with repro, a run that finished is recorded whole and pushed,
a run that did not is dropped, a push killed half-way is pushed by `recover`, and the next `repro run`
says what is waiting."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaflow_repro.adapter import pending
from metaflow_repro.model.record import from_json
from metaflow_repro.settings import Home
from tests.helpers import cli
from tests.security.lostflow import Run

pytestmark = pytest.mark.slow


def _processes_of(flow: Path) -> list[int]:
    """Processes (Metaflow's runtime, its tasks) whose command line names the flow file."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(flow) in cmdline and "metaflow_repro" not in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _assert_metaflow_died(run: Run, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while _processes_of(run.flow) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_of(run.flow), "Metaflow's processes outlived repro:\n" + run.text


def _pending(home: Home) -> list[Path]:
    return sorted(home.pending.glob("LostFlow/*.json"))


def _assert_complete(record_file: Path) -> None:
    record = from_json(record_file.read_text(), str(record_file))
    assert record.pickle_checks, "a record without its pickle checks"
    assert record.interpreters, "a record without its interpreter snapshots"
    assert any(a.stored for s in record.steps.values() for t in s.tasks.values() for a in t.artifacts.values())


def test_killed_while_metaflow_builds_or_runs_the_run_dies_with_repro_and_is_dropped(tmp_path, repro_home):
    home = Home(repro_home)
    run = Run(tmp_path, sleep=8).start()
    run.until("building environments and running the flow")
    time.sleep(0.5)  # Metaflow is starting (and building environments)
    run.kill()
    _assert_metaflow_died(run)
    run = Run(tmp_path, sleep=8).start()
    run.until("STEP-RUNNING")  # the start step is running
    run.kill()
    _assert_metaflow_died(run, within=6)  # before the step's sleep is over
    time.sleep(6)  # the start step would be over and `end` would have run by now, were it alive
    assert not run.sentinel.exists(), "the run went on without repro"
    assert len(_pending(home)) == 2  # both markers were written before Metaflow started

    r = run.recover()
    assert r.code == 0, r.text
    assert "never started" in r.out or "did not finish" in r.out, r.text
    assert "did not finish" in r.out, r.text
    assert not _pending(home) and not run.records()  # nothing half-done is recorded or pushed
    assert not list(home.tmp.glob("*/repro-run-*")), "the killed runs' temporary folders are left"


def test_killed_right_after_metaflow_ended_the_run_is_recovered_whole(tmp_path, repro_home):
    home = Home(repro_home)
    run = Run(tmp_path).start()
    run_id = run.until(r"run (\S+) ended in .* \(exit code 0\)").group(1)
    run.kill()
    markers = _pending(home)
    assert len(markers) == 1, run.text
    assert not home.record("LostFlow", run_id).exists() and not run.records()

    r = run.recover()
    assert r.code == 0 and f"recovered LostFlow/{run_id}" in r.out, r.text
    (record_file,) = run.records()
    _assert_complete(record_file)
    assert not _pending(home)


def test_stopped_during_the_pickle_checks_no_degraded_record_is_saved_or_pushed(tmp_path, repro_home):
    """Ctrl-C (SIGINT to repro and its probes) while the pickle checks run: no record without them is
    saved (`repro store push` would push it as is), and `recover` makes the whole record."""
    home = Home(repro_home)
    run = Run(tmp_path, unpickle_sleep=4).start(session=True)  # the pickle checks take 4 s
    run_id = run.until(r"run (\S+) ended in .* \(exit code 0\)").group(1)
    run.until("checking that every artifact unpickles")
    assert run.interrupt() != 0, run.text
    assert not home.record("LostFlow", run_id).exists(), "a record without its checks was saved"
    pushed = cli("store", "push", f"LostFlow/{run_id}", "--store", run.store.as_uri(), env=run.env)
    assert pushed.code == 2 and not run.records(), pushed.text  # nothing to push as is

    r = run.recover()
    assert r.code == 0 and f"recovered LostFlow/{run_id}" in r.out, r.text
    (record_file,) = run.records()
    _assert_complete(record_file)
    assert (record_file.parents[1] / "latest").read_text().strip() == run_id


def test_a_push_killed_half_way_is_named_by_the_next_run_and_pushed_by_recover(tmp_path, repro_home):
    home = Home(repro_home)
    run = Run(tmp_path).start()
    run_id = run.until(r"run (\S+) ended in .* \(exit code 0\)").group(1)
    run.until("checking that every artifact unpickles")
    deadline = time.monotonic() + 300
    while not any(p.is_file() for p in run.store.rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.002)
    run.kill()  # the push has begun: some objects are in the store, not the record
    assert not run.records(), run.text
    assert home.record("LostFlow", run_id).is_file()  # recorded here, whole
    _assert_complete(home.record("LostFlow", run_id))

    nxt = Run(tmp_path).start()
    said = nxt.until("recover").group(0)
    nxt.kill()
    assert "1 run recorded here is not pushed: repro recover" in "".join(nxt.output), said
    r = run.recover()
    assert r.code == 0 and f"recovered LostFlow/{run_id}" in r.out, r.text
    (record_file,) = [p for p in run.records() if p.parent.name == run_id]
    assert (record_file.parents[1] / "latest").read_text().strip() == run_id
    assert cli("store", "verify", "--store", run.store.as_uri()).code == 0
    assert "no pending runs" in run.recover().out


def _no_datastore_above(folder: Path) -> None:
    """Metaflow makes its local datastore in ``folder`` (none above it would be taken instead)."""
    assert not [p for p in (folder, *folder.parents) if (p / ".metaflow").is_dir()], "a .metaflow above the test"


def test_a_run_in_a_fresh_folder_is_recovered_from_another_folder(tmp_path, repro_home):
    """No METAFLOW_DATASTORE_SYSROOT_LOCAL: the marker is written before Metaflow makes `.metaflow` in the
    folder it runs in, and `repro recover`, started from elsewhere, still reads the run back from there."""
    run = Run(tmp_path)
    del run.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"]
    _no_datastore_above(run.proj)
    run.start()
    run_id = run.until(r"run (\S+) ended in .* \(exit code 0\)").group(1)
    run.kill()
    assert (run.proj / ".metaflow" / "LostFlow" / run_id).is_dir(), run.text  # Metaflow's datastore, there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli("recover", env=run.env, cwd=elsewhere)
    assert r.code == 0 and f"recovered LostFlow/{run_id}" in r.out, r.text
    (record_file,) = run.records()
    _assert_complete(record_file)
    assert not _pending(Home(repro_home)) and not (elsewhere / ".metaflow").exists()


_FAILING_FINISH = """
import errno, sys
from pathlib import Path
from metaflow_repro.adapter import pending
from metaflow_repro.operations.run import RunOptions, run_and_record

update = pending.update
def full(marker, run):  # the disk is full the instant Metaflow exited 0
    if run.state == pending.FINISHED:
        raise OSError(errno.ENOSPC, "No space left on device", str(marker))
    update(marker, run)
pending.update = full
run_and_record(Path(sys.argv[1]), RunOptions(push=True, store=sys.argv[2]))
"""


def test_a_run_whose_marker_cannot_be_marked_finished_keeps_it_for_recover(tmp_path, repro_home):
    """Metaflow wrote the run id and exited 0, then `repro run` failed (the update to finished hit a
    full disk): the marker stays, and `repro recover` records the run. The marker, still `started`, names
    no datastore (none was set, and Metaflow made it after the marker): recover, from elsewhere, finds it."""
    home = Home(repro_home)
    run = Run(tmp_path)
    del run.env["METAFLOW_DATASTORE_SYSROOT_LOCAL"]
    _no_datastore_above(run.proj)
    failed = subprocess.run(
        [sys.executable, "-c", _FAILING_FINISH, str(run.flow), run.store.as_uri()],
        env=run.env,
        cwd=run.proj,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert failed.returncode != 0 and "No space left on device" in failed.stderr, failed.stderr[-3000:]
    (marker,) = _pending(home)
    run_id = pending.started_run_id(marker)
    assert run_id and not run.records()
    r = cli("recover", env=run.env, cwd=tmp_path)
    assert r.code == 0 and f"recovered LostFlow/{run_id}" in r.out, r.text
    (record_file,) = run.records()
    _assert_complete(record_file)
    assert not _pending(home)
