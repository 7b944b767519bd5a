"""@catch (issue 26 item 1): a task whose exception @catch handled is a successful task to Metaflow (the
run goes on), and its outcome is "caught" (the exception's type, message and the artifact
@catch(var=...) names it in), never "failed": in pytest, the reports, the record and the card. A replay
that catches the same type in the same task is identical; one that raises nothing, or another type, is
different and says so. scenarios/catch_switch.py, for real: `pytest --repro`, a folder store, replays
from an empty REPRO_HOME with no network."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metaflow_repro.model.record import Caught
from tests.catch_switch_runs import EXPECTED, NAME, record_with_pytest, replay_cold_offline, repro_report
from tests.helpers import SCENARIOS, run_flow

pytestmark = pytest.mark.slow

CAUGHT = "caught ValueError: the values are not sorted (in compute_failed)"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, repro_home):
    return record_with_pytest(tmp_path_factory.mktemp("catch"))


def test_a_caught_exception_passes_pytest_as_caught_and_is_recorded(recorded):
    out = recorded.proc.stdout
    assert recorded.proc.returncode == 0, out[-4000:] + recorded.proc.stderr[-2000:]
    assert f"{NAME}.py::{EXPECTED['flow']}::compute CAUGHT" in out
    assert recorded.junit["compute"] == ("passed", "")
    assert "1 caught" in out.splitlines()[-1] and "failed" not in out.splitlines()[-1]
    assert CAUGHT in out  # the warning naming the exception
    # the record: a successful run whose compute task caught a ValueError, kept in compute_failed
    task = recorded.record.steps["compute"].tasks["-"]
    assert recorded.record.status == "success"
    assert task.caught == Caught("builtins.ValueError", "the values are not sorted", "compute_failed")
    assert all(t.caught is None for s, st in recorded.record.steps.items() if s != "compute" for t in st.tasks.values())


def test_reports_show_the_step_as_caught_and_the_flow_as_passed(recorded):
    assert recorded.steps["compute"]["outcome"] == "caught"
    assert recorded.steps["compute"]["message"] == CAUGHT
    assert recorded.report["status"] == "passed"
    report = repro_report(recorded)  # `repro report`: the same from the record alone
    compute = next(s for s in report["steps"] if s["step"] == "compute")
    assert (compute["outcome"], compute["message"], report["status"]) == ("caught", CAUGHT, "passed")
    md = (recorded.proj / "reports" / "repro-report.md").read_text()
    assert "**compute**: caught" in md and CAUGHT in md


def test_the_run_replays_identical_cold_and_offline(recorded, tmp_path):
    proc = replay_cold_offline(recorded, tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert f"result: {EXPECTED['replay']}" in proc.stdout
    assert "replay failed" not in text and "Bootstrapping" not in text


@pytest.mark.parametrize(
    "raises,detail",
    [
        ("none", "@catch caught ValueError (the values are not sorted) in {a}; in {b} the step raised none"),
        ("KeyError", "@catch caught ValueError in {a}, KeyError in {b} ('values')"),
    ],
)
def test_a_replay_that_raises_nothing_or_another_type_is_different_and_says_so(recorded, tmp_path, raises, detail):
    proc = replay_cold_offline(recorded, tmp_path, COMPUTE_RAISES=raises)
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-4000:]
    assert "result: different" in proc.stdout
    replayed = proc.stdout.split(f" as {EXPECTED['flow']}/")[1].split()[0]
    want = detail.format(a=recorded.record.ref, b=f"{EXPECTED['flow']}/{replayed}")
    assert f"compute/-.compute_failed: different: {want}" in proc.stdout, proc.stdout[-4000:]


READ_CARD = """
import sys
from metaflow import Task, namespace
from metaflow.cards import get_cards
namespace(None)
print("\\n".join(card.get() for card in get_cards(Task(sys.argv[1]), type="repro")))
"""


def test_the_card_shows_the_caught_exception_of_the_task_that_caught_it(tmp_path, repro_home):
    run = run_flow(
        SCENARIOS / f"{NAME}.py", tmp_path / "mf", args=("--with", "card:type=repro"), env={"REPRO_FROZEN": "1"}
    )
    assert run.code == 0, run.text[-3000:]
    info = run.inspect(EXPECTED["flow"])
    cards = {}
    for step in ("compute", "end"):
        pathspec = f"{EXPECTED['flow']}/{run.run_id}/{step}/{info['steps'][step][0]['id']}"
        proc = subprocess.run(
            [sys.executable, "-c", READ_CARD, pathspec], env=run.env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        cards[step] = proc.stdout
    assert f"<td class='caught'>{CAUGHT}</td>" in cards["compute"]
    assert "class='caught'" not in cards["end"]  # carries compute_failed on, caught nothing itself
