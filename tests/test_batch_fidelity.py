"""Batch fidelity on moto + our Docker daemon (tests/batch_setup.py): a failed Batch task is recorded
like a failed local one, and a replay runs where it is asked to (`--on local` of a `--with batch` run).
One two-step flow; its runs are shared between assertions (each Batch job is a container start)."""

from __future__ import annotations

import pytest

from tests.helpers import cli, write_flow

pytestmark = pytest.mark.slow

FLOW = """
from metaflow import FlowSpec, Parameter, conda_base, step


@conda_base(libraries={"six": "1.16.0"})
class BatchFateFlow(FlowSpec):
    fail = Parameter("fail", default="")

    @step
    def start(self):
        import six

        if self.fail == "start":
            raise ValueError("boom in a Batch job")
        self.lib = six.__version__
        self.value = 41 + 1
        self.next(self.end)

    @step
    def end(self):
        if self.fail == "end":
            raise ValueError("boom at the end of a Batch run")


if __name__ == "__main__":
    BatchFateFlow()
"""


@pytest.fixture(scope="module")
def world(batch_world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch-fate")
    path = write_flow(folder / "proj", FLOW)
    env = {**batch_world.env, "REPRO_STORE": batch_world.store("fate-store")}
    return {"path": path, "env": env, "folder": folder}


def test_a_failed_batch_task_is_recorded_like_a_local_failure(world):
    """A step raises inside its Batch job (after another job succeeded): the failed run is read back
    from the S3 datastore and recorded (not "cannot read run back", exit 3), Metaflow's exit code is
    passed on, and the failing step, task, error line and logs command are named, as for a local run."""
    r = cli("run", world["path"], "--", "--with", "batch", "--fail", "end", env=world["env"], cwd=world["path"].parent)
    assert r.code == 1, r.text[-6000:]
    assert "cannot read run" not in r.text, r.text[-6000:]
    assert "failed; it is not pushed to the store" in r.err, r.text[-4000:]
    line = next((x for x in r.err.splitlines() if x.startswith("step end failed (BatchFateFlow/")), "")
    assert line.endswith("): ValueError: boom at the end of a Batch run"), r.err[-4000:]
    run_id = line.split("BatchFateFlow/", 1)[1].split("/", 1)[0]
    assert f" logs {run_id}/end/" in r.err, r.err[-3000:]


def test_a_batch_job_that_fails_before_its_task_is_recorded_as_a_failed_run(world):
    """The job itself fails (here: an image the daemon does not have), so the task never ran and left
    no datastore, no metadata and no logs: still a failed run, read back and named, not exit 3."""
    r = cli(
        "run",
        world["path"],
        "--",
        "--with",
        "batch:image=nowhere/none:1",
        env=world["env"],
        cwd=world["path"].parent,
    )
    assert r.code == 1, r.text[-6000:]
    assert "cannot read run" not in r.text and "Traceback" not in r.err, r.text[-6000:]
    assert "step start failed (BatchFateFlow/" in r.err and "failed before its step ran" in r.err, r.err[-3000:]
    assert "failed; it is not pushed to the store" in r.err


def _records(batch_world, prefix: str = "fate-store/runs/"):
    from metaflow_repro.model.record import from_json

    s3 = batch_world.s3()
    found = s3.list_objects_v2(Bucket=batch_world.bucket, Prefix=prefix).get("Contents", [])
    return [
        from_json(s3.get_object(Bucket=batch_world.bucket, Key=o["Key"])["Body"].read(), o["Key"])
        for o in found
        if o["Key"].endswith("/record.json")
    ]


def _jobs(batch_world) -> int:
    import boto3

    from tests.batch_setup import REGION

    batch = boto3.client(
        "batch",
        endpoint_url=batch_world.endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return sum(
        len(batch.list_jobs(jobQueue=batch_world.queue, jobStatus=status)["jobSummaryList"])
        for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
    )


@pytest.fixture(scope="module")
def ok_run(world, batch_world):
    """One successful `repro run flow.py -- --with batch` (2 jobs), recorded in the S3 store."""
    r = cli("run", world["path"], "--", "--with", "batch", env=world["env"], cwd=world["path"].parent)
    assert r.code == 0, r.text[-6000:]
    (record,) = [rec for rec in _records(batch_world) if not rec.replay_of]
    return record


def test_replay_on_local_of_a_batch_run_runs_locally_and_says_so(ok_run, world, batch_world, tmp_path):
    from metaflow_repro.model.interpreter import ExecutorKind

    assert ok_run.executor.kind is ExecutorKind.BATCH and "--with" in ok_run.run_options
    jobs = _jobs(batch_world)
    r = cli("replay", ok_run.ref, "--on", "local", env=world["env"], cwd=tmp_path)
    assert r.code == 0, r.text[-6000:]
    assert "result: identical" in r.out, r.text[-3000:]
    assert "not on AWS Batch: dropped the recorded --with batch" in r.err, r.err[-3000:]
    assert _jobs(batch_world) == jobs  # no job was submitted
    (replayed,) = [
        rec for rec in _records(batch_world) if rec.replay_of == ok_run.ref and rec.executor.kind is ExecutorKind.LOCAL
    ]
    # the tasks ran here (local executor, no job), on the S3 datastore the original had (same envs)
    assert replayed.executor.kind is ExecutorKind.LOCAL and replayed.datastore["type"] == "s3"
    assert "batch" not in " ".join(replayed.run_options)


def test_a_same_size_corrupt_staged_object_is_replaced_and_the_run_passes(ok_run, world, batch_world):
    """Staging trusted any object of the right size: a same-size corrupt package file failed every job
    and no run could repair it. Now this host's ledger no longer matches the rewritten object, so staging
    hashes it, replaces it with the verified local copy, and the jobs build their env."""
    s3 = batch_world.s3()
    env = ok_run.envs[ok_run.steps["start"].env_id]
    pkg = next(p for p in env.packages if p.name == "six")
    key = f"fate-store/packages/sha256/{pkg.sha256[:2]}/{pkg.sha256}/{pkg.file}"
    original = s3.get_object(Bucket=batch_world.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=batch_world.bucket, Key=key, Body=original[:-1] + bytes([original[-1] ^ 0xFF]))
    r = cli("run", world["path"], "--", "--with", "batch", env=world["env"], cwd=world["path"].parent)
    assert r.code == 0, r.text[-6000:]
    assert f"{key.split('/', 1)[1]} is corrupt" in r.text and "replaced" in r.text, r.text[-4000:]
    assert s3.get_object(Bucket=batch_world.bucket, Key=key)["Body"].read() == original


def test_replay_on_docker_of_a_batch_run_runs_in_a_container_not_on_batch(ok_run, world, batch_world, tmp_path):
    """`--on docker` of a `--with batch` run, from an empty REPRO_HOME: one fresh container, no Batch
    job, the same S3 datastore kind as the original (same envs), identical."""
    from metaflow_repro.model.interpreter import ExecutorKind

    jobs = _jobs(batch_world)
    env = {**world["env"], "REPRO_HOME": str(tmp_path / "empty-home")}
    r = cli("replay", ok_run.ref, "--on", "docker", env=env, cwd=tmp_path)
    assert r.code == 0, r.text[-6000:]
    assert "result: identical" in r.out and "dropped the recorded --with batch" in r.err, r.text[-3000:]
    assert _jobs(batch_world) == jobs
    (replayed,) = [
        rec for rec in _records(batch_world) if rec.replay_of == ok_run.ref and rec.executor.kind is ExecutorKind.DOCKER
    ]
    assert replayed.datastore["type"] == "s3" and "batch" not in " ".join(replayed.run_options)
    # the Batch run named the image its jobs ran in (repro's): the container is that image, no default
    assert ok_run.executor.image == batch_world.image and ok_run.executor.image_sha256
    assert replayed.executor.image_sha256 == ok_run.executor.image_sha256, replayed.executor


def test_a_bundle_with_image_of_a_batch_run_carries_the_image_its_jobs_ran_in(ok_run, world, tmp_path):
    """The Batch run's record names its job image's object, so `bundle --with-image` holds it, checked."""
    from metaflow_repro.store import layout
    from metaflow_repro.store.bundle import read

    output = tmp_path / "run.repro"
    r = cli("bundle", ok_run.ref, "--with-image", "-o", str(output), env=world["env"], cwd=tmp_path)
    assert r.code == 0, r.text[-4000:]
    sha = ok_run.executor.image_sha256
    keys = {m.key for m in read(output).manifest.members}
    assert {layout.image(sha), layout.image_manifest(sha)} <= keys, sorted(keys)
