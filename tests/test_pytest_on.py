"""`pytest --repro --repro-on docker|batch`: each flow runs here as usual, is pushed to the store, and is
then replayed there from the store alone (a fresh container; AWS Batch on moto); the flow's items pass
only if that replay is identical. One pytest session per place, shared by the assertions on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import cli

pytestmark = pytest.mark.slow

SAME = """
from metaflow import FlowSpec, pypi, step


class SameFlow(FlowSpec):
    @pypi(packages={"six": "1.16.0"})
    @step
    def start(self):
        import six

        self.words = [six.text_type(w) for w in ("a", "b")]
        self.next(self.end)

    @step
    def end(self):
        self.total = len(self.words)


if __name__ == "__main__":
    SameFlow()
"""

#: a step whose result depends on where it runs: its env lives in REPRO_HOME, the container's is empty and its own
BOXED = """
import sys

from metaflow import FlowSpec, step


class BoxedFlow(FlowSpec):
    @step
    def start(self):
        self.env_folder = sys.prefix
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BoxedFlow()
"""


@dataclass
class Session:
    code: int
    out: str
    folder: Path

    def report(self) -> dict:
        doc = json.loads((self.folder / "reports" / "repro-report.json").read_text())
        return {f["flow"]: f for f in doc["flows"]}

    def outcomes(self) -> dict[str, str]:
        """node id -> passed | failed | skipped (JUnit XML)."""
        found = {}
        for case in ET.parse(self.folder / "junit.xml").getroot().iter("testcase"):
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            found[f"{case.get('classname')}::{case.get('name')}"] = {"failure": "failed", "error": "failed"}.get(
                kind, kind
            )
        return found

    def properties(self, flow: str, name: str) -> dict[str, str]:
        case = next(
            c
            for c in ET.parse(self.folder / "junit.xml").getroot().iter("testcase")
            if c.get("name") == name and str(c.get("classname")).endswith(flow)
        )
        return {str(p.get("name")): str(p.get("value")) for p in case.iter("property")}


def pytest_repro(folder: Path, *args: str, env: dict | None = None, timeout: float = 1800) -> Session:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--repro", *args, "--junitxml=junit.xml"],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    return Session(proc.returncode, proc.stdout + proc.stderr, folder)


def project(folder: Path, lock: bool = True, env: dict | None = None, **flows: str) -> Path:
    """A user's project with these flow files, each locked with ``env`` (committed locks: [lock] passes)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    for name, body in flows.items():
        (folder / name).write_text(textwrap.dedent(body).lstrip())
        if lock:
            r = cli("lock", folder / name, cwd=folder, env=env)
            assert r.code == 0, r.text[-3000:]
    return folder


@pytest.fixture(scope="module")
def on_docker(tmp_path_factory, docker_daemon, base_image):
    """SameFlow and BoxedFlow under `pytest --repro --repro-on docker`, a folder store (mounted)."""
    work = tmp_path_factory.mktemp("on-docker")
    folder = project(work / "proj", **{"same_flow.py": SAME, "boxed_flow.py": BOXED})
    store = work / "store"
    env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    s = pytest_repro(
        folder, "same_flow.py", "boxed_flow.py", "--repro-on", "docker", "--repro-store", store.as_uri(), env=env
    )
    (work / "pytest.log").write_text(s.out)
    return s, store


def test_an_identical_replay_in_a_container_passes_and_the_report_names_docker(on_docker):
    s, store = on_docker
    items = s.outcomes()
    same = {k: v for k, v in items.items() if "SameFlow" in k}
    assert same and set(same.values()) == {"passed"}, s.out[-6000:]
    assert any(k.endswith("[replay]") for k in same)
    flow = s.report()["SameFlow"]
    assert flow["status"] == "passed"
    replay = flow["replay"]
    assert replay["on"] == "docker" and replay["executor"] == "docker" and replay["verdict"] == "identical"
    assert replay["image"].startswith("sha256:") and replay["run"].startswith("SameFlow/")
    assert replay["run"] != flow["run"]  # the replay's own record, in the store
    assert s.properties("SameFlow", "[replay]")["repro_replay_executor"] == "docker"
    assert "replay on docker: ran on docker" in s.out
    # pushed to be replayed, not to become the baseline: no `latest` without --repro-update
    assert list(store.glob("runs/SameFlow@*/*/record.json")) and not list(store.glob("runs/SameFlow@*/latest"))


def test_a_value_that_differs_in_the_container_fails_its_step_naming_it(on_docker):
    s, _ = on_docker
    items = s.outcomes()
    boxed = {k.split("::")[-1]: v for k, v in items.items() if "BoxedFlow" in k}
    assert boxed["start"] == "failed" and boxed["[replay]"] == "failed", s.out[-6000:]
    assert boxed["[lock]"] == "passed" and boxed["[pickle]"] == "passed"
    assert "replayed on docker" in s.out and "-.env_folder differs" in s.out, s.out[-6000:]
    assert "the replay on docker (docker, image sha256:" in s.out and "is different" in s.out
    flow = s.report()["BoxedFlow"]
    assert flow["status"] == "failed" and flow["replay"]["verdict"] == "different"
    assert {(d["step"], d["name"]) for d in flow["replay"]["differences"]} >= {("start", "env_folder")}
    assert s.code == 1


@pytest.mark.parametrize(
    "args,env,named",
    [
        (("--repro-on", "batch"), {}, ["--repro-on batch: the store is file://", "S3 store", "REPRO_STORE"]),
        (
            ("--repro-on", "batch", "--repro-store", "s3://nowhere/x"),
            {"METAFLOW_BATCH_JOB_QUEUE": "", "METAFLOW_DATASTORE_SYSROOT_S3": ""},
            ["--repro-on batch: Metaflow has no METAFLOW_BATCH_JOB_QUEUE", "METAFLOW_DATASTORE_SYSROOT_S3"],
        ),
        (
            ("--repro-on", "docker"),
            {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
            ["--repro-on docker: no Docker daemon answers at unix:///nonexistent/docker.sock", "DOCKER_HOST"],
        ),
    ],
)
def test_a_place_that_cannot_be_reached_is_a_usage_error_naming_what_to_set(tmp_path, args, env, named):
    """Refused before any flow runs: no silent skip, no run that is then not replayed."""
    folder = project(tmp_path / "proj", lock=False, **{"same_flow.py": SAME})
    s = pytest_repro(folder, "same_flow.py", *args, env=env, timeout=300)
    assert s.code == 4, s.out[-3000:]  # pytest's usage error
    for text in named:
        assert text in s.out, s.out[-3000:]
    assert not (folder / "same_flow.repro.lock").exists()  # nothing was locked or run


def test_an_identical_replay_on_batch_passes_and_the_report_names_batch(batch_world, tmp_path):
    env = {**batch_world.env, "REPRO_STORE": batch_world.store("pytest-on")}
    folder = project(tmp_path / "proj", env=env, **{"same_flow.py": SAME})  # an S3 datastore: boto3 in the lock
    s = pytest_repro(folder, "same_flow.py", "--repro-on", "batch", env=env)
    (tmp_path / "pytest.log").write_text(s.out)
    assert s.code == 0, s.out[-6000:]
    assert set(s.outcomes().values()) == {"passed"} and any(k.endswith("[replay]") for k in s.outcomes())
    replay = s.report()["SameFlow"]["replay"]
    assert replay["on"] == "batch" and replay["executor"] == "batch" and replay["verdict"] == "identical"
    assert replay["image"] == batch_world.image
