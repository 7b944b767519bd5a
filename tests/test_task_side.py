"""Code that runs inside tasks and step environments must compile on every Python 3.7–3.13."""

import subprocess

import pytest

from tests.helpers import ROOT, require_python

TASK_SIDE = sorted((ROOT / "metaflow_extensions").rglob("*.py")) + sorted(
    (ROOT / "metaflow_repro" / "comparators").glob("*.py")
)


@pytest.mark.parametrize("minor", ["3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13"])
def test_task_side_code_compiles(minor, tmp_path):
    exe = require_python(minor)
    code = (
        "import py_compile, sys\n"
        "for f in sys.argv[1:]:\n"
        "    py_compile.compile(f, cfile=%r + '/x.pyc', doraise=True)\n" % str(tmp_path)
    )
    proc = subprocess.run([str(exe), "-c", code, *map(str, TASK_SIDE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(TASK_SIDE) >= 10
