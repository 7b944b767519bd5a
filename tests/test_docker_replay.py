"""`repro replay REF --on docker`: a run recorded here and pushed to S3 (moto) is replayed in a fresh
container (real Docker daemon, host network only) from an empty REPRO_HOME on the host and in the
container: the interpreter is restored from the store's snapshot (the image has no such Python), the
environment is rebuilt offline from the store, and the verdict is made on the host. One recorded run
is shared by the tests of this module."""

from __future__ import annotations

import boto3
import pytest

from metaflow_repro.model.interpreter import ExecutorKind
from metaflow_repro.model.record import from_json
from tests.helpers import cli, write_flow

pytestmark = pytest.mark.slow

FLOW = """
    from metaflow import FlowSpec, step, pypi


    class BoxedFlow(FlowSpec):
        @pypi(packages={"six": "1.16.0"})
        @step
        def start(self):
            import sys

            import six

            self.words = [six.text_type(w) for w in ("a", "b", "c")]
            self.python = "%d.%d.%d" % sys.version_info[:3]
            self.next(self.end)

        @step
        def end(self):
            self.total = len(self.words)


    if __name__ == "__main__":
        BoxedFlow()
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, s3_server, docker_daemon, base_image):
    """BoxedFlow run once here and pushed to a fresh bucket: (store URI, record, bucket)."""
    work = tmp_path_factory.mktemp("boxed")
    bucket = f"boxed-{work.name.lower().replace('_', '-')}"[:60]
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    store = f"s3://{bucket}/team"
    path = write_flow(work / "proj", FLOW)
    mf = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    r = cli("run", path, "--store", store, env=mf, cwd=path.parent)
    assert r.code == 0, r.text[-4000:]
    s3 = boto3.client("s3", endpoint_url=s3_server)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="team/")["Contents"]]
    record_key = next(k for k in keys if k.endswith("/record.json"))
    record = from_json(s3.get_object(Bucket=bucket, Key=record_key)["Body"].read().decode(), record_key)
    return store, record, bucket, keys


def test_the_run_pushes_the_interpreter_snapshot(recorded, s3_server):
    store, record, bucket, keys = recorded
    (version, snap), *more = record.interpreters.items()
    assert not more and version == next(iter(record.envs.values())).python
    assert f"team/pythons/{snap.file_name}" in keys and f"team/pythons/{snap.sha256}.json" in keys
    assert snap.compression == "zstd"  # extracted as it downloads, in the container
    assert record.executor.kind is ExecutorKind.LOCAL


def test_replay_on_docker_from_an_empty_home_is_identical(recorded, tmp_path, s3_server):
    store, record, bucket, _ = recorded
    r = cli("replay", record.ref, "--store", store, "--on", "docker", env={"REPRO_HOME": str(tmp_path / "empty")})
    assert r.code == 0, r.text[-6000:]
    assert "result: identical" in r.out
    # the container restored the interpreter: the image has no Python at that prefix
    snap = next(iter(record.interpreters.values()))
    assert f"restoring Python {snap.python} at {snap.prefix}" in r.err
    assert "rebuilding env" in r.err
    # the container's build restored each env's bytecode from the store's object instead of compiling
    assert record.bytecode and set(record.bytecode) == set(record.envs)
    for env_id, sha in record.bytecode.items():
        assert f"fetching the bytecode of env {env_id[:12]} from the store ({sha[:12]})" in r.err
    replayed_key = r.out.split("replay recorded as ", 1)[1].split(" in ", 1)[1].strip().splitlines()[0]
    key = replayed_key.split(f"s3://{bucket}/", 1)[1]
    body = boto3.client("s3", endpoint_url=s3_server).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    replayed = from_json(body, key)
    assert replayed.replay_of == record.ref
    assert replayed.executor.kind is ExecutorKind.DOCKER and replayed.executor.image.startswith("sha256:")
    show = cli("store", "show", f"{record.flow}/{replayed.run_id}", "--store", store)
    assert f"ran on docker (image {replayed.executor.image})" in show.out, show.text
    # the tasks ran in the recorded envs, built in the container's empty REPRO_HOME from the restored
    # interpreter (each task checks its env against the lock; the image's own python3 is Debian's 3.11.2,
    # and the artifact `python` is identical)
    for step in ("start", "end"):
        (old,), (new,) = record.steps[step].tasks.values(), replayed.steps[step].tasks.values()
        assert new.interpreter.startswith("/tmp/repro-home/envs/") and new.env_id == old.env_id


def test_a_tampered_package_in_the_store_fails_the_container_replay_naming_it(recorded, tmp_path, s3_server):
    store, record, bucket, keys = recorded
    six_key = next(k for k in keys if "/packages/" in k and k.rsplit("/", 1)[1].startswith("six-"))
    s3 = boto3.client("s3", endpoint_url=s3_server)
    good = s3.get_object(Bucket=bucket, Key=six_key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=six_key, Body=good[:-1] + bytes([good[-1] ^ 1]))
    try:
        r = cli("replay", record.ref, "--store", store, "--on", "docker", env={"REPRO_HOME": str(tmp_path / "e")})
    finally:
        s3.put_object(Bucket=bucket, Key=six_key, Body=good)
    assert r.code == 3, r.text[-6000:]
    assert six_key.split("team/", 1)[1] in r.err and "corrupt" in r.err


def test_an_image_the_daemon_does_not_have_is_bad_input(recorded, tmp_path):
    store, record, _, _ = recorded
    r = cli(
        "replay",
        record.ref,
        "--store",
        store,
        "--on",
        "docker",
        "--image",
        "nowhere/none:1",
        env={"REPRO_HOME": str(tmp_path)},
    )
    assert r.code == 2 and "--image nowhere/none:1" in r.err, r.text[-3000:]


def test_a_record_file_replays_on_docker_from_the_store(recorded, tmp_path, s3_server):
    """`repro replay path/to/record.json --on docker`: the file is validated on the host and mounted
    read-only; everything else comes from the store, as for FlowName/run_id."""
    store, record, bucket, _ = recorded
    record_file = tmp_path / "saved" / "record.json"
    record_file.parent.mkdir()
    record_file.write_text(record.to_json())
    r = cli("replay", record_file, "--store", store, "--on", "docker", env={"REPRO_HOME": str(tmp_path / "empty")})
    assert r.code == 0, r.text[-6000:]
    assert "result: identical" in r.out and "mounted read-only" in r.err, r.text[-3000:]
    assert f"replayed {record.ref} as " in r.out


def test_a_bad_record_file_is_refused_on_the_host_before_any_container(recorded, tmp_path):
    store, record, _, _ = recorded
    bad = tmp_path / "record.json"
    bad.write_text(record.to_json().replace('"run_id": "', '"run_id": "../', 1))
    r = cli("replay", bad, "--store", store, "--on", "docker", env={"REPRO_HOME": str(tmp_path / "h")})
    assert r.code == 2, r.text[-3000:]
    assert str(bad) in r.err and "run_id" in r.err and "fresh container" not in r.err, r.text[-3000:]
