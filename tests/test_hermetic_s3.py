"""Objects a step reads with ``metaflow.S3`` (issue 23, item 3): recorded per step (URL, ETag, size,
sha256 of the bytes read), their bytes pushed as ``inputs/`` objects; once the object is overwritten,
``repro drift`` reports input drift naming the URL, and ``repro replay`` still gives ``identical``,
its tasks served the recorded bytes. One real Metaflow run (boto3 in the step's own environment, S3
over HTTP from moto on 127.0.0.1) serves every assertion."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import boto3
import pytest

from tests.helpers import cli, write_flow
from tests.test_replay_inputs import NO_INDEX, s3_record

pytestmark = pytest.mark.slow

FLOW = """
    from metaflow import FlowSpec, S3, pypi, step


    class S3ReadFlow(FlowSpec):
        @pypi(packages={"boto3": "1.35.99"})
        @step
        def start(self):
            with S3(s3root=ROOT) as s3:
                self.rows = s3.get("train.csv").text.splitlines()
                self.listed = sorted(o.key for o in s3.get_many(["labels.txt"]))
            self.next(self.end)

        @step
        def end(self):
            print("rows", len(self.rows))


    if __name__ == "__main__":
        S3ReadFlow()
"""

FIRST = "".join(f"row{i},{i}\n" for i in range(200)).encode()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, s3_server):
    """One recorded run of S3ReadFlow, then its object overwritten under the same key."""
    tmp = tmp_path_factory.mktemp("hermetic-s3")
    bucket = f"hermetic-s3-{hashlib.sha256(str(tmp).encode()).hexdigest()[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/train.csv", Body=FIRST)
    s3.put_object(Bucket=bucket, Key="data/labels.txt", Body=b"a b c\n")
    proj = tmp / "proj"
    path = write_flow(proj, FLOW.replace("ROOT", repr(f"s3://{bucket}/data")))
    mf_env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_FROZEN": "0",
    }
    store = f"s3://{bucket}/store"
    r = cli("run", path, "--store", store, env=mf_env, cwd=proj)
    assert r.code == 0, r.text[-4000:]
    record = s3_record(s3_server, bucket, "store", "S3ReadFlow")
    s3.put_object(Bucket=bucket, Key="data/train.csv", Body=b"row0,999\n")  # the same key, other bytes
    return {"record": record, "store": store, "bucket": bucket, "path": path, "proj": proj, "mf_env": mf_env}


def test_the_objects_a_step_read_are_recorded_and_their_bytes_pushed(recorded, s3_server):
    record, bucket = recorded["record"], recorded["bucket"]
    url = f"s3://{bucket}/data/train.csv"
    sha = hashlib.sha256(FIRST).hexdigest()
    got = {o.url: o for o in record.s3_inputs["start"].objects}
    assert set(got) == {url, f"s3://{bucket}/data/labels.txt"} and record.s3_inputs["start"].count == 2
    o = got[url]
    assert (o.sha256, o.size, o.etag, o.stored) == (sha, len(FIRST), hashlib.md5(FIRST).hexdigest(), True)
    assert "end" not in record.s3_inputs
    listing = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=bucket, Prefix="store/inputs/")
    assert f"store/inputs/sha256/{sha[:2]}/{sha}" in {x["Key"] for x in listing.get("Contents", [])}


def test_an_overwritten_object_is_input_drift_naming_the_step_and_the_url(recorded):
    r = cli(
        "drift", recorded["path"], "--store", recorded["store"], "--no-resolve",
        env=recorded["mf_env"], cwd=recorded["proj"],
    )  # fmt: skip
    assert r.code == 1, r.text[-3000:]
    old = recorded["record"].s3_inputs["start"].objects[0].etag
    line = f"input drift: start: s3://{recorded['bucket']}/data/train.csv changed (ETag {old[:6]}… -> "
    assert line in r.out, r.out
    assert r.out.count("input drift") == 1  # labels.txt did not change


def test_a_replay_serves_the_recorded_bytes_of_an_object_overwritten_since(recorded, tmp_path):
    env = {**recorded["mf_env"], **NO_INDEX}
    r = cli("replay", recorded["record"].ref, "--store", recorded["store"], env=env, cwd=tmp_path)
    assert r.code == 0, r.text[-4000:]
    assert "result: identical" in r.out, r.text[-4000:]
    assert f"serving 2 S3 objects the steps read: s3://{recorded['bucket']}/data/labels.txt" in r.text


def test_pytest_repro_drift_fails_lock_with_the_input_drift_of_the_object(recorded):
    """Last: this runs the flow again, and its run is pushed to the store."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--repro", "flow.py", "--repro-drift"]
        + ["--repro-store", recorded["store"], "-q"],
        env={**os.environ, **recorded["mf_env"]},
        cwd=recorded["proj"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and all("[lock]" in line for line in failed), proc.stdout[-4000:]
    assert f"input drift: start: s3://{recorded['bucket']}/data/train.csv changed (ETag " in proc.stdout
