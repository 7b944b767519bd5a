"""The pickle matrix through `pytest --repro`, with a package of our own in two versions (local
find-links folder only: the names cannot come from the public index)."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import cli, make_wheel

pytestmark = pytest.mark.slow

PKG = "repro-t15-pickled-thing"  # a name of our own; resolved from the local folder only
THING = """
class Thing:
    def __init__(self, n):
        self.n = n
"""

FLOW = """
from metaflow import FlowSpec, step, pypi

class PickleFlow(FlowSpec):
    @pypi(packages={{"{pkg}": "1.0"}})
    @step
    def start(self):
        import repro_t15_pickled_thing
        self.thing = repro_t15_pickled_thing.Thing(3)
        self.next(self.end)

    {reader}
    @step
    def end(self):
        pass

if __name__ == "__main__":
    PickleFlow()
"""


@pytest.fixture
def project(pytester, local_index, monkeypatch):
    links = Path(local_index["REPRO_FIND_LINKS"])
    make_wheel(links, PKG, "1.0", body=THING)
    make_wheel(links, PKG, "2.0", body=THING)
    for key, value in local_index.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(pytester.path / "mf"))
    pytester.makefile(".toml", pyproject='[tool.repro]\nconda-source = "pypi"\n')
    return pytester


def outcomes(pytester, reader: str) -> tuple[dict, str]:
    """{item name: "passed" | "failed" | ...} and pytest's output, for the flow with ``reader``
    as the `end` step's decorator."""
    path = pytester.path / "pickle_flow.py"
    path.write_text(FLOW.format(pkg=PKG, reader=reader))
    lock = cli("lock", path)
    assert lock.code == 0, lock.text
    assert f"{PKG}" in (pytester.path / "pickle_flow.repro.lock").read_text()
    r = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--repro", "pickle_flow.py", "--junitxml", "junit.xml", "-rA", timeout=900
    )
    items = {}
    for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        items[case.get("name")] = kinds[0] if kinds else "passed"
    return items, r.stdout.str()


def test_an_artifact_that_cannot_be_unpickled_downstream_fails_the_pickle_item(project):
    """Pins `[pickle]`'s failure: an artifact a downstream env cannot unpickle fails the
    `[pickle]` item itself (not only the reading step), naming the artifact and the reason."""
    items, text = outcomes(project, reader="")  # `end` has no decorator: the package is not there
    assert items["[pickle]"] == "failure", (items, text[-3000:])
    assert items["start"] == "passed" and items["[lock]"] == "passed"
    assert items["end"] == "failure"  # the reading step fails too
    assert "1 artifact(s) cannot be unpickled where they are read" in text
    assert "start/-.thing in end" in text and "No module named 'repro_t15_pickled_thing'" in text
    assert f"{PKG} 1.0 -> not installed" in text  # the static check names the missing distribution


def test_loads_but_versions_differ_is_a_warning_not_a_pass_or_a_failure(project):
    """Pins the static check (module -> distribution version): the artifact unpickles fine in
    `end`, whose env has the package at another version; that must be a `warning` saying
    "loads, but versions differ" and naming both versions, and no item fails."""
    items, text = outcomes(project, reader=f'@pypi(packages={{"{PKG}": "2.0"}})')
    assert set(items.values()) == {"passed"}, (items, text[-3000:])
    assert "ReproPickleWarning" in text
    assert f"PickleFlow: start.thing read by end: loads, but versions differ; {PKG} 1.0 -> 2.0" in text, text[-3000:]
    assert "PickleFlow.end: artifact 'thing' (from start/-) loads with a warning" in text


def test_the_same_version_downstream_is_ok_and_silent(project):
    items, text = outcomes(project, reader=f'@pypi(packages={{"{PKG}": "1.0"}})')
    assert set(items.values()) == {"passed"}, items
    assert "versions differ" not in text and "ReproPickleWarning" not in text


INCLUDE_FLOW = """
from metaflow import FlowSpec, IncludeFile, step

class IncludeFlow(FlowSpec):
    table = IncludeFile("table", default="table.csv")

    @step
    def start(self):
        self.rows = self.table.count("\\n")
        self.next(self.end)

    @step
    def end(self):
        pass

if __name__ == "__main__":
    IncludeFlow()
"""


def test_artifacts_whose_classes_live_in_metaflow_load_in_every_reader(tmp_path):
    """Pins: pickle checks put the code package's `.mf_code` on sys.path, as tasks do; without it an
    IncludeFile's value (a metaflow class) is reported as 'cannot be unpickled' in every step."""
    import json

    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    (folder / "table.csv").write_text("a,b\n1,2\n")
    (folder / "include_flow.py").write_text(INCLUDE_FLOW)
    store = tmp_path / "store"
    env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    r = cli("run", folder / "include_flow.py", "--store", store.as_uri(), env=env, cwd=folder)
    assert r.code == 0, r.text[-3000:]
    record = json.loads(next(store.glob("runs/**/record.json")).read_text())
    checks = {(c["artifact"], tuple(c["reader_steps"])): c["status"] for c in record["pickle_checks"]}
    assert any(name == "table" for name, _ in checks), checks
    assert set(checks.values()) == {"ok"}, checks
