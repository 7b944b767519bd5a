"""A run Metaflow finished is never lost: a `repro run` killed right after Metaflow's `Done!` (while it reads
the run back, before the record is saved) leaves a pending run that `repro recover` records and pushes.
A real Metaflow run, a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from metaflow_repro.adapter import pending
from metaflow_repro.errors import BadInput
from metaflow_repro.model.record import from_json
from metaflow_repro.settings import Home
from tests.helpers import cli, write_flow

FLOW = """
    from metaflow import FlowSpec, conda, step


    class KilledFlow(FlowSpec):
        @conda(libraries={"six": "1.16.0"})  # needs the flow's own settings (conda-source): recover reads them
        @step
        def start(self):
            self.answer = 41 + 1
            self.next(self.end)

        @step
        def end(self):
            pass


    if __name__ == "__main__":
        KilledFlow()
"""


@pytest.mark.slow
def test_a_run_killed_after_done_is_recovered_and_pushed(tmp_path, repro_home):
    proj = tmp_path / "proj"
    flow = write_flow(proj, FLOW, name="killed.py")
    store = tmp_path / "store"
    env = {
        **os.environ,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    home = Home(repro_home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaflow_repro", "run", str(flow), "--store", store.as_uri()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=proj,
    )
    assert proc.stdout is not None
    output = []
    for line in proc.stdout:
        output.append(line)
        if "Done!" in line:
            break
    proc.send_signal(signal.SIGKILL)  # Metaflow is done; repro is reading the run back
    proc.wait(timeout=30)
    marker = list((home.pending / "KilledFlow").glob("*.json"))
    assert len(marker) == 1, "".join(output)[-3000:]
    run_id = pending.started_run_id(marker[0])  # Metaflow wrote it beside the marker
    assert run_id and run_id in "".join(output)
    assert not home.record("KilledFlow", run_id).exists()  # killed before the record was saved
    assert not list(store.glob("runs/*/*/record.json"))  # nothing pushed: without recovery the run is lost

    recovered = cli("recover", env=env, cwd=tmp_path)
    assert recovered.code == 0, recovered.text[-3000:]
    assert f"recovered KilledFlow/{run_id}" in recovered.out and store.as_uri() in recovered.out
    records = list(store.glob(f"runs/*/{run_id}/record.json"))
    assert len(records) == 1
    record = from_json(records[0].read_text(), str(records[0]))
    assert record.identity == "KilledFlow:killed.py" and list(record.steps) == ["start", "end"]
    assert "answer" in record.steps["start"].tasks["-"].artifacts and record.pickle_checks
    assert not marker[0].exists() and home.record("KilledFlow", run_id).is_file()
    verified = cli("store", "verify", "--store", store.as_uri())
    assert verified.code == 0, verified.text
    again = cli("recover", env=env)
    assert again.code == 0 and "no pending runs" in again.out


def test_a_pending_run_is_validated_and_keeps_no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("METAFLOW_SERVICE_AUTH_KEY", "secret")
    monkeypatch.setenv("METAFLOW_DEFAULT_METADATA", "local")
    env = pending.locating_env({"METAFLOW_DATASTORE_SYSROOT_LOCAL": "/x", "AWS_SECRET_ACCESS_KEY": "s"}, tmp_path)
    assert env["METAFLOW_DEFAULT_METADATA"] == "local" and env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] == "/x"
    assert "METAFLOW_SERVICE_AUTH_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    home = Home(tmp_path)
    run = pending.PendingRun(path="/p/f.py", flow="F", run_id="12", elapsed=1.5, lock_sha256="a" * 64, env=env)
    path = pending.save(home, run)
    assert pending.pending(home) == [path] and pending.parse(path.read_text(), str(path)) == run
    doc = json.loads(path.read_text())
    for field, bad in (("run_id", "../../x"), ("flow", "F/../G"), ("lock_sha256", "zz")):
        with pytest.raises(BadInput, match=field):
            pending.parse(json.dumps({**doc, field: bad}), str(path))
    with pytest.raises(BadInput, match="not a pending run"):
        pending.parse("{", str(path))


def test_repro_run_points_at_pending_runs_and_recover_refuses_a_run_whose_lock_changed(tmp_path):
    home = Home(tmp_path / "home")
    flow = write_flow(tmp_path / "proj", FLOW, name="killed.py")  # no lock: not the one the run used
    run = pending.PendingRun(path=str(flow), flow="KilledFlow", run_id="7", elapsed=1.0, lock_sha256="a" * 64)
    marker = pending.save(home, run)
    env = {"REPRO_HOME": str(home.root)}
    r = cli("run", tmp_path / "proj" / "missing.py", env=env)
    assert "1 run started here is not recorded (repro was stopped): repro recover" in r.err, r.text
    r = cli("recover", env=env)
    assert r.code == 2 and "KilledFlow/7" in r.err and "changed since the run" in r.err, r.text
    assert marker.exists()  # kept: the user decides


def test_recover_resolves_configs_in_the_folder_and_with_the_variables_the_run_had(tmp_path, monkeypatch):
    """A relative `--config NAME FILE` is read from the folder `repro run` ran in, and
    METAFLOW_FLOW_CONFIG* as the run had them, whatever folder `repro recover` is started from."""
    from metaflow_repro.operations.run import _as_when_run

    there = tmp_path / "there"
    there.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METAFLOW_FLOW_CONFIG_VALUE", raising=False)
    run = pending.PendingRun(
        path="/p/f.py",
        flow="F",
        run_id="12",
        elapsed=1.0,
        lock_sha256="a" * 64,
        env={"METAFLOW_FLOW_CONFIG_VALUE": '{"cfg": {"a": 1}}', "METAFLOW_DEFAULT_METADATA": "local"},
        cwd=str(there),
    )
    home = Home(tmp_path / "home")
    path = pending.save(home, run)
    assert pending.parse(path.read_text(), str(path)).cwd == str(there)
    with _as_when_run(run):
        assert Path.cwd() == there
        assert os.environ["METAFLOW_FLOW_CONFIG_VALUE"] == '{"cfg": {"a": 1}}'
    assert Path.cwd() == tmp_path and "METAFLOW_FLOW_CONFIG_VALUE" not in os.environ
    old = json.loads(path.read_text())
    del old["cwd"]  # pending files written before this field still read
    assert pending.parse(json.dumps(old), str(path)).cwd == ""
