"""Drift, the pure parts: how drift lines are named and listed, and drift against a recorded run
(which steps now lock other environments than the run used), from a lock and a record in memory."""

from types import SimpleNamespace

from metaflow_repro.checks.drift import check_against, check_inputs
from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.model.lock import Lock, PlatformLock, StepLock
from metaflow_repro.model.record import InputVia, UpstreamRun
from metaflow_repro.report.document import drift_report, plain
from tests.helpers import make_record, pkg


def test_drift_findings_print_by_kind_and_fill_the_report_in_a_fixed_order():
    found = [
        Finding(Kind.SPEC_DRIFT, "~ six 1 -> 2", step="start"),
        Finding(Kind.RESOLUTION_DRIFT, "+ idna 3.10 (transitive)", step="start", platform="linux-64"),
        Finding(Kind.RUNTIME_DRIFT, "six changed on disk", step="end", env_id="abc"),
        Finding(Kind.AGAINST_DRIFT, "no longer in the flow", step="a"),
        Finding(Kind.INPUT_DRIFT, "reads U/1742 -> now /1790", step="start"),
    ]
    assert [f"{f.kind}: {f.line()}" for f in found] == [
        "spec drift: start: ~ six 1 -> 2",
        "resolution drift: start (linux-64): + idna 3.10 (transitive)",
        "runtime drift: end (env abc): six changed on disk",
        "against drift: a: no longer in the flow",
        "input drift: start: reads U/1742 -> now /1790",
    ]
    report = drift_report(list(reversed(found)))
    assert report.any() and plain(report) == {
        "spec": ["start: ~ six 1 -> 2"],
        "resolution": ["start (linux-64): + idna 3.10 (transitive)"],
        "runtime": ["end (env abc): six changed on disk"],
        "against": ["a: no longer in the flow"],
        "input": ["start: reads U/1742 -> now /1790"],
    }
    assert not drift_report([]).any() and plain(drift_report([])) == {
        "spec": [],
        "resolution": [],
        "runtime": [],
        "against": [],
        "input": [],
    }
    assert drift_report([found[-1]]).any()
    assert not drift_report([Finding(Kind.TASK_FAILED, "x", step="a")]).any()


def lines(findings):
    assert all(f.kind is Kind.AGAINST_DRIFT for f in findings)
    return [f.line() for f in findings]


def _step(name, packages=(), disabled=False, libraries=(("six", "1.0"),), platform="linux-64"):
    pl = PlatformLock(platform, "3.11.7", tuple(packages))
    return StepLock(name, "pypi", "pypi", "3.11", libraries, (), (), disabled, {} if disabled else {platform: pl}), pl


def test_against_a_run_that_used_the_locked_envs_is_no_drift():
    start, pl = _step("start", (pkg("six", "1.0"),))
    flow = SimpleNamespace(lock=Lock("F", "f.py", {"start": start}))
    record = make_record(tasks={"start": {"-": {}}}, env=pl.env_id, envs={pl.env_id: pl})
    assert lines(check_against(flow, record)) == []
    assert lines(check_against(SimpleNamespace(lock=None), record)) == ["no lock file"]


def test_against_names_package_changes_removed_steps_and_disabled_flips():
    start, new_pl = _step("start", (pkg("six", "1.1"), pkg("idna", "3.10")))
    old_pl = PlatformLock("linux-64", "3.11.7", (pkg("six", "1.0"),))
    off, _ = _step("b", disabled=True)
    flow = SimpleNamespace(lock=Lock("F", "f.py", {"start": start, "b": off}))
    record = make_record(
        tasks={"start": {"-": {}}, "b": {"-": {}}, "gone": {"-": {}}}, env=old_pl.env_id, envs={old_pl.env_id: old_pl}
    )
    assert lines(check_against(flow, record)) == [
        "start: + idna 3.10 (transitive)",
        "start: ~ six 1.0 -> 1.1 (stated)",
        "b: disabled False -> True",
        "gone: no longer in the flow",
    ]


def test_against_a_run_whose_env_the_record_does_not_describe_names_the_env_ids():
    start, pl = _step("start", (pkg("six", "1.1"),))
    flow = SimpleNamespace(lock=Lock("F", "f.py", {"start": start}))
    record = make_record(tasks={"start": {"-": {}}}, env="9" * 64, envs={})
    assert lines(check_against(flow, record)) == ["start: + six 1.1 (stated)"]
    # same packages, another interpreter: the python line says so
    other = PlatformLock("linux-64", "3.11.6", (pkg("six", "1.1"),))
    record = make_record(tasks={"start": {"-": {}}}, env=other.env_id, envs={other.env_id: other})
    assert lines(check_against(flow, record)) == ["start: ~ python 3.11.6 -> 3.11.7"]


def test_against_ignores_platforms_the_lock_does_not_have_and_equal_disabled_steps():
    start, pl = _step("start", (pkg("six", "1.1"),), platform="osx-arm64")
    off, _ = _step("b", disabled=True)
    flow = SimpleNamespace(lock=Lock("F", "f.py", {"start": start, "b": off}))
    bare = PlatformLock("linux-64", "3.11.7", ())
    record = make_record(tasks={"start": {"-": {}}}, env=bare.env_id, envs={bare.env_id: bare})
    assert lines(check_against(flow, record)) == []
    from metaflow_repro.model.record import StepRecord

    disabled = make_record(tasks={"b": {"-": {}}})
    disabled.steps["b"] = StepRecord(spec_id="s", env_id="disabled", disabled=True, tasks={})
    assert lines(check_against(flow, disabled)) == []


def test_same_packages_but_another_file_is_named_by_file_and_hash():
    new = pkg("six", "1.0", sha="f" * 64)
    start, _ = _step("start", (new,))
    flow = SimpleNamespace(lock=Lock("F", "f.py", {"start": start}))
    old = pkg("six", "1.0")
    old_pl = PlatformLock("linux-64", "3.11.7", (old,))
    record = make_record(tasks={"start": {"-": {}}}, env=old_pl.env_id, envs={old_pl.env_id: old_pl})
    assert lines(check_against(flow, record)) == [
        "start: ~ six 1.0: file six-1.0-py3-none-any.whl (aaaaaaaaaaaa) -> six-1.0-py3-none-any.whl (ffffffffffff) (stated)"
    ]


def _record_env(pl):
    return pl


def test_against_uses_the_platform_the_run_used_and_reports_every_step_in_order():
    linux = PlatformLock("linux-64", "3.11.7", (pkg("six", "1.1"),))
    mac = PlatformLock("osx-arm64", "3.11.7", (pkg("six", "1.2"),))
    then_mac = PlatformLock("osx-arm64", "3.11.7", (pkg("six", "1.0"),))
    same, same_pl = _step("same", (pkg("idna", "3.10"),))
    empty = PlatformLock("linux-64", "3.11.7", ())
    steps = {
        "gone_first": None,
        "same": same,
        "mac": StepLock(
            "mac", "pypi", "pypi", "3.11", (("six", "1.2"),), (), (), False, {"linux-64": linux, "osx-arm64": mac}
        ),
        "bare": StepLock("bare", "pypi", "pypi", "3.11", (), (), (), False, {"linux-64": empty}),
    }
    flow = SimpleNamespace(lock=Lock("F", "f.py", {k: v for k, v in steps.items() if v is not None}))
    from metaflow_repro.model.record import StepRecord

    record = make_record(
        tasks={"gone_first": {"-": {}}, "same": {"-": {}}, "mac": {"-": {}}, "bare": {"-": {}}},
        envs={same_pl.env_id: _record_env(same_pl), then_mac.env_id: _record_env(then_mac)},
    )
    record.steps["same"] = StepRecord(spec_id="s", env_id=same_pl.env_id, disabled=False, tasks={})
    record.steps["mac"] = StepRecord(spec_id="s", env_id=then_mac.env_id, disabled=False, tasks={})
    record.steps["bare"] = StepRecord(spec_id="s", env_id="9" * 64, disabled=False, tasks={})
    assert (
        lines(check_against(flow, record))
        == [
            "gone_first: no longer in the flow",
            "mac: ~ six 1.0 -> 1.2 (stated)",  # the osx-arm64 lock, not this machine's linux-64 one
            f"bare: env 999999999999 -> {empty.env_id[:12]}",  # no package lines: the env ids say it
        ]
    )


def test_input_drift_names_each_reading_step_and_both_run_ids_only_for_runs_found_as_latest():
    latest = UpstreamRun("UpstreamFlow", "1742", ("start", "train"), via=InputVia.LATEST_SUCCESSFUL)
    pinned = UpstreamRun("Other", "7", ("start",), via=InputVia.PATHSPEC)
    record = make_record(tasks={"start": {"-": {}}}, inputs={latest.ref: latest, pinned.ref: pinned})
    found = check_inputs(record, {latest.ref: "1790"})
    assert [f"{f.kind}: {f.line()}" for f in found] == [
        "input drift: start: reads UpstreamFlow/1742 -> now /1790",
        "input drift: train: reads UpstreamFlow/1742 -> now /1790",
    ]
    assert [(f.subject, f.old, f.new) for f in found] == [("UpstreamFlow", "1742", "1790")] * 2
    assert check_inputs(record, {latest.ref: "1742"}) == []
    gone = check_inputs(record, {latest.ref: None})
    assert [f.line() for f in gone] == [
        "start: reads UpstreamFlow/1742 -> now no latest_successful_run of UpstreamFlow",
        "train: reads UpstreamFlow/1742 -> now no latest_successful_run of UpstreamFlow",
    ]


def test_an_unreachable_store_skips_input_drift_with_a_note_instead_of_failing_the_gate(tmp_path):
    """`repro drift` / `--repro-drift` without --against read the flow's latest record for input
    drift; a store that cannot be read says so and the other drift kinds still run (no exit 3)."""
    from types import SimpleNamespace

    from metaflow_repro.errors import InfraError
    from metaflow_repro.operations.run import latest_record

    class Down:
        uri = "s3://bucket/x"

        def get_bytes(self, key):
            raise InfraError("connection refused")

        def __getattr__(self, name):
            raise InfraError("connection refused")

    said = []
    flow = SimpleNamespace(name="F", path=tmp_path / "f.py", decl=SimpleNamespace(project=None))
    assert latest_record(Down(), flow, identity="F@f.py", log=said.append) is None
    assert said and "input drift not checked" in said[0] and "s3://bucket/x" in said[0]
