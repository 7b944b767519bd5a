"""`pytest --repro` never drops a flow silently (issue 26 item 4): a file that defines a FlowSpec subclass
repro cannot read is pytest's own collection error, naming the file and the reason. Only a file with no
FlowSpec subclass at all is left out when a folder is collected; named on the command line, it is an
error too. Each run is a real pytest subprocess (pytester), collecting only."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow

GOOD = """
from metaflow import FlowSpec, step

class GoodFlow(FlowSpec):
    @step(start=True)
    def begin(self):
        self.next(self.finish)

    @step(end=True)
    def finish(self):
        pass
"""

NO_START = """
from metaflow import FlowSpec, step

class HalfFlow(FlowSpec):
    @step
    def first(self):
        self.next(self.end)

    @step
    def end(self):
        pass
"""

BROKEN_IMPORT = """
from metaflow import FlowSpec, step
import no_such_module_anywhere

class BrokenFlow(FlowSpec):
    pass
"""

HELPER = """
from metaflow import FlowSpec

def is_flow(cls):
    return issubclass(cls, FlowSpec)
"""


@pytest.fixture
def project(pytester):
    pytester.makefile(".toml", pyproject='[tool.repro]\nconda-source = "pypi"\n')
    os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(pytester.path / "mf")
    flows = pytester.mkdir("flows")
    for name, body in (("good.py", GOOD), ("half.py", NO_START), ("broken.py", BROKEN_IMPORT), ("util.py", HELPER)):
        (flows / name).write_text(body)
    yield pytester
    os.environ.pop("METAFLOW_DATASTORE_SYSROOT_LOCAL", None)


def _collect(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--repro", "--collect-only", "-q", *args)


def test_a_folder_with_flows_repro_cannot_read_is_a_collection_error_naming_each(project):
    r = _collect(project, "flows")
    out = r.stdout.str()
    assert r.ret != 0, out
    assert "ERROR collecting flows/half.py" in out and "HalfFlow" in out and "no start step" in out, out
    assert "ERROR collecting flows/broken.py" in out and "no_such_module_anywhere" in out, out
    assert "flows/good.py::GoodFlow::begin" in out and "flows/good.py::GoodFlow::finish" in out, out
    assert "util.py" not in out, out  # no FlowSpec subclass at all: not a flow file


def test_a_file_named_on_the_command_line_without_a_flow_says_so(project):
    r = _collect(project, "flows/util.py")
    out = r.stdout.str()
    assert r.ret != 0, out
    assert "ERROR collecting flows/util.py" in out and "no Metaflow flow found" in out, out
