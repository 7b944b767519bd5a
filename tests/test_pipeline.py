"""`repro run` through the one pipeline: exit codes of failures inside Metaflow reach the command line."""

import pytest

from tests.helpers import cli, write_flow

pytestmark = pytest.mark.slow

FLOW = """
    from metaflow import FlowSpec, step, pypi

    class ExitFlow(FlowSpec):
        @pypi(packages={"six": "%s"})
        @step
        def start(self):
            import os
            if os.environ.get("EXIT_FLOW_FAIL"):
                raise RuntimeError("the step failed on purpose")
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        ExitFlow()
"""


def test_exit_codes_of_failures_inside_metaflow_reach_the_cli(flow_dir, tmp_path):
    """Pins: a repro error raised in Metaflow's process keeps its own exit code (2 for a stale lock
    under REPRO_FROZEN) and message; a failed step gives Metaflow's exit code, not a made-up one."""
    path = write_flow(flow_dir, FLOW % "1.16.0")
    env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_STORE": (tmp_path / "store").as_uri(),
    }
    assert cli("lock", path).code == 0
    failed = cli("run", path, env={**env, "EXIT_FLOW_FAIL": "1"}, cwd=flow_dir)
    assert failed.code == 1, failed.text[-3000:]
    assert "the step failed on purpose" in failed.text and "not pushed" in failed.err
    # the failed task is named, with its error line and the command that shows its logs
    assert "RuntimeError: the step failed on purpose" in failed.err.split("step start failed (ExitFlow/", 1)[1]
    assert " logs " in failed.err.split("step start failed (ExitFlow/", 1)[1]

    path.write_text(path.read_text().replace("1.16.0", "1.17.0"))  # the declaration moves, the lock does not
    stale = cli("run", path, env={**env, "REPRO_FROZEN": "1"}, cwd=flow_dir)
    assert stale.code == 2, stale.text[-3000:]
    assert "the lock does not match the flow" in stale.err and "six 1.16.0 -> 1.17.0" in stale.err

    usage = cli("run", path, "--", "--no-such-option", env=env, cwd=flow_dir)
    assert usage.code == 2 and "no-such-option" in usage.text

    path.write_text(path.read_text().split("if __name__")[0])  # nothing starts the flow
    unstarted = cli("run", path, env=env, cwd=flow_dir)
    assert unstarted.code == 2 and "ExitFlow()" in unstarted.err


def test_one_run_reads_its_flow_and_settings_once_and_saves_its_record_once(flow_dir, tmp_path, monkeypatch):
    """One pass: ``run_and_record`` imports the flow file once, reads the settings once and writes the
    record once (plus the pending marker it removes), also when it checks drift and compares with a
    baseline; the lock it ran with travels in the outcome."""
    from metaflow_repro import settings as settings_module
    from metaflow_repro.env import flowfile
    from metaflow_repro.model.lock import read_lock
    from metaflow_repro.operations.run import Outcome, RunOptions, run_and_record
    from metaflow_repro.store import snapshot
    from tests.counting import count_calls

    path = write_flow(flow_dir, FLOW % "1.16.0")
    _local_metaflow(monkeypatch, tmp_path, flow_dir)
    store = (tmp_path / "store").as_uri()
    imports = count_calls(monkeypatch, flowfile, "import_flow_module")
    settings = count_calls(monkeypatch, settings_module, "load_settings")
    saves = count_calls(monkeypatch, snapshot, "save_local")

    first = run_and_record(path, RunOptions(store=store, push=True))
    assert first.ok, first.error or first.output[-3000:]
    assert (imports["*"], settings["*"], saves["*"]) == (1, 1, 1)
    assert first.lock is not None and first.lock == read_lock(path.with_name("flow.repro.lock"))  # written by the run
    assert first.relocked and Outcome.from_json(first.to_json()).lock == first.lock

    second = run_and_record(path, RunOptions(store=store, push=True, drift=True, baseline="latest"))
    assert second.ok and second.comparison is not None, second.error or second.output[-3000:]
    assert (imports["*"], settings["*"], saves["*"]) == (2, 2, 2)
    assert not second.relocked and second.lock == first.lock


def test_a_run_whose_checks_fail_is_not_saved_half_and_recover_finishes_it(flow_dir, tmp_path, monkeypatch):
    """The record is saved once, whole, after its checks; when a check fails (here the pickle matrix, with
    an infrastructure error) no record is saved (a push would take it as is), the pending marker stays,
    and `recover` makes the whole record and pushes it (issue 22 item 4)."""
    from dataclasses import replace

    from metaflow_repro.adapter import pending
    from metaflow_repro.errors import InfraError
    from metaflow_repro.operations import run as pipeline
    from metaflow_repro.settings import load_settings

    path = write_flow(flow_dir, FLOW % "1.16.0")
    _local_metaflow(monkeypatch, tmp_path, flow_dir)
    real = pipeline.finish_record

    def broken(*args, **kwargs):
        raise InfraError("the pickle matrix could not start")

    monkeypatch.setattr(pipeline, "finish_record", broken)
    store = (tmp_path / "store").as_uri()
    outcome = pipeline.run_and_record(path, pipeline.RunOptions(store=store, push=True))
    assert outcome.error.startswith("the pickle matrix could not start") and outcome.error_code == 3
    assert "repro recover" in outcome.error and not outcome.saved and not outcome.pushed
    assert (
        outcome.record is not None and not load_settings(path).home.record("ExitFlow", outcome.record.run_id).exists()
    )
    home = load_settings(path).home
    (marker,) = pending.pending(home)
    left = pending.parse(marker.read_text(), str(marker))
    assert left.state == pending.FINISHED and left.alive()  # this process's: a run in progress for recover
    assert pipeline.recover(load_settings(path)) == []
    pending.update(marker, replace(left, owner=""))  # as if this process were gone

    monkeypatch.setattr(pipeline, "finish_record", real)
    (recovered,) = pipeline.recover(load_settings(path))
    assert recovered.pushed and recovered.record is not None and recovered.record.interpreters, recovered.error
    assert recovered.record.run_id == outcome.record.run_id and list(pending.pending(home)) == []


def _local_metaflow(monkeypatch, tmp_path, flow_dir) -> None:
    """Metaflow's local datastore and metadata under ``tmp_path``, run from the flow's folder."""
    for name, value in {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(flow_dir)
