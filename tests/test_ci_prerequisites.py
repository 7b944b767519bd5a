"""The CI=true rule (tests/conftest.py): a test that would skip because a prerequisite is missing
fails instead under CI=true, naming what is missing; elsewhere it skips with the same reason."""

import os
import sys

import pytest

from tests.helpers import ROOT

USER_TEST = """
from tests.helpers import require

def test_needs_a_thing():
    require(None, "the frobnicator (no /opt/frob)")

def test_plain_skip_is_left_alone():
    import pytest
    pytest.skip("not a prerequisite")
"""


@pytest.mark.parametrize("ci", ["true", None])
def test_missing_prerequisites_fail_under_ci_and_skip_elsewhere(pytester, monkeypatch, ci):
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(test_user=USER_TEST)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *sys.path]))
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:repro", "-rA")
    text = r.stdout.str()
    if ci:
        r.assert_outcomes(failed=1, skipped=1)
        assert "CI=true: missing prerequisite: the frobnicator (no /opt/frob)" in text
    else:
        r.assert_outcomes(skipped=2)
        assert "missing prerequisite: the frobnicator (no /opt/frob)" in text
    assert "not a prerequisite" in text
