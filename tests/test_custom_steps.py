"""Flows written as Metaflow 2.19's docs write them: steps named by ``@step(start=True)`` /
``@step(end=True)``, and a flow decorated by a bare ``FlowMutator`` subclass (``@robust_flow`` on the
class, which binds the module's name to the mutator). repro finds the flow as Metaflow does, runs it,
`pytest --repro` passes it, its replay (offline, from an empty REPRO_HOME) is identical, and a run that
reads such a flow's latest successful run finds it again in the replay (issue 26 items 2 and 3).
Real Metaflow runs, a folder store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from metaflow_repro.model.record import InputVia, from_json
from tests.helpers import cli, require_netns, write_flow
from tests.netns import offline

pytestmark = pytest.mark.slow

NO_INDEX = {"REPRO_INDEX_URL": "http://127.0.0.1:9/simple", "UV_OFFLINE": "1"}

CUSTOM = """
    import hashlib

    from metaflow import FlowMutator, FlowSpec, IncludeFile, Parameter, step


    class robust_flow(FlowMutator):
        def pre_mutate(self, mutable_flow):
            mutable_flow.add_parameter("greeting", Parameter("greeting", default="hello"))

        def mutate(self, mutable_flow):
            for name, s in mutable_flow.steps:
                s.add_decorator("pypi", deco_kwargs={"packages": {"six": "1.16.0"}})
                s.add_decorator("retry", deco_kwargs={"times": 1})


    @robust_flow
    class CustomStepsFlow(FlowSpec):
        notes = IncludeFile("notes", default="notes.txt")

        @step(start=True)
        def begin(self):
            import six

            self.six_version = six.__version__
            self.words = [self.greeting, hashlib.sha256(self.notes.encode()).hexdigest()[:8]]
            self.next(self.finish)

        @step(end=True)
        def finish(self):
            self.sentence = " ".join(self.words)


    if __name__ == "__main__":
        CustomStepsFlow()
"""

UPSTREAM = """
    from metaflow import FlowSpec, step


    class TrainFlow(FlowSpec):
        @step(start=True)
        def load(self):
            import time

            self.numbers = [1, 2, int(time.time() * 1000) % 997]
            self.next(self.publish)

        @step(end=True)
        def publish(self):
            self.label = "release-%d" % sum(self.numbers)


    if __name__ == "__main__":
        TrainFlow()
"""

DOWNSTREAM = """
    from metaflow import Flow, FlowSpec, step


    class ServeFlow(FlowSpec):
        @step(start=True)
        def fetch(self):
            run = Flow("TrainFlow").latest_successful_run
            self.upstream = run.pathspec
            self.label = run.data.label
            self.next(self.report)

        @step(end=True)
        def report(self):
            print("read", self.upstream, self.label)


    if __name__ == "__main__":
        ServeFlow()
"""


def _mf_env(tmp_path) -> dict:
    return {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_FROZEN": "0",
    }


def _replay_offline(ref: str, store: str, tmp_path, mf_env: dict):
    """`repro replay` with no network at all and an empty REPRO_HOME: only the folder store."""
    require_netns()
    env = {**os.environ, **mf_env, **NO_INDEX, "REPRO_HOME": str(tmp_path / "empty-home")}
    return offline([sys.executable, "-m", "metaflow_repro", "replay", ref, "--store", store], env, tmp_path)


def test_custom_steps_and_a_bare_mutator_pass_pytest_repro_and_replay_identical_offline(tmp_path):
    mf_env = _mf_env(tmp_path)
    path = write_flow(tmp_path / "proj", CUSTOM)
    (path.parent / "notes.txt").write_text("read me\n")
    store = (tmp_path / "store").as_uri()
    locked = cli("lock", path, env=mf_env, cwd=path.parent)
    assert locked.code == 0, locked.text[-3000:]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--repro", "flow.py", "-v"]
        + ["--repro-update", "--repro-store", store],
        env={**os.environ, **mf_env},
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for item in ("begin", "finish", "[lock]", "[pickle]"):
        assert f"flow.py::CustomStepsFlow::{item} PASSED" in proc.stdout, proc.stdout[-4000:]
    (record_file,) = (tmp_path / "store").glob("runs/*/*/record.json")
    record = from_json(record_file.read_text(), str(record_file))
    assert record.step_order == ("begin", "finish")
    assert record.parameters == {"greeting": "hello"}  # the mutator's Parameter, read from the start step
    assert set(record.include_files) == {"notes"}
    for step in record.steps.values():  # the mutator's @pypi, locked and built
        assert "six" in {p.name for p in record.envs[step.env_id].packages}
    replay = _replay_offline("CustomStepsFlow/latest", store, tmp_path, mf_env)
    assert replay.returncode == 0, replay.stdout[-4000:] + replay.stderr[-3000:]
    assert "result: identical" in replay.stdout, replay.stdout[-4000:]
    # the mutator's Parameter is no "undeclared parameter" to the store's check of the flow file either
    verified = cli("store", "verify", "--store", store, env=mf_env, cwd=path.parent)
    assert verified.code == 0 and "0 with problems" in verified.out, verified.text[-3000:]


def test_a_replay_finds_an_upstream_runs_custom_end_step_again(tmp_path):
    """The downstream read the upstream's latest successful run: Metaflow's client tells it succeeded by
    the `_success` of its end step, named by the run's `_parameters` metadata. The replay's own datastore
    names it too, so the recorded run is found again (offline), though the upstream ran anew since."""
    mf_env = _mf_env(tmp_path)
    proj = tmp_path / "proj"
    up = write_flow(proj, UPSTREAM, name="train.py")
    down = write_flow(proj, DOWNSTREAM, name="serve.py")
    store = (tmp_path / "store").as_uri()

    def upstream_run() -> str:
        ids = tmp_path / f"ids-{len(list(tmp_path.glob('ids-*')))}"
        proc = subprocess.run(
            [sys.executable, str(up), "run", "--run-id-file", str(ids)],
            env={**os.environ, **mf_env},
            cwd=proj,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return ids.read_text().strip()

    first = upstream_run()
    r = cli("run", down, "--store", store, env=mf_env, cwd=proj)
    assert r.code == 0, r.text[-4000:]
    (record_file,) = (tmp_path / "store").glob("runs/ServeFlow@*/*/record.json")
    record = from_json(record_file.read_text(), str(record_file))
    run = record.inputs[f"TrainFlow/{first}"]
    assert run.via is InputVia.LATEST_SUCCESSFUL
    assert {key.split("/")[0] for key, t in run.tasks.items() if "_success" in t.artifacts} == {"publish"}
    upstream_run()  # the upstream's latest is another run now
    replay = _replay_offline(record.ref, store, tmp_path, {**mf_env, "METAFLOW_USER": "a-colleague"})
    assert replay.returncode == 0, replay.stdout[-4000:] + replay.stderr[-3000:]
    assert "result: identical" in replay.stdout, replay.stdout[-4000:]
    assert f"serving TrainFlow/{first}" in replay.stdout + replay.stderr
