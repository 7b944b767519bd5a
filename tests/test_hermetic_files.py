"""Data files a step reads (issue 23, items 1, 2 and 4): a flow that opens `data/train.csv` from its folder,
as users write it, is recorded with that file (relative path, size, sha256), the file is pushed as an
`inputs/` object, and a replay from an empty REPRO_HOME with no network gives it back; a file read
elsewhere on the host is listed per step and named up front by the replay. Real Metaflow runs, S3
over HTTP (moto), the replay in a network namespace with only the store reachable. Strict mode for files
and hosts: tests/test_hermetic_network.py (one pair of pytest runs serves both)."""

from __future__ import annotations

import hashlib
import os
import sys

import boto3
import pytest

from tests.helpers import cli, write_flow
from tests.netns import can_unshare, offline
from tests.test_replay_inputs import NO_INDEX, s3_record

pytestmark = pytest.mark.slow

FLOW = """
    import csv
    import pathlib

    from metaflow import FlowSpec, step


    class DataFileFlow(FlowSpec):
        @step
        def start(self):
            with open("data/train.csv") as fh:  # relative to the current folder, as users write it
                self.rows = list(csv.reader(fh))
            here = pathlib.Path(__file__).parent  # relative to the flow file
            self.labels = (here / "data" / "labels.txt").read_text()
            self.next(self.train)

        @step
        def train(self):
            self.extra = open(OUTSIDE).read()
            self.total = sum(int(r[1]) for r in self.rows)
            self.next(self.end)

        @step
        def end(self):
            print("total", self.total)


    if __name__ == "__main__":
        DataFileFlow()
"""


@pytest.fixture
def mf_env(tmp_path):
    return {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_FROZEN": "0",
    }


def _store_keys(endpoint: str, bucket: str, prefix: str) -> set[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for o in listing.get("Contents", [])}


def test_a_data_file_of_the_flow_folder_replays_identical_offline(tmp_path, s3_server, s3_bucket, mf_env):
    if not can_unshare():
        pytest.skip("cannot create a network namespace here (unshare -n)")
    proj = tmp_path / "proj"
    outside = tmp_path / "elsewhere" / "extra.txt"
    outside.parent.mkdir()
    outside.write_text("outside the flow's folder\n")
    path = write_flow(proj, FLOW.replace("OUTSIDE", repr(str(outside))))
    (proj / "data").mkdir()
    train = proj / "data" / "train.csv"
    train.write_text("".join(f"row{i},{i}\n" for i in range(500)))
    (proj / "data" / "labels.txt").write_text("a b c\n")
    store = f"s3://{s3_bucket}/hermetic"
    r = cli("run", path, "--store", store, env=mf_env, cwd=proj)
    assert r.code == 0, r.text[-4000:]
    record = s3_record(s3_server, s3_bucket, "hermetic", "DataFileFlow")
    sha = hashlib.sha256(train.read_bytes()).hexdigest()
    got = record.data_files["data/train.csv"]
    assert (got.sha256, got.size, got.read_by, got.stored) == (sha, train.stat().st_size, ("start",), True)
    assert set(record.data_files) == {"data/train.csv", "data/labels.txt"}  # flow.py is in the code package
    assert record.reads["train"].files == (str(outside),) and record.reads["train"].files_count == 1
    assert "start" not in record.reads
    assert f"hermetic/inputs/sha256/{sha[:2]}/{sha}" in _store_keys(s3_server, s3_bucket, "hermetic/inputs/")
    assert "train read 1 file outside the snapshot" in r.text
    # the checkout is gone: the replay has only the store (no network but it, an empty REPRO_HOME)
    train.unlink()
    (proj / "data" / "labels.txt").unlink()
    port = int(s3_server.rsplit(":", 1)[1])
    env = {**os.environ, **mf_env, **NO_INDEX, "REPRO_HOME": str(tmp_path / "empty-home")}
    cmd = [sys.executable, "-m", "metaflow_repro", "replay", record.ref, "--store", store]
    proc = offline(cmd, env, tmp_path, port)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "result: identical" in proc.stdout
    said = proc.stdout + proc.stderr
    assert "giving back 2 data files the steps read: data/labels.txt, data/train.csv" in said
    assert "train read 1 file outside the snapshot; a replay cannot give these back" in said


OUTSIDE_FLOW = """
    from metaflow import FlowSpec, step


    class OutsideFileFlow(FlowSpec):
        @step
        def start(self):
            self.threshold = open(OUTSIDE).read().strip()
            self.next(self.end)

        @step
        def end(self):
            pass


    if __name__ == "__main__":
        OutsideFileFlow()
"""


def test_a_replay_names_a_file_read_elsewhere_up_front_and_as_the_likely_cause(tmp_path, s3_server, s3_bucket, mf_env):
    proj = tmp_path / "proj"
    outside = tmp_path / "shared" / "threshold.txt"
    outside.parent.mkdir()
    outside.write_text("0.5\n")
    path = write_flow(proj, OUTSIDE_FLOW.replace("OUTSIDE", repr(str(outside))))
    store = f"s3://{s3_bucket}/outside"
    r = cli("run", path, "--store", store, env=mf_env, cwd=proj)
    assert r.code == 0, r.text[-4000:]
    assert "start read 1 file outside the snapshot; a replay cannot give these back" in r.out
    record = s3_record(s3_server, s3_bucket, "outside", "OutsideFileFlow")
    assert record.reads["start"].files == (str(outside),) and record.data_files == {}
    outside.write_text("0.9\n")  # what no snapshot holds changed under the same path
    replay = cli("replay", record.ref, "--store", store, env={**mf_env, **NO_INDEX}, cwd=tmp_path)
    assert replay.code == 1, replay.text[-4000:]
    assert "start read 1 file outside the snapshot; a replay cannot give these back" in replay.text
    assert f"read what its snapshot does not hold, the likely cause: {outside}" in replay.text
