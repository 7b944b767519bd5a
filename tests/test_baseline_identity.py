"""`latest` is per flow identity (class + flow file, or @project name + branch) wherever a baseline is
looked up, and a baseline of another flow is refused before anything runs unless allowed. Fast: real
stores on disk and real flow files, no Metaflow run."""

from __future__ import annotations

from dataclasses import replace

import pytest

from metaflow_repro.adapter import metaflow as runs
from metaflow_repro.env.engine import open_flow
from metaflow_repro.errors import BadInput
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.operations.run import RunOptions, check_same_identity, load_baseline, run_and_record
from metaflow_repro.settings import load_settings
from metaflow_repro.store import layout, open_store
from tests.helpers import make_record, pkg, write_flow

PROJECT_FLOW = """
    from metaflow import FlowSpec, project, step


    @project(name="music")
    class PlayListFlow(FlowSpec):
        @step
        def start(self):
            self.next(self.end)

        @step
        def end(self):
            pass


    if __name__ == "__main__":
        PlayListFlow()
"""

PLAIN_FLOW = PROJECT_FLOW.replace('    @project(name="music")\n', "").replace(", project", "")


@pytest.fixture
def proj(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    return tmp_path


def _flow(path):
    return open_flow(path, load_settings(path))


def test_a_project_flows_identity_is_its_project_and_branch_as_metaflow_names_it(proj):
    flow = _flow(write_flow(proj / "flows", PROJECT_FLOW, name="p.py", conda_source=None))
    assert flow.decl.project is not None and flow.decl.project.name == "music"
    user = {"METAFLOW_USER": "ann"}
    assert runs.expected_identity(flow, (), user) == "PlayListFlow:@music/user.ann"
    assert runs.expected_identity(flow, ("--branch", "x"), user) == "PlayListFlow:@music/test.x"
    assert runs.expected_identity(flow, ("--branch=x",), user) == "PlayListFlow:@music/test.x"
    assert runs.expected_identity(flow, ("--production",), user) == "PlayListFlow:@music/prod"
    assert runs.expected_identity(flow, ("--production", "--branch", "x"), user) == "PlayListFlow:@music/prod.x"
    plain = _flow(write_flow(proj / "flows", PLAIN_FLOW, name="a.py", conda_source=None))
    assert plain.decl.project is None
    assert runs.expected_identity(plain, (), user) == "PlayListFlow:flows/a.py"


def _file(store, identity, run_id, flow="PlayListFlow"):
    """A record of ``identity`` filed in ``store`` with its ``latest`` pointer (as push leaves them)."""
    env = PlatformLock("linux-64", "3.11.7", (pkg("six", "1.16.0"),))
    record = make_record(run_id, flow=flow, env=env.env_id, envs={env.env_id: env})
    steps = {k: replace(st, spec_id="5" * 64) for k, st in record.steps.items()}
    record = replace(record, identity=identity, steps=steps, code_sha256="c" * 64, lock_sha256="d" * 64)
    folder = layout.flow_dir(flow, identity)
    store.put_bytes(layout.record(folder, run_id), record.to_json().encode())
    store.put_bytes(layout.latest(folder), run_id.encode())
    return record


def test_latest_is_the_latest_run_of_the_flows_own_identity(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    _file(store, "PlayListFlow:flows/a.py", "1")
    _file(store, "PlayListFlow:@music/prod", "2")
    _file(store, "PlayListFlow:@music/user.ann", "3")
    got = lambda identity: load_baseline(store, "PlayListFlow", identity, "latest").run_id  # noqa: E731
    assert got("PlayListFlow:@music/user.ann") == "3"
    assert got("PlayListFlow:@music/prod") == "2"
    assert got("PlayListFlow:flows/a.py") == "1"
    # a flow file with no run of its own never gets another identity's latest ...
    with pytest.raises(BadInput, match=r"no runs of flow PlayListFlow:flows/b\.py"):
        got("PlayListFlow:flows/b.py")
    with pytest.raises(BadInput, match="no runs of flow PlayListFlow:@music/test.x"):
        got("PlayListFlow:@music/test.x")
    # ... only the class's latest of a version 1 store (records keyed by class name alone)
    _file(store, "", "4")
    assert got("PlayListFlow:flows/b.py") == "4"
    assert got("PlayListFlow:@music/user.ann") == "3"


def test_a_baseline_of_another_flow_is_refused_unless_allowed():
    base = replace(make_record("1", flow="PlayListFlow"), identity="PlayListFlow:flows/a.py")
    with pytest.raises(BadInput, match="different flows.*flows/a.py.*flows/b.py.*--repro-allow-other-flow"):
        check_same_identity(base, "PlayListFlow", "PlayListFlow:flows/b.py", False)
    check_same_identity(base, "PlayListFlow", "PlayListFlow:flows/b.py", True)
    check_same_identity(base, "PlayListFlow", "PlayListFlow:flows/a.py", False)
    with pytest.raises(BadInput, match="different flows"):  # another class: never, allowed or not
        check_same_identity(base, "OtherFlow", "OtherFlow:flows/a.py", True)


def test_the_pipeline_refuses_another_flows_baseline_before_locking_or_running(proj, tmp_path):
    """What `pytest --repro --repro-baseline REF` does: the refusal comes before any lock or run."""
    store = open_store((tmp_path / "store").as_uri())
    _file(store, "PlayListFlow:flows/a.py", "1")
    b = write_flow(proj / "flows", PLAIN_FLOW, name="b.py", conda_source=None)
    options = RunOptions(store=store.uri, baseline="PlayListFlow@flows~a.py/1", capture=True)
    out = run_and_record(b, options)
    assert out.error_code == 2 and "different flows" in out.error and "--repro-allow-other-flow" in out.error
    assert out.record is None and not (b.parent / "b.repro.lock").exists()  # nothing locked, nothing ran
    # `latest` of b.py is b.py's own: there is none, and a.py's is not taken instead
    out = run_and_record(b, replace(options, baseline="latest"))
    assert out.error_code == 2 and "no runs of flow PlayListFlow:flows/b.py" in out.error


def test_a_project_flows_latest_baseline_is_its_branchs_not_its_files(proj, tmp_path, monkeypatch):
    monkeypatch.setenv("METAFLOW_USER", "ann")
    store = open_store((tmp_path / "store").as_uri())
    p = write_flow(proj / "flows", PROJECT_FLOW, name="p.py", conda_source=None)
    _file(store, "PlayListFlow:flows/p.py", "1")  # the file's identity: not what a @project run is filed as
    _file(store, "PlayListFlow:@music/prod", "2")  # another branch of the project
    out = run_and_record(p, RunOptions(store=store.uri, baseline="latest", capture=True))
    assert out.error_code == 2 and "no runs of flow PlayListFlow:@music/user.ann" in out.error, out.error


def test_project_options_go_before_run_like_configs():
    """`repro run flow.py -- --branch x` reaches Metaflow as a top-level option (where @project reads it)."""
    top, run = runs.split_top_level(["--alpha", "1", "--branch", "x", "--production", "--tag=t", "--branch=y"])
    assert top == ["--branch", "x", "--production", "--branch=y"] and run == ["--alpha", "1", "--tag=t"]
