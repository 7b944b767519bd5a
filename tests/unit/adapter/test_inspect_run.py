"""What ``metaflow_repro.adapter.inspect_run`` makes of a run as Metaflow's client shows it, without a Metaflow run:
the client's Run is a small stand-in with the attributes the module reads; the datastores are Metaflow's
own (local, in a temporary folder), the included file is read through Metaflow's own data client, and what
comes out goes through the RunInspection codec the host decodes it with."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from datetime import datetime
from types import SimpleNamespace

import pytest

from metaflow_repro.adapter import inspect_run
from metaflow_repro.model import inspection
from metaflow_repro.model.record import NO_FOREACH


class _Data(SimpleNamespace):
    pass


class _Task:
    """A task as Metaflow's client gives it: metadata, finished/successful, its logs, and artifacts by name."""

    def __init__(self, task_id, *, finished, successful, root, stderr="", values=None, foreach=None):
        self.id, self.finished, self.successful, self.stderr, self.stdout = task_id, finished, successful, stderr, ""
        self.metadata_dict = {"ds-type": "local", "ds-root": str(root), "repro-env-id": "e" * 64, "other": "x"}
        self.values = dict(values or {})
        if foreach is not None:
            self.values["_foreach_stack"] = foreach

    def __contains__(self, name):
        return name in self.values

    def __getitem__(self, name):
        if name not in self.values:
            raise KeyError(name)
        return _Data(data=self.values[name])


class _Step(list):
    def __init__(self, step_id, tasks):
        super().__init__(tasks)
        self.id = step_id
        self.task = tasks[0] if tasks else None


class _Run(list):
    id = "7"
    system_tags = frozenset({"metaflow_version:2.19.7", "project:demo", "project_branch:user.dev", "runtime:dev"})
    successful, finished = False, True
    created_at = datetime(2026, 1, 2, 3, 4, 5)
    finished_at = None
    _graph_endpoints = ("begin", "finish")  # Metaflow's client: the steps the run's runtime named (@step(start=True))

    def __getitem__(self, key):
        if isinstance(key, str):
            return next(s for s in self if s.id == key)
        return super().__getitem__(key)


@pytest.fixture
def client(monkeypatch, tmp_path):
    """Metaflow's client, answering with the run given to it (the module imports Run inside inspect)."""
    import metaflow

    runs: dict[str, _Run] = {}
    monkeypatch.setattr(metaflow, "namespace", lambda name: None)
    monkeypatch.setattr(metaflow, "Run", lambda pathspec: runs[pathspec])
    return runs


def test_a_run_whose_start_failed_is_read_with_its_values_and_crosses_the_codec(client, tmp_path):
    start = _Task(
        "1",
        finished=False,
        successful=False,
        root=tmp_path / "ds",
        stderr="x" * 5000 + "Traceback: boom",
        values={"alpha": 0.5, "when": datetime(2026, 1, 1), "cfg": {"a": (1, 2)}},
    )
    run = _Run([_Step("begin", [start])])
    client["F/7"] = run
    got = inspect_run.inspect("F/7", {"alpha": "parameter", "when": "parameter", "cfg": "config", "gone": "parameter"})
    assert (got.metaflow_version, got.project, got.project_branch) == ("2.19.7", "demo", "user.dev")
    assert (got.successful, got.finished, got.created_at, got.finished_at) == (False, True, "2026-01-02T03:04:05", "")
    (task,) = got.steps["begin"]
    assert task.task_id == "1" and not task.finished and task.artifacts == {}
    assert task.metadata == {"repro-env-id": "e" * 64}  # only repro's own metadata
    assert task.stderr.endswith("Traceback: boom") and len(task.stderr) == 4000  # the tail of its log
    assert task.foreach == NO_FOREACH
    # a value JSON cannot hold is kept as its text; a config is JSON (tuples as lists); a missing name is left out
    assert got.parameters == {"alpha": 0.5, "when": "2026-01-01 00:00:00"}
    assert got.configs == {"cfg": json.dumps({"a": [1, 2]})}
    # what the host reads back is what was read here
    assert inspection.from_json(got.to_json(), "test") == got


def test_a_foreach_tasks_path_is_its_frames_indexes():
    frames = [SimpleNamespace(index=2), SimpleNamespace(index=0)]
    task = _Task("1", finished=True, successful=True, root="/", foreach=frames)
    assert inspect_run._foreach_path(task) == "2.0"
    assert inspect_run._foreach_path(_Task("1", finished=True, successful=True, root="/", foreach=[])) == NO_FOREACH


def test_an_included_file_is_kept_by_its_sha256_as_the_users_bytes(tmp_path):
    data = b"a,b\n1,2\n"
    stored = tmp_path / "ds" / "include.gz"  # Metaflow keeps an uploaded file gzipped
    stored.parent.mkdir()
    stored.write_bytes(gzip.compress(data))
    descriptor = {"url": f"local://{stored}", "type": "uploader-v1", "is_text": False, "encoding": None}
    got = inspect_run._included(SimpleNamespace(descriptor=descriptor), str(tmp_path / "inputs"))
    sha = hashlib.sha256(data).hexdigest()
    assert got == inspection.IncludedFile(sha256=sha, size=len(data), is_text=False, encoding="utf-8")
    assert (tmp_path / "inputs" / sha).read_bytes() == data
    with pytest.raises(SystemExit, match="IncludeFile value is not an included file: str"):
        inspect_run._included("a plain string", str(tmp_path / "inputs"))
    descriptor["url"] = f"local://{tmp_path / 'missing.gz'}"
    with pytest.raises(SystemExit, match="contents at .*missing.gz are missing"):
        inspect_run._included(SimpleNamespace(descriptor=descriptor), str(tmp_path / "inputs"))


def test_the_command_line_takes_the_run_and_its_parameter_kinds_and_fails_without_a_run(tmp_path):
    """The host runs it as ``python -m metaflow_repro.adapter.inspect_run Flow/run KINDS_JSON INPUTS LINEAGE`` and
    reads a failure from its exit code: a run Metaflow does not know is one, never an empty document."""
    env = {"METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path), "METAFLOW_USER": "dev", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "metaflow_repro.adapter.inspect_run", "NoSuchFlow/1", "{}", str(tmp_path / "in")],
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert "NoSuchFlow" in proc.stderr


def test_a_task_whose_exception_catch_handled_is_successful_and_says_what_it_caught(tmp_path):
    """Issue 26 item 1: Metaflow's ``_success`` is false for it, but the run goes on: the task is read as
    successful (no failure finding follows) with the exception's type, message and the artifact @catch(var=...)
    named (the one holding the very same pickle)."""
    from metaflow.exception import MetaflowExceptionWrapper

    try:
        raise ValueError("x is odd")
    except ValueError as exc:
        wrapper = MetaflowExceptionWrapper(exc)
    task = _Task("2", finished=True, successful=False, root=tmp_path, values={"_catch_exception": wrapper})
    pickle_of = inspection.InspectedArtifact(sha1="a" * 40, size=9, type="E")
    artifacts = {
        "_catch_exception": pickle_of,
        "compute_failed": pickle_of,
        "x": inspection.InspectedArtifact("b" * 40, 1, "int"),
    }
    caught = inspect_run._caught(task, artifacts)
    assert (caught.type, caught.message, caught.var) == ("builtins.ValueError", "x is odd", "compute_failed")
    ok = _Task("3", finished=True, successful=True, root=tmp_path, values={"_catch_exception": wrapper})
    assert inspect_run._caught(ok, artifacts) is None  # a later task that carries it on caught nothing
    assert inspect_run._caught(task, {"x": artifacts["x"]}) is None  # a failed task @catch did not handle
    assert inspect_run._type_name("weird mod.Bad-Name") == "weird_mod.Bad_Name"
    assert inspect_run._type_name("") == "builtins.Exception"


def test_the_start_step_is_the_runs_own_and_metaflow_s_default_where_the_client_cannot_say():
    """Metaflow before custom endpoints (2.16 to early 2.19) has no ``Run._graph_endpoints``: its start
    step is `start`; where the client knows the endpoints, the run's own start step is used."""
    from metaflow_repro.adapter.inspect_run import _start_step

    class _Old:
        pass

    assert _start_step(_Run([])) == "begin"
    assert _start_step(_Old()) == "start"
