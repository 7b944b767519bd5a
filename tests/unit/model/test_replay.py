"""A replay's RunResult (metaflow_repro.model.replay) crosses the container boundary as a document the host checks
like any other untrusted input: its codec round-trips and refuses what it must."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.replay import RESULT_SCHEMA, RunFailure, RunResult, parse_result
from metaflow_repro.model.validate import Invalid
from tests.helpers import make_record


def a_result(**kw) -> RunResult:
    return RunResult(
        Executor(ExecutorKind.DOCKER, "sha256:" + "a" * 64),
        recorded="runs/F@abc/7/record.json",
        saved="/tmp/repro-home/records/F/7.json",
        workdir="/tmp/w",
        exit_code=1,
        failure=RunFailure("ValueError: no", step="start", task="F/7/start/1", logs="python f.py logs", output="..."),
        **kw,
    )


def test_a_run_result_round_trips():
    result = a_result()
    assert parse_result(result.to_json().encode(), "result") == result
    refused = RunResult(Executor(), error="store s3://b: no such run", error_code=2)
    assert parse_result(refused.to_json().encode(), "result") == refused


def test_the_record_travels_through_the_store_not_the_document():
    result = a_result().with_record(make_record())
    assert "record" not in result.to_dict()
    assert parse_result(result.to_json().encode(), "r").record is None


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda d: d.update(verdict="identical"), "unknown key 'verdict'"),
        (lambda d: d.update(schema="repro.other"), "'schema'"),
        (lambda d: d.update(recorded="runs/../../etc/passwd"), "'recorded'"),
        (lambda d: d.update(recorded="/abs/key"), "'recorded'"),
        (lambda d: d.update(exit_code="0"), "'exit_code' must be int"),
        (lambda d: d.update(exit_code=True), "'exit_code' must be int"),
        (lambda d: d.update(error_code=10**6), "'error_code'"),
        (lambda d: d["executor"].update(kind="elsewhere"), "'executor.kind'"),
        (lambda d: d["failure"].update(step=["x"]), "'failure.step' must be str"),
        (lambda d: d["failure"].update(extra=1), "unknown key 'failure.extra'"),
        (lambda d: d.pop("executor"), "missing key 'executor'"),
    ],
)
def test_a_hostile_result_is_refused_naming_the_field(change, named):
    doc = a_result().to_dict()
    change(doc)
    with pytest.raises(Invalid) as err:
        parse_result(json.dumps(doc).encode(), "the container's result")
    assert named in str(err.value) and str(err.value).startswith("the container's result: ")


@pytest.mark.parametrize("data", [b"not json", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_a_result_that_is_not_a_document_is_refused(data):
    with pytest.raises(Invalid, match="result"):
        parse_result(data, "result")


def test_an_oversized_result_is_refused_before_it_is_parsed():
    doc = a_result().to_dict()
    doc["failure"]["output"] = "x" * (9 << 20)
    with pytest.raises(Invalid, match="too large"):
        parse_result(json.dumps(doc).encode(), "result")


def test_result_schema_is_named():
    assert a_result().to_dict()["schema"] == RESULT_SCHEMA
    assert replace(a_result(), failure=None).to_dict()["failure"] is None


@pytest.mark.parametrize("identity", ["F:flows/a.py", "F:@proj/user.alice", "F:a.py"])
def test_every_record_key_a_replay_can_write_is_accepted(identity):
    """A flow in a subfolder or under @project has a `~` in its record key (store.layout.identity_key)."""
    from metaflow_repro.store import layout

    key = layout.record(layout.flow_dir("F", identity), "17")
    result = replace(a_result(), recorded=key)
    assert parse_result(result.to_json().encode(), "result").recorded == key
