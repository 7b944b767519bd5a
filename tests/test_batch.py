"""`--with batch` for real: moto's Batch runs every task in a container of our Docker daemon, on the
host network, reading and writing moto's S3 (tests/batch_setup.py). Each job is a container start:
the runs here are few and shared between assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, run_flow, write_flow

pytestmark = pytest.mark.slow


def test_plain_metaflow_run_with_batch(batch_world, tmp_path):
    """The set-up itself: plain Metaflow (no repro environment) runs every step as a Batch job."""
    path = write_flow(
        tmp_path / "plain",
        """
        import os
        from metaflow import FlowSpec, step
        class PlainBatchFlow(FlowSpec):
            @step
            def start(self):
                self.where = os.environ.get("AWS_BATCH_JOB_ID", "")
                self.next(self.end)
            @step
            def end(self):
                self.where_end = os.environ.get("AWS_BATCH_JOB_ID", "")
        if __name__ == "__main__":
            PlainBatchFlow()
    """,
        conda_source=None,
    )
    r = run_flow(path, tmp_path / "mf", environment="", env=batch_world.env, args=("--with", "batch"))
    assert r.code == 0, r.text[-4000:]
    data = r.inspect("PlainBatchFlow")
    assert data["successful"]
    start, end = data["steps"]["start"][0]["artifacts"], data["steps"]["end"][0]["artifacts"]
    assert start["where"] and end["where_end"] and start["where"] != end["where_end"]  # a Batch job each


FLOW = """
import os
import sys
from metaflow import FlowSpec, conda, conda_base, step


def where():
    return {
        "runtime": os.environ.get("METAFLOW_RUNTIME_ENVIRONMENT", ""),
        "container": os.path.exists("/.dockerenv"),
        "in_repro_env": os.path.exists(os.path.join(sys.prefix, ".repro-env.json")),
    }


@conda_base(libraries={"six": "1.16.0"})
class BatchForeachFlow(FlowSpec):
    @step
    def start(self):
        import six

        self.items = [2, 3]
        self.where = where()
        self.lib = six.__version__
        self.next(self.work, foreach="items")

    @conda(libraries={"idna": "3.10"})
    @step
    def work(self):
        import idna

        self.square = self.input * self.input
        self.where = where()
        self.lib = idna.__version__
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.square for i in inputs)
        self.where = where()
        self.next(self.end)

    @step
    def end(self):
        self.where = where()


if __name__ == "__main__":
    BatchForeachFlow()
"""


def _inspect(env: dict, pathspec: str, cwd: Path) -> dict:
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "mf_inspect.py"), pathspec],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,  # the local metadata of the run is there
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def batch_run(batch_world, tmp_path_factory):
    """One `repro run flow.py -- --with batch` (5 jobs: start, 2 x work, join, end), shared."""
    import json

    from metaflow_repro.model.record import from_json

    folder = tmp_path_factory.mktemp("batch-run")
    path = write_flow(folder / "proj", FLOW)
    env = {**batch_world.env, "REPRO_STORE": batch_world.store()}
    r = cli("run", path, "--", "--with", "batch", env=env, cwd=path.parent)
    assert r.code == 0, r.text[-6000:]

    (folder / "run.log").write_text(r.text)
    s3 = batch_world.s3()
    leases = s3.list_objects_v2(Bucket=batch_world.bucket, Prefix="store/leases/").get("Contents", [])
    owners = [json.loads(s3.get_object(Bucket=batch_world.bucket, Key=o["Key"])["Body"].read())["run"] for o in leases]
    assert not [o for o in owners if o.startswith("batch staging")], owners  # released when the runtime exited
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=batch_world.bucket, Prefix="store/runs/")["Contents"]]
    record_key = next(k for k in keys if k.endswith("/record.json"))
    record = from_json(s3.get_object(Bucket=batch_world.bucket, Key=record_key)["Body"].read(), record_key)
    data = _inspect(env, record.ref, path.parent)
    return {"path": path, "env": env, "record": record, "data": data, "out": r.text, "s3": s3, "json": json}


def test_every_step_runs_in_a_container_whose_env_matches_the_lock(batch_run):
    record, data = batch_run["record"], batch_run["data"]
    assert data["successful"]
    assert set(data["steps"]) == {"start", "work", "join", "end"}
    assert len(data["steps"]["work"]) == 2
    envs = set()
    for step, tasks in data["steps"].items():
        for task in tasks:
            where = task["artifacts"]["where"]
            assert where["runtime"] == "aws-batch" and where["container"], (step, where)
            meta = task["metadata"]
            env_id = meta["repro-env-id"]
            envs.add(env_id)
            # the env the container built is the one the lock names, at its recorded path
            assert record.envs[env_id].env_id == env_id
            assert where["in_repro_env"], (step, where)
            # the fingerprint the task took in its container is the host build's (which matched the lock):
            # the container built the env at the host's path, so the interpreter it reports is the host's env
            marker = json.loads((Path(meta["repro-interpreter"]).parents[1] / ".repro-env.json").read_text())
            assert json.loads(meta["repro-fingerprint"])["digest"] == marker["fingerprint"]["digest"]
    assert len(envs) == 2
    assert data["steps"]["join"][0]["artifacts"]["total"] == 13
    assert {t["artifacts"]["lib"] for t in data["steps"]["work"]} == {"3.10"}
    assert record.status.value == "success"


def test_the_jobs_restore_the_interpreter_snapshot_the_run_names(batch_run, batch_world):
    """One packer: what Batch stages is the interpreter the pushed record names (interpreter_snapshot.pack),
    packed with gzip (the job's bootstrap has the standard library only; the record's is zstd)."""
    s3, json = batch_run["s3"], batch_run["json"]
    listed = s3.list_objects_v2(Bucket=batch_world.bucket, Prefix="store/bootstrap/")["Contents"]
    staged = [
        json.loads(s3.get_object(Bucket=batch_world.bucket, Key=o["Key"])["Body"].read())["interpreter"] for o in listed
    ]
    recorded = batch_run["record"].interpreters.values()
    assert staged and {(i["fingerprint"], i["prefix"]) for i in staged} <= {(r.fingerprint, r.prefix) for r in recorded}
    assert all(i["key"].endswith(".tar.gz") for i in staged)


def test_jobs_of_one_instance_build_each_env_once_and_later_jobs_use_it(batch_run, batch_world):
    """The instance cache (a host volume of every job): the interpreter and each env are made there once,
    from the verified store objects; later jobs of the instance check them against the files the manifest
    lists and link to them (no store, no build). The tasks' fingerprint check passed in every job (test
    above), cached or built."""
    out = batch_run["out"]
    built = out.count("built from s3://")
    cached = out.count(f"from the instance cache {batch_world.cache} in")
    # start builds the six env, the two foreach jobs (at once) the idna env; join and end use the cache
    assert built + cached == 5 and 2 <= built <= 3 and cached >= 2, out[-6000:]
    assert out.count(f"kept in the instance cache {batch_world.cache}") == built
    assert "warning" not in out, out[-6000:]  # what the jobs built is what the host listed
    cache = Path(batch_world.cache)
    envs = list((cache / "envs").iterdir())
    assert len(envs) == 2 and all([p.name for p in e.iterdir()] == ["1"] for e in envs), envs  # nothing private left
    pythons = list((cache / "pythons").iterdir())
    assert len(pythons) == 1 and [p.name for p in pythons[0].iterdir()] == ["1"]


def test_a_cached_env_that_changed_is_named_and_made_again(batch_run, batch_world):
    """Any job of the instance can write to the cache: a file of a cached env edited there (its size and
    time kept) is found by its sha256, the next job warns naming it and builds a new generation from the
    store, which the later jobs use; the edited one is left alone, and no task ran the edited code.
    (Only this module's runs use these envs: the cache key names the env's path, under its REPRO_HOME.)"""
    import os
    import re

    cache = Path(batch_world.cache)
    start_env = batch_run["record"].steps["start"].env_id  # start's, join's and end's (the foreach's has six too)
    (env,) = [
        e for e in cache.glob("envs/*/1/env") if json.loads((e / ".repro-env.json").read_text())["env_id"] == start_env
    ]
    six = next(env.glob("lib/python*/site-packages/six.py"))
    before = six.stat()
    text = six.read_bytes()
    assert b'__version__ = "1.16.0"' in text
    six.write_bytes(text.replace(b'__version__ = "1.16.0"', b'__version__ = "1.16.9"'))
    os.utime(six, ns=(before.st_atime_ns, before.st_mtime_ns))
    r = cli("run", batch_run["path"], "--", "--with", "batch", env=batch_run["env"], cwd=batch_run["path"].parent)
    assert r.code == 0, r.text[-6000:]
    assert r.text.count("site-packages/six.py changed; making it again") == 1, r.text[-6000:]  # start's job
    assert r.text.count(f"from the instance cache {cache} in") == 4  # the new generation, and the idna env's
    assert b"1.16.9" in six.read_bytes()  # left as it was
    run_id = re.search(r"Workflow starting \(run-id (\d+)\)", r.text).group(1)
    data = _inspect(batch_run["env"], f"BatchForeachFlow/{run_id}", batch_run["path"].parent)
    assert data["steps"]["start"][0]["artifacts"]["lib"] == "1.16.0"


def test_a_package_file_tampered_in_the_store_stops_the_container_naming_it(batch_run, batch_world, monkeypatch):
    """The container verifies every object it fetches: same size, other bytes -> the job fails before
    the task, naming the object; then restored. Staging hashes an object only when it is not as this
    host last verified it (tests/test_batch_fidelity.py: then it replaces a corrupt one), so this host's
    ledger is made to say the tampered object is as verified: a corruption staging cannot see."""
    import os

    from metaflow_repro.executors.batch import StagingLedger
    from metaflow_repro.settings import Home
    from metaflow_repro.store import open_store

    record, s3 = batch_run["record"], batch_world.s3()
    start_env = record.envs[record.steps["start"].env_id]
    pkg = next(p for p in start_env.packages if p.name == "six")
    key = f"packages/sha256/{pkg.sha256[:2]}/{pkg.sha256}/{pkg.file}"
    full = f"store/{key}"
    original = s3.get_object(Bucket=batch_world.bucket, Key=full)["Body"].read()
    tampered = original[:-1] + bytes([original[-1] ^ 0xFF])
    s3.put_object(Bucket=batch_world.bucket, Key=full, Body=tampered)
    for name, value in batch_world.env.items():  # the store's endpoint and credentials, for this process
        monkeypatch.setenv(name, value)
    store = open_store(batch_world.store())
    info = store.stat(key)
    assert info is not None
    StagingLedger(Home(Path(os.environ["REPRO_HOME"]))).remember(store, key, pkg.sha256, info)
    env = {**batch_run["env"], "REPRO_BATCH_CACHE": "off"}  # no instance cache: every job fetches its files
    try:
        r = cli("run", batch_run["path"], "--", "--with", "batch", env=env, cwd=batch_run["path"].parent)
    finally:
        s3.put_object(Bucket=batch_world.bucket, Key=full, Body=original)
    assert r.code != 0
    assert f"store object {key}" in r.text and "does not match its sha256" in r.text, r.text[-4000:]


def test_replay_on_batch_from_an_empty_home_is_identical(batch_run, batch_world, tmp_path):
    """`repro replay REF --on batch` with nothing on the host but the S3 store: every step a Batch job
    again, the same artifacts, and the replay's record says it ran on Batch."""
    from metaflow_repro.model.interpreter import ExecutorKind
    from metaflow_repro.model.record import from_json

    record = batch_run["record"]
    env = {**batch_run["env"], "REPRO_HOME": str(tmp_path / "empty-home")}
    r = cli("replay", record.ref, "--on", "batch", env=env, cwd=tmp_path)
    assert r.code == 0, r.text[-6000:]
    assert "result: identical" in r.out, r.out
    s3 = batch_world.s3()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=batch_world.bucket, Prefix="store/runs/")["Contents"]]
    replays = []
    for key in keys:
        if key.endswith("/record.json"):
            rec = from_json(s3.get_object(Bucket=batch_world.bucket, Key=key)["Body"].read(), key)
            if rec.replay_of == record.ref:
                replays.append(rec)
    assert len(replays) == 1
    assert replays[0].executor.kind is ExecutorKind.BATCH and replays[0].executor.image == batch_world.image
    assert record.executor.kind is ExecutorKind.BATCH  # the original, too
    # the jobs' image is repro's base image (one layer): the run named its root file system, pushed with it,
    # and the replay checked that the job image is still those bytes and names the same object
    sha = record.executor.image_sha256
    assert sha and replays[0].executor.image_sha256 == sha and not replays[0].executor.image_given
    manifest = json.loads(s3.get_object(Bucket=batch_world.bucket, Key=f"store/images/{sha}.json")["Body"].read())
    assert manifest["sha256"] == sha and s3.head_object(Bucket=batch_world.bucket, Key=f"store/images/{sha}.tar.zst")


def test_a_replay_on_batch_whose_image_is_now_other_bytes_is_refused_before_any_job(batch_run, batch_world, tmp_path):
    """The run's record names an image object whose root file system is not what the job image's name now
    holds in this host's daemon: the replay would not run in the recorded user space, so it is refused
    (exit 2) naming both objects and what to do, before anything is fetched or any job submitted."""
    from dataclasses import replace

    from metaflow_repro.model.interpreter import Executor, ExecutorKind

    record, s3 = batch_run["record"], batch_world.s3()
    other = "b" * 64  # an image object of another root file system, in the store with its manifest
    manifest = json.loads(
        s3.get_object(Bucket=batch_world.bucket, Key=f"store/images/{record.executor.image_sha256}.json")["Body"].read()
    )
    layer = manifest["rootfs_sha256"]  # what the daemon holds under the image's name
    manifest.update(sha256=other, rootfs_sha256="c" * 64)
    s3.put_object(Bucket=batch_world.bucket, Key=f"store/images/{other}.json", Body=json.dumps(manifest).encode())
    ran = Executor(ExecutorKind.BATCH, batch_world.image, image_sha256=other)
    path = tmp_path / "record.json"
    path.write_text(replace(record, executor=ran).to_json())
    r = cli("replay", str(path), "--on", "batch", env=batch_run["env"], cwd=tmp_path)
    assert r.code == 2, r.text[-4000:]
    assert "another root file system" in r.err and other[:12] in r.err and f"layer {layer[:12]}" in r.err
    assert "Workflow starting" not in r.text and "replaying" not in r.err, r.text[-3000:]


def test_with_batch_needs_an_s3_store(batch_world, tmp_path):
    """A file:// store cannot feed a container: exit 2 naming the flow and what to set, before any job."""
    path = write_flow(tmp_path / "proj", FLOW)
    env = {**batch_world.env, "REPRO_STORE": (tmp_path / "store").as_uri()}
    r = cli("run", path, "--", "--with", "batch", env=env, cwd=path.parent)
    assert r.code == 2, r.text[-3000:]
    assert "BatchForeachFlow" in r.text and "needs an S3 store" in r.text and "REPRO_STORE=s3://" in r.text


def test_a_fargate_queue_gets_no_instance_cache_an_ec2_queue_does(batch_world, monkeypatch):
    """Fargate has no instance, and AWS refuses a job definition with a host volume there: the volume is
    added only when the queue's first compute environment is EC2 or SPOT, as Metaflow tells the platform."""
    import boto3

    from metaflow_repro.executors.batch import host_volumes_allowed

    for name, value in batch_world.env.items():
        monkeypatch.setenv(name, value)
    batch = boto3.client("batch")
    ec2 = batch.describe_compute_environments()["computeEnvironments"][0]["computeResources"]
    ce = batch.create_compute_environment(
        computeEnvironmentName="fargate-ce",
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "FARGATE",
            "maxvCpus": 4,
            "subnets": ec2["subnets"],
            "securityGroupIds": ec2["securityGroupIds"],
        },
        serviceRole=batch.describe_compute_environments()["computeEnvironments"][0]["serviceRole"],
    )["computeEnvironmentArn"]
    batch.create_job_queue(
        jobQueueName="fargate-queue",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )
    assert host_volumes_allowed(batch_world.queue) is True
    assert host_volumes_allowed("fargate-queue") is False
    assert host_volumes_allowed("no-such-queue") is False  # Metaflow's submission says why
