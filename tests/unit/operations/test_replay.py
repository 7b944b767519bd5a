"""The command printed for a failed task's logs names the run (issue 13): `repro run` and `repro
replay` share one helper (metaflow_repro.operations.replay.task_pathspec / logs_command)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from metaflow_repro.cli.run import failed_tasks
from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.operations.replay import logs_command, task_pathspec
from metaflow_repro.operations.run import Outcome
from tests.helpers import make_record


def _failed(step: str, task: str = "-") -> Finding:
    return Finding(Kind.TASK_FAILED, "Traceback ...\nValueError: boom", step=step, task=task)


def test_a_failed_task_the_record_lacks_still_gets_a_logs_command_with_the_run_id():
    record = make_record(run_id="17")  # steps start and end, task "-" each
    assert task_pathspec(record, _failed("start")) == "17/start/1"
    assert task_pathspec(record, _failed("train")) == "17/train"  # failed before its task got an id
    lines = failed_tasks(Outcome(path="f.py", record=record, findings=[_failed("train")]), Path("/p/f.py"))
    assert lines == [
        "step train failed (F/17/train): ValueError: boom",
        f"  its logs: {shlex.quote(sys.executable)} /p/f.py logs 17/train",
    ]


def test_the_logs_command_carries_the_replays_datastore_so_it_finds_that_run():
    env = {"METAFLOW_DATASTORE_SYSROOT_LOCAL": "/w d", "METAFLOW_DEFAULT_DATASTORE": "local", "OTHER": "x"}
    cmd = logs_command(Path("/c/flow.py"), "5/start/2", env)
    assert shlex.split(cmd) == [
        "METAFLOW_DATASTORE_SYSROOT_LOCAL=/w d",
        "METAFLOW_DEFAULT_DATASTORE=local",
        sys.executable,
        "/c/flow.py",
        "logs",
        "5/start/2",
    ]
