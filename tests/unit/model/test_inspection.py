"""A finished run as read back (``metaflow_repro.model.inspection``): its codec round-trips, and decoding refuses
what the inspecting process (which imported the user's code) must not be trusted with."""

from __future__ import annotations

import json
import subprocess

import pytest

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.adapter import metaflow as adapter
from metaflow_repro.errors import InfraError
from metaflow_repro.model.findings import Kind
from metaflow_repro.model.inspection import IncludedFile, InspectedArtifact, InspectedTask, RunInspection, from_json
from metaflow_repro.model.validate import Invalid
from metaflow_repro.operations.run import task_findings

SHA1 = "a" * 40
SHA256 = "b" * 64


def _run(**changes) -> RunInspection:
    ok = InspectedTask(
        task_id="2",
        successful=True,
        finished=True,
        foreach="-",
        metadata={protocol.META_ENV_ID: "e" * 64, protocol.META_CODE_SHA: "c" * 64},
        ds_type="local",
        ds_root="/tmp/mf",
        artifacts={"value": InspectedArtifact(sha1=SHA1, size=12, type="<class 'int'>")},
    )
    failed = InspectedTask(
        task_id="3", successful=False, finished=True, foreach="1.0", stderr="ValueError: boom", ds_root=None
    )
    fields = dict(
        successful=False,
        finished=True,
        steps={"start": (ok,), "train": (failed,)},
        metaflow_version="2.15.0",
        project="demo",
        project_branch="user.dev",
        created_at="2026-01-01T00:00:00",
        parameters={"alpha": 0.5, "names": ["a", "b"], "with-dash": None},
        include_files={"data": IncludedFile(sha256=SHA256, size=3, is_text=False, encoding="utf-8")},
        configs={"cfg": '{"lr": 0.1}'},
        input_sizes={SHA1: 7},
    )
    fields.update(changes)
    return RunInspection(**fields)  # type: ignore[arg-type]


def test_the_codec_round_trips_and_names_its_keys_in_the_protocol():
    run = _run()
    doc = json.loads(run.to_json())
    assert doc[protocol.RUN_STEPS]["start"][0][protocol.TASK_ARTIFACTS]["value"][protocol.ARTIFACT_SHA1] == SHA1
    assert doc[protocol.RUN_INCLUDE_FILES]["data"][protocol.INCLUDED_SHA256] == SHA256
    assert from_json(run.to_json(), "run F/1") == run
    # what the lineage check reads: each task's report with its repro metadata
    assert run.task_reports()["start"][0][protocol.TASK_METADATA][protocol.META_ENV_ID] == "e" * 64


def _edited(path: tuple, value) -> str:
    doc = json.loads(_run().to_json())
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ((protocol.RUN_SUCCESSFUL,), "yes", "'successful' must be bool"),
        ((protocol.RUN_STEPS,), _DELETE, "missing key 'steps'"),
        (("extra",), 1, "unknown key 'extra'"),
        ((protocol.RUN_STEPS, "../start"), [], "a Python identifier"),
        ((protocol.RUN_STEPS, "start", 0, protocol.TASK_ID), "../2", "'steps.start.0.task_id'"),
        ((protocol.RUN_STEPS, "start", 0, protocol.TASK_FOREACH), "x/y", "foreach index path"),
        ((protocol.RUN_STEPS, "start", 0, protocol.TASK_METADATA, "PATH"), "/bin", "metadata key of repro's"),
        ((protocol.RUN_STEPS, "start", 0, protocol.TASK_METADATA, protocol.META_ENV_ID), 5, "must be str"),
        ((protocol.RUN_STEPS, "start", 0, protocol.TASK_ARTIFACTS, "value", protocol.ARTIFACT_SIZE), -1, ">= 0"),
        ((protocol.RUN_STEPS, "start", 0, protocol.TASK_ARTIFACTS, "value", protocol.ARTIFACT_SHA1), "xyz", "40 hex"),
        ((protocol.RUN_INCLUDE_FILES, "data", protocol.INCLUDED_SHA256), "../../etc/passwd", "64 hex digits"),
        ((protocol.RUN_CONFIGS, "bad name"), "{}", "a parameter name"),
        ((protocol.RUN_INPUT_SIZES, SHA1), "7", "must be int"),
    ],
)
def test_a_malformed_document_is_refused_naming_the_field(path, value, match):
    with pytest.raises(Invalid, match=match) as info:
        from_json(_edited(path, value), "run F/1")
    assert str(info.value).startswith("run F/1: ")


def test_not_json_is_refused():
    with pytest.raises(Invalid, match="not JSON"):
        from_json("Traceback (most recent call last):", "run F/1")


def test_the_host_refuses_a_malformed_document_as_an_infrastructure_error(monkeypatch):
    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 0, _edited((protocol.RUN_STEPS, "start", 0, protocol.TASK_ID), "/"), "")

    monkeypatch.setattr(adapter.subprocess, "run", fake_run)
    with pytest.raises(InfraError, match=r"cannot read run F/1 back from Metaflow: .*'steps.start.0.task_id'"):
        adapter.inspect("F", "1", ())
    good = _run()
    monkeypatch.setattr(
        adapter.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, good.to_json())
    )
    assert adapter.inspect("F", "1", ()) == good


def test_task_findings_name_failed_tasks_and_steps_that_never_ran():
    found = task_findings(_run(), ("start", "train", "end"), finished=False)
    failed = [f for f in found if f.kind is Kind.TASK_FAILED]
    assert [(f.step, f.task) for f in failed] == [("train", "1.0")]
    assert failed[0].message == "task 3 (1.0) failed:\nValueError: boom"
    assert [f.step for f in found if f.kind is Kind.NOT_RUN] == ["end"]
    assert task_findings(_run(), ("start", "train", "end"), finished=True) == failed


def test_a_caught_exception_read_back_round_trips_and_is_checked():
    """Issue 26 item 1: the read-back process reports the exception @catch handled; the host decodes it
    as untrusted input (a class name, a bounded message, an identifier for its artifact)."""
    from metaflow_repro.model.record import Caught

    caught = Caught("builtins.ValueError", "x is odd", "compute_failed")
    task = InspectedTask(task_id="2", successful=True, finished=True, foreach="-", caught=caught)
    found = RunInspection(successful=True, finished=True, steps={"compute": (task,)})
    assert from_json(found.to_json(), "run F/1").steps["compute"][0].caught == caught
    plain = InspectedTask(task_id="3", successful=True, finished=True, foreach="-")
    assert plain.to_dict()[protocol.TASK_CAUGHT] is None
    doc = json.loads(found.to_json())
    doc[protocol.RUN_STEPS]["compute"][0][protocol.TASK_CAUGHT][protocol.CAUGHT_VAR] = "a b"
    with pytest.raises(Invalid, match="identifier"):
        from_json(json.dumps(doc), "run F/1")
