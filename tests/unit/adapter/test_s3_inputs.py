"""The host side of metaflow.S3 reads (adapter/s3_inputs.py): tasks' reports checked as untrusted and
merged per step, the bytes kept within the budget only when they are the bytes the step read, the
replay's serving folder, and each URL asked again for input drift. S3 is moto's server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from pathlib import Path

import boto3
import pytest

from metaflow_extensions.repro.plugins import protocol as p
from metaflow_repro.adapter import s3_inputs
from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.model.record import S3Input, StepS3
from metaflow_repro.settings import Home
from tests.helpers import make_record

TRAIN, LABELS = b"row0,0\nrow1,1\n", b"a b c\n"


def _entry(url, data=None, size=None, etag="e"):
    return {
        p.S3_URL: url,
        p.S3_VERSION: "",
        p.S3_ETAG: etag,
        p.S3_SIZE: len(data) if data is not None else size,
        p.S3_SHA256: hashlib.sha256(data).hexdigest() if data is not None else "",
    }


def _task(*entries, count=None):
    report = {p.S3_OBJECTS: list(entries), p.S3_COUNT: len(entries) if count is None else count}
    return {"metadata": {p.META_S3_READS: json.dumps(report)}}


@pytest.fixture
def bucket(s3_server):
    name = "s3-inputs-" + uuid.uuid4().hex[:8]
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="train.csv", Body=TRAIN)
    s3.put_object(Bucket=name, Key="labels.txt", Body=LABELS)
    return name


def test_reports_merge_per_step_each_url_once_the_read_bytes_over_an_info(tmp_path):
    info = _entry("s3://bkt/x", size=5)
    read = _entry("s3://bkt/x", TRAIN)
    steps = s3_inputs.merge(
        {"start": [_task(info), _task(read, _entry("s3://bkt/y", LABELS), count=7)], "end": [{"metadata": {}}]},
        "run F/1",
    )
    assert list(steps) == ["start"]  # a step that read nothing is absent
    assert [o.url for o in steps["start"].objects] == ["s3://bkt/x", "s3://bkt/y"]
    assert steps["start"].objects[0].sha256 == read[p.S3_SHA256]
    assert steps["start"].count == 2 + 5  # 5 more the second task did not list


@pytest.mark.parametrize(
    "metadata,error,problem",
    [
        ("{not json", InfraError, "unreadable JSON"),
        (json.dumps({p.S3_OBJECTS: "everything"}), BadInput, "objects"),
        (json.dumps([1]), BadInput, "run F/1"),
    ],
)
def test_a_task_report_is_checked_as_untrusted(metadata, error, problem):
    with pytest.raises(error) as err:
        s3_inputs.merge({"start": [{"metadata": {p.META_S3_READS: metadata}}]}, "run F/1")
    assert problem in str(err.value) and "run F/1" in str(err.value)


def test_an_object_the_record_cannot_hold_is_counted_not_listed_and_the_run_still_records():
    """A URL S3 takes but the record refuses (a key with a control character), or a hostile entry, must not
    keep a finished run from being recorded: it is counted among what the step read, never listed."""
    entries = [
        _entry("file:///etc/passwd", TRAIN),
        {**_entry("s3://bkt/x", TRAIN), p.S3_SIZE: -1},
        _entry("s3://bkt/a\tb", TRAIN),
        _entry("s3://Old_Bucket/k", TRAIN),  # an older bucket name: capitals and '_' were allowed
    ]
    steps = s3_inputs.merge({"start": [{"metadata": {p.META_S3_READS: json.dumps({p.S3_OBJECTS: entries})}}]}, "F/1")
    assert [o.url for o in steps["start"].objects] == ["s3://Old_Bucket/k"]
    assert steps["start"].count == 4


def test_bytes_are_kept_within_the_budget_and_only_when_they_are_what_the_step_read(bucket, s3_server, tmp_path):
    home, said = Home(tmp_path / "home"), []
    train, labels = f"s3://{bucket}/train.csv", f"s3://{bucket}/labels.txt"
    changed = S3Input(labels, "e", len(LABELS), hashlib.sha256(b"what the step read").hexdigest())
    steps = {"start": StepS3((S3Input(train, "e", len(TRAIN), hashlib.sha256(TRAIN).hexdigest()), changed), 2)}
    kept = s3_inputs.keep(steps, home, budget=len(TRAIN), log=said.append)
    assert [o.stored for o in kept["start"].objects] == [True, False]
    assert home.input_blob(hashlib.sha256(TRAIN).hexdigest()).read_bytes() == TRAIN
    assert said == [f"{labels} changed since the step read it: recorded (sha256, ETag), its bytes not kept"]
    small = s3_inputs.keep(steps, Home(tmp_path / "h2"), budget=len(TRAIN) - 1, log=said.append)
    assert [o.stored for o in small["start"].objects] == [False, False]
    assert f"{train} ({len(TRAIN)} bytes) is past input-max-bytes: recorded (sha256, ETag), not kept" in said


def test_the_serving_folder_holds_each_verified_object_and_a_manifest_the_task_reads(tmp_path):
    from metaflow_extensions.repro.plugins.s3_reads import load_manifest

    sha = hashlib.sha256(TRAIN).hexdigest()
    o = S3Input("s3://bkt/train.csv", "e", len(TRAIN), sha, stored=True)
    record = replace(make_record(), s3_inputs={"start": StepS3((o,), 1)})
    blob = tmp_path / "blob"
    blob.write_bytes(TRAIN)
    assert s3_inputs.serving_folder(record, {}, tmp_path / "none") is None
    folder = s3_inputs.serving_folder(record, {o.url: blob}, tmp_path / "serve")
    served = load_manifest(str(folder))
    assert list(served) == [o.url] and Path(served[o.url][1]).read_bytes() == TRAIN
    assert (folder / p.S3_COMPLETE).is_file()  # everything the steps read is here: listings may be answered
    partial = replace(record, s3_inputs={"start": StepS3((o,), 150)})  # 149 more read, counted only
    assert s3_inputs.serving_folder(partial, {o.url: blob}, folder) == folder
    assert not (folder / p.S3_COMPLETE).exists()


def test_current_asks_s3_for_each_recorded_url_now(bucket, s3_server):
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    version = s3.put_object(Bucket=bucket, Key="labels.txt", Body=b"new")["VersionId"]
    objects = (
        S3Input(f"s3://{bucket}/train.csv", "e", 1),
        S3Input(f"s3://{bucket}/labels.txt", "e", 1),
        S3Input(f"s3://{bucket}/gone.txt", "e", 1),
    )
    record = replace(make_record(), s3_inputs={"start": StepS3(objects, 3)})
    assert s3_inputs.current(record) == {
        f"s3://{bucket}/train.csv": (hashlib.md5(TRAIN).hexdigest(), ""),  # put before versioning: "null"
        f"s3://{bucket}/labels.txt": (hashlib.md5(b"new").hexdigest(), version),
        f"s3://{bucket}/gone.txt": None,
    }


def test_current_says_why_an_object_could_not_be_asked_about_and_asks_the_others(bucket, s3_server, monkeypatch):
    """No access, or no S3 at all: that object is 'not checked', never the end of the drift check."""
    from botocore.config import Config

    objects = (S3Input(f"s3://{bucket}/train.csv", "e", 1), S3Input("s3://elsewhere/x", "e", 1))
    record = replace(make_record(), s3_inputs={"start": StepS3(objects, 2)})
    here = boto3.client("s3", endpoint_url=s3_server)
    nowhere = boto3.client(  # a closed port on this machine: the connection is refused at once
        "s3", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1}, connect_timeout=2)
    )
    monkeypatch.setattr(s3_inputs, "_client", lambda name, clients: here if name == bucket else nowhere)
    now = s3_inputs.current(record)
    assert now[f"s3://{bucket}/train.csv"] == (hashlib.md5(TRAIN).hexdigest(), "")
    assert str(now["s3://elsewhere/x"]).startswith("S3 could not be reached")
