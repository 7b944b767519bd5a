"""The pytest session (metaflow_repro.pytest.session) runs each collected flow once, with the settings of the
flow's own pyproject.toml: a bad one is that flow's bad input (exit code 2), never an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

FLOW = "from metaflow import FlowSpec  # the session below knows its declarations\n"


class _Declared:
    """Hands the session the declarations of ``path`` (as collection would read them): no flow is imported."""

    def __init__(self, path: Path):
        self.path = path.resolve()

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        from metaflow_repro.env.flowfile import FlowDeclarations
        from metaflow_repro.pytest.session import session_of

        session_of(config)._declarations[str(self.path)] = FlowDeclarations(self.path, "F", ("start", "end"), (), {})


def test_a_flows_own_bad_settings_fail_that_flow_as_bad_input(pytester, monkeypatch):
    monkeypatch.setenv("REPRO_HOME", str(pytester.path / "home"))
    (pytester.path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")  # the rootdir's: fine
    sub = pytester.mkdir("sub")
    (sub / "pyproject.toml").write_text("[tool.repro]\nconda-source = 5\n")
    path = sub / "flow.py"
    path.write_text(FLOW)
    result = pytester.inline_run("--repro", "-p", "no:cacheprovider", str(sub), plugins=[_Declared(path)])
    failed = [r for r in result.getreports("pytest_runtest_logreport") if r.failed]
    assert failed, "the flow's items fail"
    text = "\n".join(str(r.longrepr) for r in failed)
    assert "conda-source" in text and "internal error" not in text
