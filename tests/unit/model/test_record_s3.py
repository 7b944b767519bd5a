"""The record's ``s3_inputs`` (issue 23 item 3, schema 5): the objects each step read with metaflow.S3
round-trip, are left out when empty, older records read without them, and every field is checked as
untrusted input (URL shape, sha256, size, ETag/version text, step names)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.model.record import S3Input, StepS3, from_json
from tests.unit.model.test_record import make_record

TRAIN = S3Input("s3://bucket/data/train.parquet", "a1b2c3d4e5f6", 10, "a" * 64, stored=True)
INFO = S3Input("s3://bucket/data/schema.json", "0f0f", 3)  # an info: no bytes read
BIG = S3Input("s3://bucket/big.bin", "9f" * 16, 1 << 30, "b" * 64, version="v1")


def test_s3_inputs_round_trip_and_older_records_read_without_them():
    steps = {"start": StepS3((TRAIN, INFO), 2), "train": StepS3((replace(TRAIN, stored=False), BIG), 5)}
    record = replace(make_record(), s3_inputs=steps)
    doc = json.loads(record.to_json())
    assert doc["s3_inputs"]["start"]["objects"][0] == {
        "url": TRAIN.url,
        "etag": TRAIN.etag,
        "size": 10,
        "sha256": "a" * 64,
        "version": "",
        "stored": True,
    }
    back = from_json(json.dumps(doc), "r")
    assert back.s3_inputs == steps
    # one entry per URL: the first step's (start kept train.parquet's bytes), each with its bytes if any
    assert back.s3_objects() == {TRAIN.url: TRAIN, INFO.url: INFO, BIG.url: BIG}
    assert back.s3_not_kept() == [BIG.url]  # the info read no bytes: nothing to keep
    old = json.loads(make_record().to_json())
    assert "s3_inputs" not in old
    old["schema_version"] = 4
    assert from_json(json.dumps(old), "r").s3_inputs == {}


def test_how_an_object_changed_is_said_by_version_then_etag():
    assert TRAIN.changed(TRAIN.etag, "") == ""
    assert TRAIN.changed("9f8e7d6c5b4a", "") == "ETag a1b2c3… -> 9f8e7d…"
    assert BIG.changed(BIG.etag, "v2") == "version v1 -> v2"
    assert BIG.changed("other", "v1") == f"ETag {BIG.etag[:6]}… -> other"  # same version, other bytes
    assert replace(TRAIN, etag="").changed("x", "") == ""  # an ETag never recorded cannot be compared


GOOD = {"url": "s3://bucket/k", "etag": "e", "size": 1, "sha256": "a" * 64}


@pytest.mark.parametrize(
    "value,problem",
    [
        ({"start": {"objects": [{**GOOD, "url": "http://bucket/k"}]}}, "an s3://bucket/key URL"),
        ({"start": {"objects": [{**GOOD, "url": "s3://bad bucket/k"}]}}, "an s3://bucket/key URL"),
        ({"start": {"objects": [{**GOOD, "url": "s3://bucket/"}]}}, "an s3://bucket/key URL"),
        ({"start": {"objects": [{**GOOD, "url": "s3://bucket/a\nb"}]}}, "an s3://bucket/key URL"),
        ({"start": {"objects": [{**GOOD, "sha256": "zz"}]}}, "64 hex digits"),
        ({"start": {"objects": [{**GOOD, "size": -1}]}}, "a size in bytes"),
        ({"start": {"objects": [{**GOOD, "etag": "a b"}]}}, "an ETag"),
        ({"start": {"objects": [{**GOOD, "version": "\x1b[31m"}]}}, "a version id"),
        ({"start": {"objects": [{**GOOD, "sha256": "", "stored": True}]}}, "no sha256"),
        ({"start": {"objects": [GOOD, GOOD]}}, "each URL once"),
        ({"start": {"objects": [GOOD], "count": 0}}, "at least the number of objects listed"),
        ({"start": {"objects": [{**GOOD, "secret": 1}]}}, "unknown key"),
        ({"../x": {"objects": []}}, "s3_inputs"),
    ],
)
def test_the_objects_a_record_says_a_step_read_are_checked(value, problem):
    doc = json.loads(make_record().to_json())
    doc["s3_inputs"] = value
    with pytest.raises(BadInput) as err:
        from_json(json.dumps(doc), "store/record.json")
    assert problem in str(err.value) and "store/record.json" in str(err.value)
