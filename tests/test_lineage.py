"""Input lineage: a downstream flow that reads an upstream flow's latest successful run through
Metaflow's client. The record names the run and the artifacts it read, the snapshot holds their bytes,
a replay (offline, from an empty REPRO_HOME) reads exactly that run again even after the upstream ran
anew, `repro drift` reports input drift naming the step and both run ids, and a tampered input is
refused before anything reads it. Real Metaflow runs, S3 over HTTP (moto): the runs are shared by the
module's tests."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import uuid

import boto3
import pytest

from metaflow_repro.model.record import InputVia, from_json
from tests.helpers import cli, write_flow
from tests.test_replay_inputs import replay_offline, s3_record

pytestmark = pytest.mark.slow

UPSTREAM = """
    from metaflow import FlowSpec, step


    class UpstreamFlow(FlowSpec):
        @step
        def start(self):
            import time

            self.numbers = [1, 2, 3, int(time.time() * 1000) % 997]
            self.next(self.end)

        @step
        def end(self):
            self.label = "release-%d" % sum(self.numbers)


    if __name__ == "__main__":
        UpstreamFlow()
"""

DOWNSTREAM = """
    from metaflow import Flow, FlowSpec, step


    class DownstreamFlow(FlowSpec):
        @step
        def start(self):
            run = Flow("UpstreamFlow").latest_successful_run
            self.upstream = run.pathspec
            self.total = sum(run["start"].task.data.numbers)
            self.label = run.data.label
            self.next(self.end)

        @step
        def end(self):
            print("read", self.upstream, self.total, self.label)


    if __name__ == "__main__":
        DownstreamFlow()
"""


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, s3_server):
    """Upstream run 1; the downstream flow run with repro and pushed to S3; then upstream run 2."""
    tmp = tmp_path_factory.mktemp("lineage")
    proj = tmp / "proj"
    up = write_flow(proj, UPSTREAM, name="upstream.py")
    down = write_flow(proj, DOWNSTREAM, name="downstream.py")
    mf_env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_FROZEN": "0",
    }
    bucket = f"lineage-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    store = f"s3://{bucket}/team"

    def upstream_run() -> str:
        ids = tmp / f"run-id-{uuid.uuid4().hex[:6]}"
        proc = subprocess.run(
            [sys.executable, str(up), "run", "--run-id-file", str(ids)],
            env={**os.environ, **mf_env},
            cwd=proj,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return ids.read_text().strip()

    first = upstream_run()
    r = cli("run", down, "--store", store, env=mf_env, cwd=proj)
    assert r.code == 0, r.text[-4000:]
    record = s3_record(s3_server, bucket, "team", "DownstreamFlow")
    second = upstream_run()
    return {
        "tmp": tmp,
        "proj": proj,
        "down": down,
        "mf_env": mf_env,
        "bucket": bucket,
        "store": store,
        "record": record,
        "first": first,
        "second": second,
    }


def test_the_record_names_the_run_read_and_the_store_holds_the_bytes_of_what_was_read(lineage, s3_server):
    record, first = lineage["record"], lineage["first"]
    assert list(record.inputs) == [f"UpstreamFlow/{first}"]
    run = record.inputs[f"UpstreamFlow/{first}"]
    assert (run.flow, run.run_id, run.read_by, run.via) == (
        "UpstreamFlow",
        first,
        ("start",),
        InputVia.LATEST_SUCCESSFUL,
    )
    read = {(key.split("/")[0], name) for key, t in run.tasks.items() for name in t.artifacts}
    assert read == {("end", "_success"), ("end", "label"), ("start", "numbers")}
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for sha1, size in record.input_artifacts().items():
        body = s3.get_object(Bucket=lineage["bucket"], Key=f"team/inputs/sha1/{sha1[:2]}/{sha1}")["Body"].read()
        assert hashlib.sha1(body).hexdigest() == sha1 and len(body) == size
    show = cli("store", "show", record.ref, "--store", lineage["store"])
    assert f"input UpstreamFlow/{first} (latest_successful_run), read by start: " in show.out, show.text
    numbers = next(t.artifacts["numbers"] for k, t in run.tasks.items() if k.startswith("start/"))
    body = s3.get_object(Bucket=lineage["bucket"], Key=f"team/inputs/sha1/{numbers.sha1[:2]}/{numbers.sha1}")
    assert sum(pickle.loads(body["Body"].read())) == int(_artifact(lineage, "total"))  # the bytes the step read


def _artifact(lineage, name):
    """An artifact of the recorded downstream run, read from the user's datastore."""
    code = (
        "import sys; from metaflow import Run, namespace; namespace(None); "
        f"print(Run(sys.argv[1])['start'].task.data.{name})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, lineage["record"].ref],
        env={**os.environ, **lineage["mf_env"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_replay_offline_from_an_empty_home_reads_the_recorded_run_not_the_latest(lineage, tmp_path, s3_server):
    record = lineage["record"]
    someone_else = {**lineage["mf_env"], "METAFLOW_USER": "a-colleague"}  # the run read was in user:<them>
    proc = replay_offline(record.ref, lineage["store"], tmp_path, someone_else, s3_server)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "result: identical" in proc.stdout, proc.stdout[-3000:]
    assert f"serving UpstreamFlow/{lineage['first']}" in proc.stdout + proc.stderr
    replayed_id = proc.stdout.split(" as DownstreamFlow/")[1].split()[0]
    # read here, not from the store: Metaflow's code package names the user who ran it (INFO), so a
    # colleague's replay has another code package, which the store does not hold
    saved = tmp_path / "empty-home" / "records" / "DownstreamFlow" / f"{replayed_id}.json"
    replayed = from_json(saved.read_text(), str(saved))
    assert replayed.replay_of == record.ref
    assert list(replayed.inputs) == [f"UpstreamFlow/{lineage['first']}"]  # same run id, though /second is latest
    assert replayed.input_artifacts() == record.input_artifacts()


def test_a_new_upstream_run_is_input_drift_naming_the_step_and_both_run_ids(lineage):
    r = cli(
        "drift",
        lineage["down"],
        "--store",
        lineage["store"],
        "--no-resolve",
        env=lineage["mf_env"],
        cwd=lineage["proj"],
    )
    assert r.code == 1, r.text[-3000:]
    line = f"input drift: start: reads UpstreamFlow/{lineage['first']} -> now /{lineage['second']}"
    assert line in r.out, r.out
    assert r.out.count("input drift") == 1  # one step read it


def test_pytest_repro_drift_fails_lock_with_the_input_drift(lineage):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--repro", "downstream.py", "--repro-drift"]
        + ["--repro-store", lineage["store"], "-q"],
        env={**os.environ, **lineage["mf_env"]},
        cwd=lineage["proj"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and all("[lock]" in line for line in failed), proc.stdout[-4000:]
    assert f"input drift: start: reads UpstreamFlow/{lineage['first']} -> now /{lineage['second']}" in proc.stdout


def test_a_tampered_input_artifact_is_refused_naming_it_before_anything_runs(lineage, tmp_path, s3_server):
    record = lineage["record"]
    sha1 = sorted(record.input_artifacts())[0]
    key = f"team/inputs/sha1/{sha1[:2]}/{sha1}"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.put_object(Bucket=lineage["bucket"], Key=key, Body=pickle.dumps([6, 6, 6]))
    env = {**lineage["mf_env"], "REPRO_HOME": str(tmp_path / "empty-home")}
    r = cli("replay", record.ref, "--store", lineage["store"], env=env, cwd=tmp_path)
    assert r.code == 3, r.text[-3000:]
    assert key in r.text and "corrupt" in r.text, r.text[-3000:]
    assert not (tmp_path / "empty-home" / "replays").exists() or not any(
        (tmp_path / "empty-home" / "replays").rglob("*.data.json")
    )  # nothing ran, nothing was seeded
