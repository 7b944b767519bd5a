"""What a task notes of the objects its step reads with metaflow.S3 (s3_reads.py), and how a replay's task
answers those reads from its inputs folder: Metaflow's real S3 client against moto's server on 127.0.0.1.
The wrapper is installed on a subclass of S3 here, so the rest of the test process keeps Metaflow's own."""

from __future__ import annotations

import hashlib
import json
import types
import uuid

import boto3
import pytest

from metaflow_extensions.repro.plugins import protocol as p
from metaflow_extensions.repro.plugins import s3_reads

TRAIN = b"".join(b"row%d,%d\n" % (i, i) for i in range(100))


@pytest.fixture
def bucket(s3_server):
    name = "s3-reads-" + uuid.uuid4().hex[:8]
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="data/train.csv", Body=TRAIN)
    s3.put_object(Bucket=name, Key="data/labels.txt", Body=b"a b c\n")
    return name


def _wrapped(served=None, limit=p.S3_MAX_OBJECTS, metaflows=("", "", ""), listings=True):
    """(an S3 class whose reads are wrapped, the state noting them)."""
    from metaflow.plugins.datatools.s3 import s3 as module

    state = s3_reads.S3Reads(served, limit, metaflows, listings=listings)
    sub = types.SimpleNamespace(S3=type("S3", (module.S3,), {}), S3Object=module.S3Object)
    s3_reads._wrap(sub, state)
    return sub.S3, state


def _report(state):
    return json.loads(state.report(p.S3_MAX_OBJECTS))


def test_get_get_all_and_info_are_noted_with_etag_size_and_sha256(bucket, tmp_path):
    S3, state = _wrapped()
    with S3(s3root=f"s3://{bucket}/data", tmproot=str(tmp_path)) as s3:
        assert s3.get("train.csv").blob == TRAIN
        # get_all is get_recursive (get_many's path, one s3op process; the replay test reads get_many too)
        assert sorted(o.key for o in s3.get_all()) == ["labels.txt", "train.csv"]  # each URL noted once
        s3.info("labels.txt")
    report = _report(state)
    assert report[p.S3_COUNT] == 2
    train = report[p.S3_OBJECTS][0]
    assert train == {
        p.S3_URL: f"s3://{bucket}/data/train.csv",
        p.S3_VERSION: "",
        p.S3_ETAG: hashlib.md5(TRAIN).hexdigest(),
        p.S3_SIZE: len(TRAIN),
        p.S3_SHA256: hashlib.sha256(TRAIN).hexdigest(),
    }


def test_info_alone_notes_no_sha256_and_a_ranged_read_is_not_noted(bucket, tmp_path):
    from metaflow.plugins.datatools.s3.s3 import S3GetObject

    S3, state = _wrapped()
    with S3(tmproot=str(tmp_path)) as s3:
        s3.info(f"s3://{bucket}/data/labels.txt")
        assert s3.get(S3GetObject(f"s3://{bucket}/data/train.csv", 0, 10)).blob == TRAIN[:10]
    (only,) = _report(state)[p.S3_OBJECTS]
    assert (only[p.S3_URL], only[p.S3_SHA256], only[p.S3_SIZE]) == (f"s3://{bucket}/data/labels.txt", "", 6)


def test_the_report_lists_the_first_objects_and_counts_them_all(bucket, tmp_path):
    """Past the first ``limit`` objects, a read is counted only: no hash, no HEAD for each of thousands."""
    S3, state = _wrapped(limit=1)
    with S3(s3root=f"s3://{bucket}/data", tmproot=str(tmp_path)) as s3:
        for key in ("train.csv", "labels.txt", "train.csv"):
            s3.get(key)
    report = _report(state)
    assert [o[p.S3_URL] for o in report[p.S3_OBJECTS]] == [f"s3://{bucket}/data/train.csv"]
    assert report[p.S3_COUNT] == 2 and list(state.objects) == [f"s3://{bucket}/data/train.csv"]  # not hashed
    assert s3_reads.S3Reads().report(2) == ""


def _inputs(folder, url, data, sha=None):
    """A replay's inputs folder serving ``url`` with ``data``."""
    folder.mkdir()
    sha = sha or hashlib.sha256(data).hexdigest()
    (folder / "blob").write_bytes(data)
    entry = {p.S3_SHA256: sha, p.S3_SIZE: len(data), p.S3_ETAG: "e", p.S3_VERSION: "", p.S3_FILE: "blob"}
    (folder / p.S3_MANIFEST).write_text(json.dumps({url: entry}))
    return s3_reads.load_manifest(str(folder))


def test_a_replay_answers_recorded_urls_from_its_inputs_and_others_from_s3(bucket, s3_server, tmp_path):
    url = f"s3://{bucket}/data/train.csv"
    recorded = b"the recorded bytes\n"
    S3, state = _wrapped(_inputs(tmp_path / "inputs", url, recorded))
    boto3.client("s3", endpoint_url=s3_server).delete_object(Bucket=bucket, Key="data/train.csv")  # gone from S3
    with S3(s3root=f"s3://{bucket}/data", tmproot=str(tmp_path)) as s3:
        assert s3.get("train.csv").blob == recorded
        many = s3.get_many(["labels.txt", "train.csv"])  # one served, one from S3, in the order asked
        assert [o.blob for o in many] == [b"a b c\n", recorded]
        assert s3.info("train.csv").size == len(recorded)
        assert [o.blob for o in s3.get_recursive(["train.csv"])] == [recorded]
    assert (tmp_path / "inputs" / "blob").read_bytes() == recorded  # a copy was handed out, not the input
    urls = [o[p.S3_URL] for o in _report(state)[p.S3_OBJECTS]]
    assert urls == [url, f"s3://{bucket}/data/labels.txt"]  # the replay's record names what was served too


def test_a_listing_is_answered_from_the_inputs_only_when_they_hold_all_the_steps_read(bucket, s3_server, tmp_path):
    """When the record lists part of what the steps read (past the first 100, or not kept), a
    get_recursive answered from the inputs would silently return fewer objects: it goes to S3."""
    url = f"s3://{bucket}/data/train.csv"
    S3, _ = _wrapped(_inputs(tmp_path / "inputs", url, b"the recorded bytes\n"), listings=False)
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=bucket, Key="data/train.csv", Body=b"now\n")
    with S3(s3root=f"s3://{bucket}/data", tmproot=str(tmp_path)) as s3:
        assert [o.blob for o in s3.get_recursive(["train.csv"])] == [b"now\n"]
        assert s3.get("train.csv").blob == b"the recorded bytes\n"  # a read by URL is still served


def test_a_replay_input_whose_bytes_do_not_match_fails_the_read(bucket, tmp_path):
    url = f"s3://{bucket}/data/train.csv"
    S3, _ = _wrapped(_inputs(tmp_path / "inputs", url, b"tampered", sha=hashlib.sha256(b"x").hexdigest()))
    with S3(tmproot=str(tmp_path)) as s3, pytest.raises(RuntimeError, match="does not match its recorded sha256"):
        s3.get(url)


def test_a_manifest_entry_of_a_bad_shape_is_not_served(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    good = {p.S3_SHA256: "a" * 64, p.S3_SIZE: 1, p.S3_FILE: "blob"}
    doc = {
        "s3://b/ok": good,
        "s3://b/up": {**good, p.S3_FILE: "../x"},
        "http://b/x": good,
        "s3://b/sha": {**good, p.S3_SHA256: "zz"},
        "s3://b/size": {**good, p.S3_SIZE: "1"},
    }
    (folder / p.S3_MANIFEST).write_text(json.dumps(doc))
    assert list(s3_reads.load_manifest(str(folder))) == ["s3://b/ok"]
    assert s3_reads.load_manifest(str(tmp_path / "none")) == {}


def test_metaflows_own_objects_are_no_step_input(bucket, s3_server, tmp_path):
    """Its S3 datastore's objects (artifacts, the code package) and what this run wrote with S3(run=self)
    are left out; user data under DATATOOLS_S3ROOT (inside the datastore root by default) is kept."""
    s3 = boto3.client("s3", endpoint_url=s3_server)
    keys = ["ds/F/data/ab/abcd", "ds/data/Other/3/x.csv", "ds/data/F/5/y.csv", "data/train.csv"]
    for key in keys[:3]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    folders = s3_reads.metaflow_folders(f"s3://{bucket}/ds", f"s3://{bucket}/ds/data/", "F", "5")
    assert folders == (f"s3://{bucket}/ds/", f"s3://{bucket}/ds/data/", f"s3://{bucket}/ds/data/F/5/")
    S3, state = _wrapped(metaflows=folders)
    with S3(tmproot=str(tmp_path)) as client:
        for key in keys:
            client.get(f"s3://{bucket}/{key}")
    assert [o[p.S3_URL] for o in _report(state)[p.S3_OBJECTS]] == [
        f"s3://{bucket}/ds/data/Other/3/x.csv",  # another run's data: an input
        f"s3://{bucket}/data/train.csv",
    ]
    assert s3_reads.metaflow_folders("", "", "F", "5") == ("", "", "")


def test_an_object_overwritten_between_the_read_and_the_head_is_named_by_the_bytes_read(bucket, s3_server, tmp_path):
    """The ETag is asked after the read: when S3 has other bytes by then, the recorded ETag is the MD5 of
    the bytes the step read (S3's ETag of a single-part object), so drift is still seen afterwards."""
    from metaflow.plugins.datatools.s3 import s3 as module

    state = s3_reads.S3Reads()
    with module.S3(tmproot=str(tmp_path)) as s3:
        obj = s3.get(f"s3://{bucket}/data/train.csv")
        boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=bucket, Key="data/train.csv", Body=b"new")
        state.note(s3, obj)
    (noted,) = _report(state)[p.S3_OBJECTS]
    assert noted[p.S3_ETAG] == hashlib.md5(TRAIN).hexdigest() != hashlib.md5(b"new").hexdigest()


def test_an_etag_of_a_kms_encrypted_object_is_kept_as_s3_gives_it():
    """SSE-KMS and SSE-C ETags are 32 hex digits but no MD5 of the bytes: taking them for a change after
    the read would record the bytes' MD5, and every drift check would then report the object changed."""
    import types as t

    def s3_answering(**head):
        client = t.SimpleNamespace(head_object=lambda **kw: {"ETag": '"' + "e" * 32 + '"', "VersionId": "null", **head})
        return t.SimpleNamespace(_s3_client=t.SimpleNamespace(client=client))

    assert s3_reads._head(s3_answering(ServerSideEncryption="aws:kms"), "s3://b/k") == ("e" * 32, "", False)
    assert s3_reads._head(s3_answering(SSECustomerAlgorithm="AES256"), "s3://b/k")[2] is False
    assert s3_reads._head(s3_answering(ServerSideEncryption="AES256"), "s3://b/k")[2] is True
