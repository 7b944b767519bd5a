"""The report document and its renderings (pure): a flow's part built from a record, a lock, a
comparison and drift; the document rendered as terminal text, Markdown, JSON and HTML.

The renderings are compared with files under tests/unit/report/golden/ (a report is read by people and
by tools: any change to it should be seen in review). After an intended change, regenerate them
with `REPRO_UPDATE_GOLDEN=1 pytest tests/unit/report/test_render.py` and review the diff."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from metaflow_repro.checks.compare import ArtifactResult, Comparison, ReplayCheck, Verdict
from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.lock import Lock, PlatformLock, StepLock
from metaflow_repro.model.record import DataFile, PickleCheck, PickleStatus, RunStatus, StepReads
from metaflow_repro.report import render
from metaflow_repro.report.document import StepOutcome, build_flow, document, plain, replay_report
from tests.helpers import make_record, pkg

GOLDEN = Path(__file__).parent / "golden"


def flow_report(flow, file, record=None, lock=None, outcomes=None, comparison=None, drift=None, baseline=None):
    """The flow's part of a report as plain data (outcomes as {step: {"outcome", "message"}})."""
    typed = {k: (StepOutcome(v["outcome"]), v.get("message", "")) for k, v in (outcomes or {}).items()}
    return plain(build_flow(flow, file, record, lock, typed, comparison, drift, baseline))


def sample_flow() -> dict:
    return plain(sample_flow_typed())


def sample_flow_typed():
    pl = PlatformLock("linux-64", "3.11.7", (pkg("six", "1.16.0"), pkg("requests", "2.32.3")))
    lock = Lock(
        "DemoFlow",
        "demo_flow.py",
        {
            "start": StepLock("start", "pypi", "pypi", "3.11", (("six", "1.16.0"),), (), (), False, {"linux-64": pl}),
            "b": StepLock("b", "pypi", "none", "3.11", (), (), (), True, {}),
            "end": StepLock("end", "pypi", "pypi", "3.11", (), (), (), False, {"linux-64": pl}),
        },
    )
    record = make_record(
        "7",
        {"start": {"-": {"x": ("1" * 40, 5, "int")}}, "b": {"-": {}}, "end": {"0": {}, "1": {}}},
        env=pl.env_id,
        checks=[
            PickleCheck("start", "-", "x", "e" * 64, ("b", "end"), PickleStatus.OK),
            PickleCheck(
                "start",
                "-",
                "model",
                "f" * 64,
                ("end",),
                PickleStatus.WARNING,
                "loads, but versions differ",
                "six 1.16.0 -> 1.17.0",
            ),
            PickleCheck("start", "-", "frame", "f" * 64, ("end",), PickleStatus.FAILS, "No module named 'six'", ""),
        ],
    )
    comparison = Comparison(
        "DemoFlow/6",
        "DemoFlow/7",
        (
            ArtifactResult("start", "-", "x", Verdict.IDENTICAL),
            ArtifactResult("start", "-", "y", Verdict.EQUIVALENT, "close"),
            ArtifactResult("end", "0", "z", Verdict.DIFFERENT, "value: 1 != 2 <&>"),
        ),
        code_a="c0de" * 16,  # the baseline ran other code
        code_b="beef" * 16,
    )
    drift = [
        Finding(Kind.SPEC_DRIFT, "~ six 1.16.0 -> 1.17.0", step="start"),
        Finding(Kind.RUNTIME_DRIFT, "six changed on disk", step="end", env_id="abc"),
    ]
    outcomes = {"end": {"outcome": "failed", "message": "boom <in> end"}, "start": {"outcome": "passed"}}
    typed = {k: (StepOutcome(v["outcome"]), v.get("message", "")) for k, v in outcomes.items()}
    return build_flow("DemoFlow", "demo_flow.py", record, lock, typed, comparison, drift, "DemoFlow/latest")


def doc():
    """A whole document (typed), with a fixed time stamp."""

    def typed(name, file, **kw):
        outcomes = {k: (StepOutcome(v["outcome"]), v.get("message", "")) for k, v in kw.pop("outcomes", {}).items()}
        return build_flow(name, file, outcomes=outcomes, **kw)

    same = typed(
        "SameFlow",
        "same.py",
        record=replace(
            make_record("3", flow="SameFlow"),
            reads={  # issue 23: read outside the snapshot, contacted hosts (loopback apart)
                "start": StepReads(("/home/u/extra.csv",), 2, False, ("huggingface.co:443",), 1, ("127.0.0.1:8765",), 1)
            },
            data_files={"data/big.bin": DataFile("e" * 64, 300 << 20, ("start",), stored=False)},
        ),
        comparison=Comparison("SameFlow/2", "SameFlow/3", (ArtifactResult("start", "-", "x", Verdict.IDENTICAL),)),
    )
    not_run = typed("NotRunFlow", "not_run.py", outcomes={"start": {"outcome": "failed", "message": "no env"}})
    demo = sample_flow_typed()
    boxed = typed(
        "BoxedFlow",
        "boxed.py",
        record=make_record("4", flow="BoxedFlow"),
        outcomes={"start": {"outcome": "failed", "message": "replayed on docker (BoxedFlow/5): -.x differs: 1 != 2"}},
        replay=replay_report(
            ReplayCheck(
                on="docker",
                verdict="different",
                executor=Executor(ExecutorKind.DOCKER, "sha256:" + "d" * 64),
                run="BoxedFlow/5",
                comparison=Comparison(
                    "BoxedFlow/4",
                    "BoxedFlow/5",
                    (
                        ArtifactResult("start", "-", "x", Verdict.DIFFERENT, "value: 1 != 2"),
                        ArtifactResult("end", "-", "y", Verdict.IDENTICAL),
                    ),
                ),
            )
        ),
    )
    d = document([demo, same, not_run, typed("EmptyFlow", "empty.py"), boxed])
    return replace(d, generated_at="2026-01-02T03:04:05+00:00")


def test_flow_report_is_plain_data_with_every_step_and_check():
    f = sample_flow()
    pl_env = f["steps"][0]["env_id"]
    assert len(pl_env) == 64
    assert f["flow"] == "DemoFlow" and f["file"] == "demo_flow.py" and f["run"] == "F/7" and f["status"] == "failed"
    assert f["steps"] == [
        {
            "step": "start",
            "env_id": pl_env,
            "python": "3.11.7",
            "packages": 2,
            "tasks": 1,
            "fingerprints": ["fp-start--"],
            "outcome": "passed",
            "message": "",
            "artifacts": {"identical": 1, "equivalent": 1, "different": 0},
            "pickle": {"ok": 1, "warning": 1, "fails": 1},
        },  # the checks of what start writes
        {
            "step": "b",
            "env_id": pl_env,
            "python": "user's",
            "packages": 0,
            "tasks": 1,
            "fingerprints": ["fp-b--"],
            "outcome": "passed",
            "message": "",
            "artifacts": None,
            "pickle": {"ok": 0, "warning": 0, "fails": 0},
        },
        {
            "step": "end",
            "env_id": pl_env,
            "python": "3.11.7",
            "packages": 2,
            "tasks": 2,
            "fingerprints": ["fp-end-0", "fp-end-1"],
            "outcome": "failed",
            "message": "boom <in> end",
            "artifacts": {"identical": 0, "equivalent": 0, "different": 1},
            "pickle": {"ok": 0, "warning": 0, "fails": 0},
        },
    ]
    assert f["pickle"][1] == {
        "step": "start",
        "task": "-",
        "artifact": "model",
        "reader_env": "f" * 64,
        "reader_steps": ["end"],
        "status": "warning",
        "detail": "loads, but versions differ",
        "static": "six 1.16.0 -> 1.17.0",
    }
    assert len(f["pickle"]) == 3
    assert f["baseline"]["ref"] == "DemoFlow/latest" and f["baseline"]["same"] is False
    assert f["baseline"]["code_changed"] is True and f["baseline"]["code"] == "c0de" * 16
    assert f["baseline"]["results"][2] == {
        "step": "end",
        "task": "0",
        "name": "z",
        "verdict": "different",
        "detail": "value: 1 != 2 <&>",
    }
    assert f["drift"] == {
        "spec": ["start: ~ six 1.16.0 -> 1.17.0"],
        "resolution": [],
        "runtime": ["end (env abc): six changed on disk"],
        "against": [],
        "input": [],
    }


def test_flow_report_without_a_record_follows_the_lock_or_the_outcomes():
    f = flow_report("F", "f.py")
    assert f == {
        "flow": "F",
        "file": "f.py",
        "run": None,
        "status": "failed",
        "steps": [],
        "pickle": [],
        "baseline": None,
        "drift": None,
        "store": None,
        "replay": None,
        "outside": [],
        "data_files": [],
    }
    pl = PlatformLock("linux-64", "3.10.13", (pkg("six", "1.0"),))
    lock = Lock(
        "F",
        "f.py",
        {
            "a": StepLock("a", "pypi", "pypi", "3.10", (), (), (), False, {"linux-64": pl}),
            "off": StepLock("off", "pypi", "none", "3.10", (), (), (), True, {}),
        },
    )
    f = flow_report("F", "f.py", lock=lock)
    assert [(s["step"], s["env_id"], s["python"], s["packages"], s["tasks"], s["outcome"]) for s in f["steps"]] == [
        ("a", pl.env_id, "3.10.13", 1, 0, "not run"),
        ("off", "disabled", "user's", 0, 0, "not run"),
    ]
    f = flow_report("F", "f.py", outcomes={"x": {"outcome": "passed"}})
    assert [(s["step"], s["env_id"], s["python"], s["outcome"]) for s in f["steps"]] == [("x", "", "", "passed")]
    # a comparison with no result for a step gives that step no counts; the baseline ref defaults to the compared run
    comparison = Comparison("F/1", "F/2", ())
    f = flow_report("F", "f.py", record=make_record("2"), comparison=comparison)
    assert f["baseline"] == {"ref": "F/1", "same": True, "results": [], "code_changed": False, "code": None}
    assert f["status"] == "passed"
    assert [s["artifacts"] for s in f["steps"]] == [None, None]


@pytest.mark.parametrize(
    "status,outcomes,want",
    [
        (RunStatus.SUCCESS, {}, "passed"),
        (RunStatus.FAILED, {}, "failed"),
        (RunStatus.SUCCESS, {"start": {"outcome": "failed"}}, "failed"),
        (RunStatus.SUCCESS, {"start": {"outcome": "not run"}}, "failed"),  # a step that never ran is not a pass
        (RunStatus.FAILED, {"start": {"outcome": "expected failure"}}, "expected failure"),
    ],
)
def test_flow_status(status, outcomes, want):
    assert flow_report("F", "f.py", record=make_record(status=status), outcomes=outcomes)["status"] == want


def test_a_step_without_tasks_did_not_run():
    f = flow_report("F", "f.py", record=make_record(tasks={"start": {}}))
    assert f["steps"][0]["outcome"] == "not run"


def test_document_is_versioned_and_valid_against_the_schema():
    import jsonschema

    d = document([sample_flow_typed()]).to_dict()
    assert (
        d["schema"] == "metaflow_repro.report"
        and d["schema_version"] == 1
        and list(d) == ["schema", "schema_version", "generated_at", "flows"]
    )
    assert d["generated_at"].endswith("+00:00") and len(d["generated_at"]) == 25
    jsonschema.validate(d, json.loads(render.SCHEMA_FILE.read_text()))
    assert json.loads(render.to_json(d)) == d and render.to_json(d).endswith("}\n")


@pytest.mark.parametrize(
    "fmt,renderer",
    [("txt", render.terminal), ("md", render.to_markdown), ("html", render.to_html), ("json", render.to_json)],
)
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
    flow = {
        "steps": [
            {
                "step": "s",
                "env_id": "",
                "python": "",
                "packages": 0,
                "artifacts": {"identical": 2},
                "pickle": {"fails": 1},
                "outcome": "passed",
            }
        ]
    }
    assert render.step_rows(flow) == [["s", "-", "-", 0, "2/0/0", "0/0/1", "passed"]]


def test_a_baseline_that_ran_other_code_says_so_in_every_rendering():
    d = doc()
    note = "the baseline DemoFlow/latest ran other code: its code package (c0dec0dec0de) differs"
    assert note in render.terminal(d) and note in render.to_markdown(d) and note in render.to_html(d)
    # a baseline that ran the same code says nothing about code
    same = Comparison("SameFlow/2", "SameFlow/3", (), code_a="a" * 64, code_b="a" * 64)
    f = build_flow("SameFlow", "same.py", record=make_record("3", flow="SameFlow"), comparison=same)
    assert f.baseline is not None and f.baseline.code_changed is False
    one = document([f])
    assert "other code" not in render.terminal(one) + render.to_markdown(one) + render.to_html(one)
    assert Comparison.from_dict(Comparison("F/1", "F/2", (), "a" * 64, "b" * 64).to_dict()).code_changed


@pytest.mark.parametrize(
    "check,status",
    [
        (ReplayCheck("docker", "identical", Executor(ExecutorKind.DOCKER, "sha256:" + "a" * 64), "F/4"), "passed"),
        (ReplayCheck("batch", "equivalent", Executor(ExecutorKind.BATCH, "img:1"), "F/4"), "passed"),
        (ReplayCheck("docker", "replay failed", Executor(ExecutorKind.DOCKER), "F/4", error="boom"), "failed"),
        (ReplayCheck("docker", error="no Docker daemon answers", error_code=3), "failed"),
    ],
)
def test_a_replay_elsewhere_decides_the_flow_and_says_where_it_ran(check, status):
    """--repro-on: every step passed here, but the flow passes only if its replay there did."""
    f = build_flow("F", "f.py", make_record("3", flow="F"), replay=replay_report(check))
    assert f.status.value == status and all(s.outcome is StepOutcome.PASSED for s in f.steps)
    assert f.replay is not None and f.replay.on == check.on and f.replay.error == check.error
    assert f.replay.executor == (check.executor.kind.value if check.executor else None)
    text = render.terminal(document([f]))
    want = (
        f"replay on {check.on}: ran on {check.executor.kind}"
        if check.executor
        else f"replay on {check.on}: did not run"
    )
    assert want in text and "R" + want[1:] in render.to_markdown(document([f]))
    assert (f"recorded as {check.run}" in text) is bool(check.run)


def test_a_document_read_back_from_its_json_renders_the_same():
    """The renderers format what the typed document decides; a JSON report read back is typed again first."""
    d = doc()
    back = json.loads(render.to_json(d))
    assert type(d).from_dict(back) == d
    for renderer in (render.terminal, render.to_markdown, render.to_html, render.to_json):
        assert renderer(back) == renderer(d)
    # a document from elsewhere may lack a field that has a default
    del back["flows"][0]["replay"], back["flows"][1]["baseline"]["code"]
    assert type(d).from_dict(back) == d
