"""metaflow_repro.model.outcomes: a step a switch did not take, and a caught exception, read from a record."""

from dataclasses import replace

from metaflow_repro.model.outcomes import caught, caught_message, not_taken, switch_taken
from metaflow_repro.model.record import Caught, RunStatus
from tests.helpers import make_record

#: start -> route, a switch to a (-> a2 -> end) or b (-> end)
GRAPH = {"start": ("route",), "route": ("a", "b"), "a": ("a2",), "a2": ("end",), "b": ("end",), "end": ()}


def _run(ran, status="success"):
    steps = {s: ({"-": {}} if s in ran else {}) for s in GRAPH}
    return replace(make_record(tasks=steps, status=status), graph=GRAPH)


def test_a_step_without_tasks_after_a_switch_that_took_another_branch_is_not_taken():
    took_b = _run({"start", "route", "b", "end"})
    assert switch_taken(took_b, "a") == ("route", "b")
    assert switch_taken(took_b, "a2") == ("route", "b")  # further down the branch not taken
    assert switch_taken(took_b, "b") is None and switch_taken(took_b, "end") is None  # they ran
    assert not_taken(took_b) == {"a": ("route", "b"), "a2": ("route", "b")}
    took_a = _run({"start", "route", "a", "a2", "end"})
    assert not_taken(took_a) == {"b": ("route", "a")}


def test_in_a_failed_run_a_step_that_did_not_run_is_not_put_down_to_a_switch():
    failed = _run({"start", "route", "b"}, status="failed")
    assert failed.status is RunStatus.FAILED
    assert not_taken(failed) == {}  # a branch beside a failed one may have been left out: not a switch
    assert switch_taken(_run({"start"}), "route") is None  # nothing after start ran: no switch took a branch


def test_a_record_without_a_graph_names_no_switch():
    record = make_record(tasks={"start": {"-": {}}, "x": {}, "end": {"-": {}}})
    assert not_taken(record) == {}


def test_caught_exceptions_of_a_step_one_line_each():
    record = make_record(tasks={"start": {"-": {}}, "each": {"0": {}, "1": {}}, "end": {"-": {}}})
    each = record.steps["each"]
    tasks = dict(each.tasks)
    tasks["1"] = replace(tasks["1"], caught=Caught("builtins.ValueError", "two is refused", "failure"))
    record = replace(record, steps={**record.steps, "each": replace(each, tasks=tasks)})
    assert caught(record, "each") == [("1", Caught("builtins.ValueError", "two is refused", "failure"))]
    assert caught_message(record, "each") == "caught ValueError: two is refused (in failure) [task 1]"
    assert caught_message(record, "start") == "" and caught(record, "nope") == []
    assert Caught("mod.Err", "m").describe() == "caught mod.Err: m"
