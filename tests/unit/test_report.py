"""The report document and its renderings (pure): a flow's part built from a record, a lock, a
comparison and drift; the document rendered as terminal text, Markdown, JSON and HTML.

The renderings are compared with files under tests/unit/golden/ (a report is read by people and
by tools: any change to it should be seen in review). After an intended change, regenerate them
with `REPRO_UPDATE_GOLDEN=1 pytest tests/unit/test_report.py` and review the diff."""

import json
import os
from pathlib import Path

import pytest

from repro.model.lock import Lock, PlatformLock, StepLock
from repro.model.record import PickleCheck
from repro.report import render
from repro.runs.compare import ArtifactResult, Comparison
from repro.runs.drift import Drift
from tests.helpers import make_record, pkg

GOLDEN = Path(__file__).parent / "golden"


def sample_flow() -> dict:
    pl = PlatformLock("linux-64", "3.11.7", (pkg("six", "1.16.0"), pkg("requests", "2.32.3")))
    lock = Lock("DemoFlow", "demo_flow.py", {
        "start": StepLock("start", "pypi", "pypi", "3.11", (("six", "1.16.0"),), (), (), False, {"linux-64": pl}),
        "b": StepLock("b", "pypi", "none", "3.11", (), (), (), True, {}),
        "end": StepLock("end", "pypi", "pypi", "3.11", (), (), (), False, {"linux-64": pl})})
    record = make_record("7", {"start": {"-": {"x": ("1" * 40, 5, "int")}}, "b": {"-": {}},
                               "end": {"0": {}, "1": {}}}, env=pl.env_id, checks=[
        PickleCheck("start", "-", "x", "e" * 64, ("b", "end"), "ok"),
        PickleCheck("start", "-", "model", "f" * 64, ("end",), "warning", "loads, but versions differ", "six 1.16.0 -> 1.17.0"),
        PickleCheck("start", "-", "frame", "f" * 64, ("end",), "fails", "No module named 'six'", "")])
    comparison = Comparison("DemoFlow/6", "DemoFlow/7", (
        ArtifactResult("start", "-", "x", "identical"), ArtifactResult("start", "-", "y", "equivalent", "close"),
        ArtifactResult("end", "0", "z", "different", "value: 1 != 2 <&>")))
    drift = Drift(spec=["start: ~ six 1.16.0 -> 1.17.0"], runtime=["end (env abc): six changed on disk"])
    outcomes = {"end": {"outcome": "failed", "message": "boom <in> end"}, "start": {"outcome": "passed"}}
    return render.flow_report("DemoFlow", "demo_flow.py", record=record, lock=lock, outcomes=outcomes,
                              comparison=comparison, drift=drift, baseline="DemoFlow/latest")


def doc() -> dict:
    same = render.flow_report("SameFlow", "same.py", record=make_record("3", flow="SameFlow"),
                              comparison=Comparison("SameFlow/2", "SameFlow/3", (ArtifactResult("start", "-", "x", "identical"),)))
    not_run = render.flow_report("NotRunFlow", "not_run.py", outcomes={"start": {"outcome": "failed", "message": "no env"}})
    d = render.document([sample_flow(), same, not_run, render.flow_report("EmptyFlow", "empty.py")])
    d["generated_at"] = "2026-01-02T03:04:05+00:00"
    return d


def test_flow_report_is_plain_data_with_every_step_and_check():
    f = sample_flow()
    pl_env = f["steps"][0]["env_id"]
    assert len(pl_env) == 64
    assert f["flow"] == "DemoFlow" and f["file"] == "demo_flow.py" and f["run"] == "F/7" and f["status"] == "failed"
    assert f["steps"] == [
        {"step": "start", "env_id": pl_env, "python": "3.11.7", "packages": 2, "tasks": 1, "fingerprints": ["fp-start--"],
         "outcome": "passed", "message": "", "artifacts": {"identical": 1, "equivalent": 1, "different": 0},
         "pickle": {"ok": 0, "warning": 0, "fails": 0}},
        {"step": "b", "env_id": pl_env, "python": "user's", "packages": 0, "tasks": 1, "fingerprints": ["fp-b--"],
         "outcome": "passed", "message": "", "artifacts": None, "pickle": {"ok": 1, "warning": 0, "fails": 0}},
        {"step": "end", "env_id": pl_env, "python": "3.11.7", "packages": 2, "tasks": 2,
         "fingerprints": ["fp-end-0", "fp-end-1"], "outcome": "failed", "message": "boom <in> end",
         "artifacts": {"identical": 0, "equivalent": 0, "different": 1}, "pickle": {"ok": 1, "warning": 1, "fails": 1}},
    ]
    assert f["pickle"][1] == {"step": "start", "task": "-", "artifact": "model", "reader_env": "f" * 64,
                              "reader_steps": ["end"], "status": "warning", "detail": "loads, but versions differ",
                              "static": "six 1.16.0 -> 1.17.0"}
    assert len(f["pickle"]) == 3
    assert f["baseline"]["ref"] == "DemoFlow/latest" and f["baseline"]["same"] is False
    assert f["baseline"]["results"][2] == {"step": "end", "task": "0", "name": "z", "verdict": "different",
                                           "detail": "value: 1 != 2 <&>"}
    assert f["drift"] == {"spec": ["start: ~ six 1.16.0 -> 1.17.0"], "resolution": [],
                          "runtime": ["end (env abc): six changed on disk"], "against": []}


def test_flow_report_without_a_record_follows_the_lock_or_the_outcomes():
    f = render.flow_report("F", "f.py")
    assert f == {"flow": "F", "file": "f.py", "run": None, "status": "failed", "steps": [], "pickle": [],
                 "baseline": None, "drift": None}
    pl = PlatformLock("linux-64", "3.10.13", (pkg("six", "1.0"),))
    lock = Lock("F", "f.py", {"a": StepLock("a", "pypi", "pypi", "3.10", (), (), (), False, {"linux-64": pl}),
                              "off": StepLock("off", "pypi", "none", "3.10", (), (), (), True, {})})
    f = render.flow_report("F", "f.py", lock=lock)
    assert [(s["step"], s["env_id"], s["python"], s["packages"], s["tasks"], s["outcome"]) for s in f["steps"]] == [
        ("a", pl.env_id, "3.10.13", 1, 0, "not run"), ("off", "disabled", "user's", 0, 0, "not run")]
    f = render.flow_report("F", "f.py", outcomes={"x": {"outcome": "passed"}})
    assert [(s["step"], s["env_id"], s["python"], s["outcome"]) for s in f["steps"]] == [("x", "", "", "passed")]
    # a comparison with no result for a step gives that step no counts; the baseline ref defaults to the compared run
    comparison = Comparison("F/1", "F/2", ())
    f = render.flow_report("F", "f.py", record=make_record("2"), comparison=comparison)
    assert f["baseline"] == {"ref": "F/1", "same": True, "results": []} and f["status"] == "passed"
    assert [s["artifacts"] for s in f["steps"]] == [None, None]


@pytest.mark.parametrize("status,outcomes,want", [
    ("success", {}, "passed"), ("failed", {}, "failed"), ("success", {"start": {"outcome": "failed"}}, "failed"),
    ("success", {"start": {"outcome": "not run"}}, "passed")])
def test_flow_status(status, outcomes, want):
    assert render.flow_report("F", "f.py", record=make_record(status=status), outcomes=outcomes)["status"] == want


def test_a_step_without_tasks_did_not_run():
    f = render.flow_report("F", "f.py", record=make_record(tasks={"start": {}}))
    assert f["steps"][0]["outcome"] == "not run"


def test_document_is_versioned_and_valid_against_the_schema():
    import jsonschema

    d = render.document([sample_flow()])
    assert d["schema"] == "repro.report" and d["schema_version"] == 1 and list(d) == [
        "schema", "schema_version", "generated_at", "flows"]
    assert d["generated_at"].endswith("+00:00") and len(d["generated_at"]) == 25
    jsonschema.validate(d, json.loads(render.SCHEMA_FILE.read_text()))
    assert json.loads(render.to_json(d)) == d and render.to_json(d).endswith("}\n")


@pytest.mark.parametrize("fmt,renderer", [("txt", render.terminal), ("md", render.to_markdown),
                                          ("html", render.to_html), ("json", render.to_json)])
def test_renderings_match_the_golden_files(fmt, renderer):
    got = renderer(doc())
    path = GOLDEN / f"report.{fmt}"
    if os.environ.get("REPRO_UPDATE_GOLDEN") == "1":
        path.write_text(got)
    assert got == path.read_text(), f"{path.name} changed; if intended, regenerate (see this module's docstring)"


def test_write_puts_the_three_formats_side_by_side(tmp_path):
    d = doc()
    written = render.write(d, tmp_path / "deep" / "reports", stem="r")
    assert [p.name for p in written] == ["r.md", "r.json", "r.html"]
    assert (tmp_path / "deep" / "reports" / "r.json").read_text() == render.to_json(d)
    assert (tmp_path / "deep" / "reports" / "r.md").read_text() == render.to_markdown(d)
    assert (tmp_path / "deep" / "reports" / "r.html").read_text() == render.to_html(d)
    assert [p.name for p in render.write(d, tmp_path)] == ["repro-report.md", "repro-report.json", "repro-report.html"]


def test_step_rows_fill_gaps_of_documents_from_elsewhere():
    """A document read back from JSON (another repro version, a hand-made one) may lack counts."""
    flow = {"steps": [{"step": "s", "env_id": "", "python": "", "packages": 0, "artifacts": {"identical": 2},
                       "pickle": {"fails": 1}, "outcome": "passed"}]}
    assert render.step_rows(flow) == [["s", "-", "-", 0, "2/0/0", "0/0/1", "passed"]]
