"""A switch (issue 26 item 7): the step a switch did not take is "not run" (pytest skips it with the
reason "the switch in <step> took <branch>", the reports say so), never "passed"; the flow still passes.
A replay that takes another branch is different, and says which branch each run took.
scenarios/catch_switch.py (`route` switches on whether `compute` raised), for real: `pytest --repro`, a
folder store, replays from an empty REPRO_HOME with no network."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.catch_switch_runs import EXPECTED, NAME, record_with_pytest, replay_cold_offline, repro_report

pytestmark = pytest.mark.slow

REASON = "the switch in route took a"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, repro_home):
    return record_with_pytest(tmp_path_factory.mktemp("switch"))


def test_the_branch_not_taken_is_skipped_as_not_run_and_the_flow_passes(recorded):
    out = recorded.proc.stdout
    assert recorded.proc.returncode == 0, out[-4000:] + recorded.proc.stderr[-2000:]
    assert recorded.junit["b"] == ("skipped", f"not run: {REASON}")
    assert recorded.junit["a"] == ("passed", "") and recorded.junit["end"] == ("passed", "")
    assert "SKIPPED" in out and f"not run: {REASON}" in out
    assert recorded.record.steps["b"].tasks == {} and recorded.record.steps["a"].tasks


def test_reports_say_not_run_with_the_switchs_choice(recorded):
    assert (recorded.steps["b"]["outcome"], recorded.steps["b"]["message"]) == ("not run", REASON)
    assert recorded.steps["a"]["outcome"] == "passed" and recorded.report["status"] == "passed"
    report = repro_report(recorded)  # `repro report`: the same from the record alone
    b = next(s for s in report["steps"] if s["step"] == "b")
    assert (b["outcome"], b["message"], report["status"]) == ("not run", REASON, "passed")


def test_a_replay_that_takes_the_other_branch_is_different(recorded, tmp_path):
    proc = replay_cold_offline(recorded, tmp_path, COMPUTE_RAISES="none")  # compute succeeds: route takes b
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-4000:]
    assert "result: different" in proc.stdout
    replayed = f"{EXPECTED['flow']}/" + proc.stdout.split(f" as {EXPECTED['flow']}/")[1].split()[0]
    ref = recorded.record.ref
    assert (
        f"a/*.*: different: step a ran in {ref} but not in {replayed}: the switch in route took b there" in proc.stdout
    )
    assert (
        f"b/*.*: different: step b ran in {replayed} but not in {ref}: the switch in route took a there" in proc.stdout
    )


def test_metaflows_output_says_what_repro_did_with_the_environments(recorded, tmp_path):
    """Issue 26 item 8: no "Bootstrapping conda environment...(this could take a few minutes)", but what
    repro did: a run from an empty REPRO_HOME builds the environment, the next run reuses it."""
    env = {**recorded.env, "REPRO_HOME": str(tmp_path / "home")}
    said = []
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, f"{NAME}.py", "--environment=conda", "run"],
            capture_output=True,
            text=True,
            cwd=recorded.proj,
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        said.append(run.stdout + run.stderr)
    assert not any("Bootstrapping" in text for text in said)
    assert f"repro: 6 step(s), 1 environment(s) built and 0 reused as {NAME}.repro.lock locks them" in said[0]
    assert f"repro: 6 step(s), 1 environment(s) reused as {NAME}.repro.lock locks them" in said[1]
