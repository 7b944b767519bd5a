"""The report document is typed; its JSON schema is generated from those types, never kept by hand."""

import json

import jsonschema

from metaflow_repro.checks.compare import ArtifactResult, Comparison, Verdict
from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.model.record import PickleCheck, PickleStatus, RunStatus
from metaflow_repro.report import render
from metaflow_repro.report.document import FlowStatus, StepOutcome, build_flow, document, json_schema, schema_text


def test_committed_schema_is_the_generated_one():
    """Pins: report.schema.json cannot drift from the dataclasses (regenerate with
    `python -m metaflow_repro.report.document > metaflow_repro/report/report.schema.json`)."""
    assert render.SCHEMA_FILE.read_text() == schema_text()


def _doc():
    comparison = Comparison(
        "F/1",
        "F/2",
        (
            ArtifactResult("start", "-", "x", Verdict.IDENTICAL),
            ArtifactResult("end", "-", "y", Verdict.DIFFERENT, "1 != 2"),
        ),
    )
    findings = [
        Finding(Kind.SPEC_DRIFT, "~ six 1.16.0 -> 1.17.0", step="start", subject="six", old="1.16.0", new="1.17.0"),
        Finding(Kind.TASK_FAILED, "task 2 failed", step="end", task="-"),
    ]
    flow = build_flow(
        "F",
        "f.py",
        None,
        None,
        {"start": (StepOutcome.PASSED, ""), "end": (StepOutcome.FAILED, "task 2 failed")},
        comparison,
        findings,
        "F/1",
    )
    return document([flow])


def test_a_built_document_validates_against_the_generated_schema_and_renders():
    doc = _doc()
    data = json.loads(render.to_json(doc))
    jsonschema.validate(data, json_schema())
    flow = data["flows"][0]
    assert flow["status"] == "failed" and [s["outcome"] for s in flow["steps"]] == ["passed", "failed"]
    assert flow["baseline"]["same"] is False and flow["steps"][1]["artifacts"] == {
        "identical": 0,
        "equivalent": 0,
        "different": 1,
    }
    assert flow["drift"]["spec"] == ["start: ~ six 1.16.0 -> 1.17.0"] and flow["drift"]["runtime"] == []
    for text in (render.terminal(doc), render.to_markdown(doc), render.to_html(doc)):
        assert "F" in text and "failed" in text


def test_schema_rejects_a_value_outside_an_enum_and_unknown_fields():
    data = json.loads(render.to_json(_doc()))
    data["flows"][0]["steps"][0]["outcome"] = "green"
    try:
        jsonschema.validate(data, json_schema())
    except jsonschema.ValidationError as exc:
        assert "green" in str(exc)
    else:
        raise AssertionError("an unknown outcome passed the schema")
    data = json.loads(render.to_json(_doc()))
    data["flows"][0]["surprise"] = 1
    try:
        jsonschema.validate(data, json_schema())
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("an unknown field passed the schema")


def test_pickle_counts_per_step_count_only_checks_that_step_reads():
    class Rec:  # the few fields build_flow reads of a RunRecord
        ref, status, envs = "F/3", RunStatus.SUCCESS, {}
        steps = {}
        pickle_checks = (
            PickleCheck("start", "-", "m", "e1", ("start", "end"), PickleStatus.FAILS, "boom"),
            PickleCheck("start", "-", "n", "e1", ("end",), PickleStatus.WARNING, "older"),
        )

    flow = build_flow("F", "f.py", Rec(), None, {})
    assert flow.status is FlowStatus.PASSED and flow.steps == [] and len(flow.pickle) == 2


def _doc_with_pickles():
    from metaflow_repro.model.record import PickleCheck

    checks = (
        PickleCheck("start", "-", "ok_one", "a" * 64, ("start", "end"), PickleStatus.OK, "", ""),
        PickleCheck("start", "-", "_task_ok", "a" * 64, ("end",), PickleStatus.OK, "", ""),
        PickleCheck(
            "start",
            "-",
            "frame",
            "b" * 64,
            ("end",),
            PickleStatus.FAILS,
            "<script>alert(1)</script> No module named 'pandas'",
            "",
        ),
    )
    record = _record(checks)
    flow = build_flow(
        "F",
        "f.py",
        record,
        None,
        {"start": (StepOutcome.PASSED, ""), "end": (StepOutcome.EXPECTED_FAILURE, "boom <b>bold</b>")},
        store="file:///tmp/store",
    )
    return document([flow])


def _record(checks):
    import dataclasses

    from metaflow_repro.model.record import RunRecord

    fields = {f.name for f in dataclasses.fields(RunRecord)}

    class S:
        env_id, tasks, disabled = "c" * 64, {}, False

    class R:  # the attributes build_flow reads; a full RunRecord needs a real run
        flow, run_id, ref, status, envs, pickle_checks = "F", "1", "F/1", RunStatus.SUCCESS, {}, checks
        steps = {"start": S(), "end": S()}
        graph: dict = {}

    assert {"pickle_checks", "steps", "envs", "status", "graph"} <= fields
    return R()


def test_html_is_autoescaped_and_shows_problems_first_without_internal_artifacts():
    doc = _doc_with_pickles()
    html = render.to_html(doc)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert html.index(">frame<") < html.index(">ok_one<")  # the failing check before the ok ones
    assert "_task_ok" not in html and "1 check(s) of Metaflow's internal artifacts not shown" in html
    assert html.index('id="summary"') < html.index('class="flow"') and "file:///tmp/store" in html
    assert "expected-failure" in html and "<details" in html
    md = render.to_markdown(doc)
    assert md.index("frame") < md.index("ok_one") and "_task_ok" not in md and "file:///tmp/store" in md
    view = render.view(doc)
    assert view["flows"][0]["pickle_problems"] == 1 and view["stores"] == ["file:///tmp/store"]


def test_reports_show_a_caught_step_as_caught_and_a_step_the_switch_did_not_take_as_not_run():
    """Issue 26 items 1 and 7, from the record alone (`repro report`): neither fails the flow, while a
    step that did not run in a failed run still does."""
    from dataclasses import replace

    from metaflow_repro.model.record import Caught
    from tests.helpers import make_record

    graph = {"start": ("compute",), "compute": ("route",), "route": ("a", "b"), "a": ("end",), "b": ("end",)}
    record = make_record(tasks={s: ({} if s == "b" else {"-": {}}) for s in [*graph, "end"]})
    compute = record.steps["compute"]
    task = replace(compute.tasks["-"], caught=Caught("builtins.ValueError", "x is odd", "compute_failed"))
    record = replace(record, graph=graph, steps={**record.steps, "compute": replace(compute, tasks={"-": task})})
    flow = build_flow("F", "f.py", record)
    got = {s.step: (s.outcome, s.message) for s in flow.steps}
    assert got["compute"] == (StepOutcome.CAUGHT, "caught ValueError: x is odd (in compute_failed)")
    assert got["b"] == (StepOutcome.NOT_RUN, "the switch in route took a")
    assert got["a"] == got["end"] == (StepOutcome.PASSED, "")
    assert flow.status is FlowStatus.PASSED
    # pytest's decisions (not run, with the reason) and a failed run: a step that did not run fails it
    failed = build_flow("F", "f.py", replace(record, status=RunStatus.FAILED))
    assert {s.step: s.outcome for s in failed.steps}["b"] is StepOutcome.NOT_RUN and failed.status is FlowStatus.FAILED
