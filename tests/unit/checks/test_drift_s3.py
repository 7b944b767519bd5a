"""Input drift of the objects a recorded run's steps read with metaflow.S3, the pure comparison: an object
whose ETag or version id differs now (or that is gone) is one finding per reading step, naming the URL."""

from dataclasses import replace

from metaflow_repro.checks.drift import compare_s3_inputs
from metaflow_repro.model.findings import Kind
from metaflow_repro.model.record import S3Input, StepS3
from tests.helpers import make_record

TRAIN = S3Input("s3://bucket/train.parquet", "a1b2c3d4e5f6", 10, "a" * 64)
LABELS = S3Input("s3://bucket/labels.txt", "0f0f0f", 3, "b" * 64, version="v1")


def _record(**steps):
    return replace(make_record(), s3_inputs={step: StepS3(objects, len(objects)) for step, objects in steps.items()})


def test_a_changed_etag_is_input_drift_naming_the_step_the_url_and_both_etags():
    record = _record(start=(TRAIN, LABELS), end=(TRAIN,))
    found = compare_s3_inputs(record, {TRAIN.url: ("9f8e7d6c5b4a", ""), LABELS.url: ("0f0f0f", "v1")})
    assert [f"{f.kind}: {f.line()}" for f in found] == [
        "input drift: start: s3://bucket/train.parquet changed (ETag a1b2c3… -> 9f8e7d…)",
        "input drift: end: s3://bucket/train.parquet changed (ETag a1b2c3… -> 9f8e7d…)",
    ]
    assert (found[0].kind, found[0].subject, found[0].old, found[0].new) == (
        Kind.INPUT_DRIFT,
        TRAIN.url,
        TRAIN.etag,
        "9f8e7d6c5b4a",
    )


def test_a_new_version_and_a_gone_object_are_drift_and_an_unchanged_or_unasked_one_is_not():
    record = _record(start=(TRAIN, LABELS))
    assert compare_s3_inputs(record, {TRAIN.url: (TRAIN.etag, ""), LABELS.url: ("0f0f0f", "v1")}) == []
    assert compare_s3_inputs(record, {}) == []  # not asked (e.g. the URL was left out): nothing said
    (by_version,) = compare_s3_inputs(record, {LABELS.url: ("0f0f0f", "v2")})
    assert by_version.line() == "start: s3://bucket/labels.txt changed (version v1 -> v2)"
    assert (by_version.old, by_version.new) == ("v1", "v2")
    (gone,) = compare_s3_inputs(record, {TRAIN.url: None})
    assert gone.line() == "start: s3://bucket/train.parquet is gone" and gone.new == ""


def test_an_object_s3_would_not_say_anything_of_fails_the_gate_naming_why_without_stopping_the_others():
    record = _record(start=(TRAIN, LABELS))
    found = compare_s3_inputs(
        record, {TRAIN.url: "S3 refused the question: AccessDenied", LABELS.url: ("0f0f0f", "v1")}
    )
    assert [f.line() for f in found] == [
        "start: s3://bucket/train.parquet could not be checked (S3 refused the question: AccessDenied)"
    ]
