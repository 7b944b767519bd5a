"""Strict mode's check (checks/hermetic.py, pure): what a replay cannot give back fails its step, unless
a hermetic-allow glob accepts it; what a task did not list, or did not watch, cannot be accepted."""

from __future__ import annotations

from dataclasses import replace

from metaflow_repro.checks.hermetic import findings
from metaflow_repro.model.findings import Kind
from metaflow_repro.model.record import DataFile, S3Input, StepReads, StepS3
from tests.helpers import make_record


def _record(**changes):
    return replace(make_record(), **changes)


def test_a_run_that_read_only_its_snapshot_passes():
    data = {"data/train.csv": DataFile("a" * 64, 10, ("start",), stored=True)}
    assert findings(_record(data_files=data)) == []


def test_files_read_elsewhere_fail_their_step_unless_a_glob_accepts_every_one():
    record = _record(reads={"train": StepReads(("/etc/myapp/a.ini", "/home/u/x.csv"), 2)})
    (f,) = findings(record)
    assert (f.kind, f.step) == (Kind.NOT_HERMETIC, "train")
    assert "train read 2 file(s) outside the snapshot" in f.message and "/home/u/x.csv" in f.message
    (f,) = findings(record, ("/etc/myapp/*",))
    assert "read 1 file(s)" in f.message and "/etc/myapp/a.ini" not in f.message
    assert findings(record, ("/etc/myapp/*", "/home/u/*.csv")) == []


def test_files_a_task_did_not_list_or_a_step_not_watched_cannot_be_allowed():
    unlisted = _record(reads={"train": StepReads(("/etc/myapp/a.ini",), 5)})
    (f,) = findings(unlisted, ("/etc/myapp/*",))
    assert "read 4 file(s)" in f.message and "and 4 more not listed" in f.message
    (f,) = findings(_record(reads={"old": StepReads(unwatched=True)}), ("*",))
    assert f.step == "old" and "not watched" in f.message


def test_a_data_file_too_large_to_keep_fails_each_step_that_read_it_unless_allowed():
    data = {"data/big.bin": DataFile("b" * 64, 1 << 30, ("start", "train"), stored=False)}
    got = findings(_record(data_files=data))
    assert [f.step for f in got] == ["start", "train"] and "larger than input-max-bytes" in got[0].message
    assert findings(_record(data_files=data), ("data/*",)) == []


def test_a_contacted_endpoint_fails_its_step_unless_a_host_a_host_port_or_a_glob_accepts_it():
    """Issue 23 item 5 for hosts: hermetic-allow entries name a host (every port), a host:port, or globs."""
    reads = StepReads(hosts=("huggingface.co:443", "db.internal:5432"), hosts_count=2, loopback=("127.0.0.1:8765",))
    record = _record(reads={"train": replace(reads, loopback_count=1)})
    (f,) = findings(record)
    assert (f.kind, f.step, f.subject) == (Kind.NOT_HERMETIC, "train", "hosts")
    assert "train contacted 3 network endpoint(s), which a replay cannot give back: " in f.message
    assert "huggingface.co:443, db.internal:5432, 127.0.0.1:8765" in f.message
    (f,) = findings(record, ("huggingface.co", "127.0.0.1:8765"))
    assert "contacted 1 network endpoint(s)" in f.message and "db.internal:5432" in f.message
    assert findings(record, ("*.co", "db.internal:5432", "127.0.0.1:*")) == []
    assert len(findings(record, ("huggingface.co:80", "db.internal", "127.0.0.1:9"))) == 1  # other ports
    v6 = _record(reads={"s": StepReads(loopback=("[::1]:8765",), loopback_count=1)})
    assert findings(v6, ("::1",)) == [] and findings(v6, ("[::1]:8765",)) == [] and findings(v6, ("[::1]:1",))


def test_endpoints_a_task_did_not_list_cannot_be_allowed():
    record = _record(reads={"train": StepReads(hosts=("a.example:443",), hosts_count=3)})
    (f,) = findings(record, ("*",))
    assert "contacted 2 network endpoint(s)" in f.message and "and 2 more not listed" in f.message


def test_an_s3_object_the_snapshot_could_not_keep_fails_its_step_and_a_kept_one_passes():
    kept = S3Input("s3://bucket/small.csv", "e1", 10, "a" * 64, stored=True)
    big = S3Input("s3://bucket/big.parquet", "e2", 10**9, "b" * 64, stored=False)
    record = _record(s3_inputs={"train": StepS3((kept, big), 2)})
    (f,) = findings(record)
    assert (f.kind, f.step, f.subject) == (Kind.NOT_HERMETIC, "train", "s3://bucket/big.parquet")
    assert "metaflow.S3" in f.message and "input-max-bytes" in f.message
    assert findings(record, ("s3://bucket/*.parquet",)) == []
    assert findings(_record(s3_inputs={"train": StepS3((kept,), 1)})) == []


def test_s3_objects_read_past_what_the_record_lists_fail_strict_mode_and_cannot_be_allowed():
    kept = S3Input("s3://bucket/part-0", "e1", 10, "a" * 64, stored=True)
    record = _record(s3_inputs={"train": StepS3((kept,), 150)})
    (f,) = findings(record, ("s3://bucket/*",))
    assert (f.step, f.subject) == ("train", "metaflow.S3") and "149 more object(s)" in f.message
