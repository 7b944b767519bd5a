"""The collection nodes of `pytest --repro` (metaflow_repro.pytest.items): which items a flow file gives, and
what each item says about a flow's outcome. No flow runs here: the session's outcome and declarations
are filled in before collection (a session reads each flow's once and keeps it), so every item reads
an outcome made by hand, in an in-process pytest run."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaflow_repro.checks.compare import Comparison
from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.operations.run import Outcome
from tests.helpers import make_record

FLOW = "from metaflow import FlowSpec  # the session below knows its declarations\n"


class _Given:
    """A plugin that hands the session its outcome and declarations for ``flow.py`` before collection."""

    def __init__(self, path: Path, outcome: Outcome):
        self.path, self.given = path.resolve(), outcome

    @pytest.hookimpl(trylast=True)  # after repro's own pytest_configure made the session
    def pytest_configure(self, config):
        from metaflow_repro.env.flowfile import FlowDeclarations
        from metaflow_repro.pytest.session import session_of

        session = session_of(config)
        session._declarations[str(self.path)] = FlowDeclarations(self.path, "F", ("start", "end"), (), {})
        session.outcomes[str(self.path)] = self.given


def _run(pytester, monkeypatch, outcome: Outcome, *args: str):
    monkeypatch.setenv("REPRO_HOME", str(pytester.path / "home"))
    path = pytester.makepyfile(flow=FLOW)
    outcome.path = str(path)
    return pytester.inline_run("--repro", "-p", "no:cacheprovider", *args, plugins=[_Given(path, outcome)])


def _by_item(result) -> dict[str, str]:
    return {
        r.nodeid.split("::", 1)[1]: r.outcome
        for r in result.getreports("pytest_runtest_logreport")
        if r.when == "call" or r.skipped
    }


def _failure(result, item: str) -> str:
    (report,) = [r for r in result.getreports("pytest_runtest_logreport") if r.nodeid.endswith(item) and r.failed]
    return str(report.longrepr)


def test_a_flow_gives_one_item_per_step_then_lock_and_pickle_and_a_good_run_passes_them(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, Outcome("", flow="F", steps=["start", "end"], record=make_record()))
    assert _by_item(result) == {
        "F::start": "passed",
        "F::end": "passed",
        "F::[lock]": "passed",
        "F::[pickle]": "passed",
    }
    ids = [call.item.nodeid.split("::", 1)[1] for call in result.getcalls("pytest_itemcollected")]
    assert ids == ["F::start", "F::end", "F::[lock]", "F::[pickle]"]  # graph order, then the flow's own items


def test_baseline_and_replay_items_are_there_only_when_asked_for(pytester, monkeypatch):
    outcome = Outcome("", flow="F", steps=["start", "end"], record=make_record(), baseline="F/1")
    result = _run(pytester, monkeypatch, outcome, "--repro-baseline", "F/1")
    assert _by_item(result)["F::[baseline]"] == "failed"  # asked, but there is no comparison
    assert "F: nothing to compare with F/1: the run failed" in _failure(result, "[baseline]")
    assert "F::[replay]" not in _by_item(result)


def test_a_failed_task_fails_its_step_only_worded_for_the_user_without_a_traceback(pytester, monkeypatch):
    failed = Finding(Kind.TASK_FAILED, "start/1 failed: ZeroDivisionError", step="start")
    result = _run(pytester, monkeypatch, Outcome("", flow="F", record=make_record(), findings=[failed]))
    assert _by_item(result) == {
        "F::start": "failed",
        "F::end": "passed",
        "F::[lock]": "passed",
        "F::[pickle]": "passed",
    }
    text = _failure(result, "::start")
    assert text == "F.start failed:\nstart/1 failed: ZeroDivisionError"  # ReproFailure: its words only
    (start,) = [
        r for r in result.getreports("pytest_runtest_logreport") if r.nodeid.endswith("::start") and r.when == "call"
    ]
    assert ("repro_env_id", "e" * 64) in start.user_properties
    assert ("repro_fingerprint", "fp-start--") in start.user_properties


def test_a_flow_that_could_not_run_fails_its_steps_and_pickle_with_the_reason(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, Outcome("", flow="F", error="metaflow exited 1"))
    assert _by_item(result) == {
        "F::start": "failed",
        "F::end": "failed",
        "F::[lock]": "passed",
        "F::[pickle]": "failed",
    }
    assert _failure(result, "[pickle]") == "F: no run to check: metaflow exited 1"


def test_a_frozen_stale_lock_skips_the_steps_and_fails_lock_with_what_to_do(pytester, monkeypatch):
    drift = Finding(Kind.SPEC_DRIFT, "six==1.16.0 is not in the lock", step="start")
    result = _run(pytester, monkeypatch, Outcome("", flow="F", held=True, findings=[drift]))
    assert _by_item(result) == {
        "F::start": "skipped",
        "F::end": "skipped",
        "F::[lock]": "failed",
        "F::[pickle]": "skipped",
    }
    text = _failure(result, "[lock]")
    assert text.startswith("F: the lock does not hold:\n  spec drift: start: six==1.16.0")
    assert "The lock is frozen (REPRO_FROZEN or --repro-frozen), so the flow did not run" in text


def test_a_baseline_with_differences_names_each(pytester, monkeypatch):
    from metaflow_repro.checks.compare import ArtifactResult, Verdict

    differs = ArtifactResult("start", "-", "x", Verdict.DIFFERENT, "1 != 2")
    same = ArtifactResult("end", "-", "y", Verdict.IDENTICAL)
    comparison = Comparison("F/1", "F/2", (differs, same))
    outcome = Outcome("", flow="F", record=make_record(), comparison=comparison, baseline="F/1")
    result = _run(pytester, monkeypatch, outcome, "--repro-baseline", "F/1")
    assert _failure(result, "[baseline]").startswith("F: 1 artifact(s) differ from F/1:\n  start/-.x: 1 != 2")
