"""A replay and the objects the recorded steps read with metaflow.S3: the verified bytes laid out for its
tasks (named to them by protocol.S3_INPUTS_VAR), and, up front, the objects it cannot give back."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from metaflow_extensions.repro.plugins import protocol as p
from metaflow_repro.model.record import S3Input, StepS3
from metaflow_repro.operations.replay import _s3_serving
from metaflow_repro.store import layout
from metaflow_repro.store.snapshot import named_objects
from tests.helpers import make_record

DATA = b"a,1\n"
KEPT = S3Input("s3://bkt/train.csv", "e", len(DATA), hashlib.sha256(DATA).hexdigest(), stored=True)
BIG = S3Input("s3://bkt/big.parquet", "f", 1 << 30, "b" * 64)  # past input-max-bytes: recorded only
INFO = S3Input("s3://bkt/schema.json", "g", 3)  # an info: no bytes read, nothing to give back


def test_the_replay_serves_the_kept_objects_and_names_up_front_those_it_cannot_give_back(tmp_path):
    record = replace(make_record(), s3_inputs={"start": StepS3((KEPT, BIG, INFO), 3)})
    blob = tmp_path / "blob"
    blob.write_bytes(DATA)
    said: list[str] = []
    env = _s3_serving(record, {KEPT.url: blob}, tmp_path / "s3-inputs", said.append)
    folder = tmp_path / "s3-inputs"
    assert env == {p.S3_INPUTS_VAR: str(folder)}
    assert json.loads((folder / p.S3_MANIFEST).read_text())[KEPT.url][p.S3_SHA256] == KEPT.sha256
    assert said == [
        "serving 1 S3 object the steps read: s3://bkt/train.csv",
        f"this replay cannot give back {BIG.url} ({BIG.size} bytes): its bytes are not in the snapshot (past "
        "input-max-bytes, or changed before they were kept), so the steps read it from S3 as it is now",
    ]
    assert _s3_serving(make_record(), {}, tmp_path / "none", said.append) == {}  # nothing read: no variable


def test_the_kept_objects_are_named_by_the_record_for_verify_and_gc():
    record = replace(make_record(), s3_inputs={"start": StepS3((KEPT, BIG, INFO), 3)})
    named = named_objects(record)
    assert named[layout.input_blob(KEPT.sha256)] == ("sha256", KEPT.sha256)
    assert layout.input_blob(BIG.sha256) not in named
