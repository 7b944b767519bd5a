"""The report document is typed; its JSON schema is generated from those types, never kept by hand."""

import json

import jsonschema

from repro.model.findings import Finding, Kind
from repro.model.record import PickleCheck, PickleStatus, RunStatus
from repro.report import render
from repro.report.document import FlowStatus, StepOutcome, build_flow, document, json_schema, schema_text
from repro.runs.compare import ArtifactResult, Comparison, Verdict


def test_committed_schema_is_the_generated_one():
    """Pins: report.schema.json cannot drift from the dataclasses (regenerate with
    `python -m repro.report.document > repro/report/report.schema.json`)."""
    assert render.SCHEMA_FILE.read_text() == schema_text()


def _doc():
    comparison = Comparison("F/1", "F/2", (ArtifactResult("start", "-", "x", Verdict.IDENTICAL),
                                           ArtifactResult("end", "-", "y", Verdict.DIFFERENT, "1 != 2")))
    findings = [Finding(Kind.SPEC_DRIFT, "~ six 1.16.0 -> 1.17.0", step="start", subject="six", old="1.16.0",
                        new="1.17.0"),
                Finding(Kind.TASK_FAILED, "task 2 failed", step="end", task="-")]
    flow = build_flow("F", "f.py", None, None, {"start": (StepOutcome.PASSED, ""),
                                                "end": (StepOutcome.FAILED, "task 2 failed")},
                      comparison, findings, "F/1")
    return document([flow])


def test_a_built_document_validates_against_the_generated_schema_and_renders():
    doc = _doc()
    data = json.loads(render.to_json(doc))
    jsonschema.validate(data, json_schema())
    flow = data["flows"][0]
    assert flow["status"] == "failed" and [s["outcome"] for s in flow["steps"]] == ["passed", "failed"]
    assert flow["baseline"]["same"] is False and flow["steps"][1]["artifacts"] == {
        "identical": 0, "equivalent": 0, "different": 1}
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
        pickle_checks = (PickleCheck("start", "-", "m", "e1", ("start", "end"), PickleStatus.FAILS, "boom"),
                         PickleCheck("start", "-", "n", "e1", ("end",), PickleStatus.WARNING, "older"))

    flow = build_flow("F", "f.py", Rec(), None, {})
    assert flow.status is FlowStatus.PASSED and flow.steps == [] and len(flow.pickle) == 2
