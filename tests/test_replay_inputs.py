"""Replays of flows written as Metaflow's tutorials write them: what the run depended on (IncludeFile
contents, Config values, run options) is recorded, snapshotted and given back to the replay; a replay
that fails says so (exit 3), apart from a difference in results (exit 1). Real Metaflow runs, S3 over
HTTP (moto), replays from an empty REPRO_HOME in a network namespace with only the store reachable."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import boto3
import pytest

from metaflow_repro.model.record import ConfigSource, from_json
from tests.helpers import cli, write_flow
from tests.netns import can_unshare, offline

pytestmark = pytest.mark.slow
NO_INDEX = {"REPRO_INDEX_URL": "http://127.0.0.1:9/simple", "UV_OFFLINE": "1"}


@pytest.fixture
def mf_env(tmp_path):
    return {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_FROZEN": "0",
    }


def s3_record(endpoint, bucket, prefix, flow, run_id=None):
    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/runs/{flow}@")["Contents"]]
    folder = {k.split("/")[2] for k in keys}
    assert len(folder) == 1, folder  # one flow file defines the flow: one identity
    folder = folder.pop()
    if run_id is None:
        run_id = s3.get_object(Bucket=bucket, Key=f"{prefix}/runs/{folder}/latest")["Body"].read().decode()
    key = f"{prefix}/runs/{folder}/{run_id}/record.json"
    return from_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode(), key)


def replay_offline(ref, store, tmp_path, mf_env, s3_server, *extra):
    """`repro replay` from an empty REPRO_HOME with no network but the S3 server."""
    if not can_unshare():
        pytest.skip("cannot create a network namespace here")
    port = int(s3_server.rsplit(":", 1)[1])
    env = {**os.environ, **mf_env, **NO_INDEX, "REPRO_HOME": str(tmp_path / "empty-home")}
    proc = offline(
        [sys.executable, "-m", "metaflow_repro", "replay", ref, "--store", store, *extra], env, tmp_path, port
    )
    return proc


INCLUDE_CONFIG_FLOW = """
    import hashlib
    from metaflow import FlowSpec, IncludeFile, Config, step


    def parse_requirements(text):
        return dict(line.split("==") for line in text.splitlines() if "==" in line)


    class IncludeConfigFlow(FlowSpec):
        table = IncludeFile("table", default="big.csv")
        blob = IncludeFile("blob", is_text=False, default="blob.bin")
        pins = Config("pins", default="requirements.txt", parser=parse_requirements)
        opts = Config("opts", default_value={"k": 0})

        @step
        def start(self):
            self.table_sha = hashlib.sha256(self.table.encode("utf-8")).hexdigest()
            self.blob_sha = hashlib.sha256(self.blob).hexdigest()
            self.pinned = dict(self.pins)
            self.k = self.opts.k
            self.next(self.end)

        @step
        def end(self):
            print("pins", self.pinned, "k", self.k)


    if __name__ == "__main__":
        IncludeConfigFlow()
"""


def test_include_file_and_config_replay_offline_from_s3_without_the_files(tmp_path, s3_server, s3_bucket, mf_env):
    proj = tmp_path / "proj"
    path = write_flow(proj, INCLUDE_CONFIG_FLOW)
    big = proj / "big.csv"
    big.write_text("".join(f"{i},{i * i},{hashlib.sha1(str(i).encode()).hexdigest()}\n" for i in range(6000)))
    assert big.stat().st_size > 200 * 1024
    blob = proj / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 40 + b"\x00\xff\r\n")
    (proj / "requirements.txt").write_text("pandas==2.2.3\nnumpy==2.1.0\n")
    store = f"s3://{s3_bucket}/team"
    r = cli("run", path, "--store", store, "--", "--config-value", "opts", '{"k": 7}', env=mf_env, cwd=proj)
    assert r.code == 0, r.text[-4000:]
    record = s3_record(s3_server, s3_bucket, "team", "IncludeConfigFlow")
    # the files' bytes, their names and how Metaflow read them; not their contents as parameters
    table, raw = record.include_files["table"], record.include_files["blob"]
    assert (table.name, table.size, table.sha256, table.is_text, table.encoding) == (
        "big.csv",
        big.stat().st_size,
        hashlib.sha256(big.read_bytes()).hexdigest(),
        True,
        "utf-8",
    )
    assert (raw.name, raw.sha256, raw.is_text) == ("blob.bin", hashlib.sha256(blob.read_bytes()).hexdigest(), False)
    assert "table" not in record.parameters and "blob" not in record.parameters
    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3_bucket, Prefix="team/inputs/")[
            "Contents"
        ]
    }
    assert keys == {f"team/inputs/sha256/{s[:2]}/{s}" for s in (table.sha256, raw.sha256)}
    # Config values with where they came from
    assert json.loads(record.configs["pins"].value) == {"pandas": "2.2.3", "numpy": "2.1.0"}
    assert record.configs["pins"].source is ConfigSource.DEFAULT and record.configs["pins"].parser
    assert json.loads(record.configs["opts"].value) == {"k": 7}
    assert record.configs["opts"].source is ConfigSource.COMMAND_LINE
    show = cli("store", "show", record.ref, "--store", store)
    assert "IncludeFile table: big.csv" in show.out and "Config opts (command line)" in show.out
    # the replay does not need the user's checkout: the files are gone, the defaults would differ
    for f in (big, blob, proj / "requirements.txt"):
        f.unlink()
    proc = replay_offline(record.ref, store, tmp_path, mf_env, s3_server)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "result: identical" in proc.stdout
    replayed = s3_record(
        s3_server, s3_bucket, "team", "IncludeConfigFlow", proc.stdout.split(" as IncludeConfigFlow/")[1].split()[0]
    )
    assert replayed.replay_of == record.ref
    assert replayed.include_files["table"].sha256 == table.sha256  # byte-identical contents seen
    start = replayed.steps["start"].tasks["-"].artifacts
    assert start["table_sha"].sha1 == record.steps["start"].tasks["-"].artifacts["table_sha"].sha1
    assert start["pinned"].sha1 == record.steps["start"].tasks["-"].artifacts["pinned"].sha1
    # the replay is not the flow's latest run
    assert s3_record(s3_server, s3_bucket, "team", "IncludeConfigFlow").ref == record.ref


WIDE_FOREACH_FLOW = """
    from metaflow import FlowSpec, Parameter, current, step


    class WideForeachFlow(FlowSpec):
        n = Parameter("n", default=5, type=int)

        @step
        def start(self):
            self.tagged = "wide" in current.tags  # only the recorded `--tag wide` makes this True
            self.items = list(range(self.n))
            self.next(self.square, foreach="items")

        @step
        def square(self):
            self.value = self.input * self.input
            self.next(self.join)

        @step
        def join(self, inputs):
            self.total = sum(i.value for i in inputs)
            self.next(self.end)

        @step
        def end(self):
            print("total", self.total)


    if __name__ == "__main__":
        WideForeachFlow()
"""


def test_run_options_are_recorded_and_replayed_and_can_be_overridden(tmp_path, s3_server, s3_bucket, mf_env):
    proj = tmp_path / "proj"
    path = write_flow(proj, WIDE_FOREACH_FLOW)
    store = f"s3://{s3_bucket}/opts"
    r = cli(
        "run",
        path,
        "--store",
        store,
        "--",
        "--max-num-splits",
        "50",
        "--max-workers",
        "8",
        "--tag",
        "wide",
        "--with",
        "retry:times=1",
        env=mf_env,
        cwd=proj,
    )
    assert r.code == 0, r.text[-4000:]
    record = s3_record(s3_server, s3_bucket, "opts", "WideForeachFlow")
    assert record.run_options == (
        "--max-num-splits",
        "50",
        "--max-workers",
        "8",
        "--tag",
        "wide",
        "--with",
        "retry:times=1",
    )
    assert len(record.steps["square"].tasks) == 5
    assert "run options: --max-num-splits 50" in cli("store", "show", record.ref, "--store", store).out
    # identical only if the replay ran with the recorded options: without `--tag wide`, `tagged` is False
    proc = replay_offline(record.ref, store, tmp_path, mf_env, s3_server)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "result: identical" in proc.stdout
    # `repro replay REF -- ...` overrides a recorded option (5 splits > 4 fails); the replay's record says so
    proc = replay_offline(record.ref, store, tmp_path, mf_env, s3_server, "--", "--max-num-splits", "4")
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "result: replay failed" in proc.stdout and "result: different" not in proc.stdout
    replay_id = proc.stdout.split("replay recorded as WideForeachFlow/")[1].split()[0]
    replayed = s3_record(s3_server, s3_bucket, "opts", "WideForeachFlow", replay_id)
    assert replayed.replay_of == record.ref and replayed.run_options[-2:] == ("--max-num-splits", "4")


FAILING_REPLAY_FLOW = """
    import os
    from metaflow import FlowSpec, Parameter, step


    class FailingReplayFlow(FlowSpec):
        marker = Parameter("marker", default="")

        @step
        def start(self):
            self.value = 42
            self.next(self.check)

        @step
        def check(self):
            if os.path.exists(self.marker):
                raise RuntimeError("the marker file appeared: " + self.marker)
            self.next(self.end)

        @step
        def end(self):
            pass


    if __name__ == "__main__":
        FailingReplayFlow()
"""


def test_a_replay_whose_step_raises_is_replay_failed_not_different(tmp_path, mf_env):
    proj = tmp_path / "proj"
    path = write_flow(proj, FAILING_REPLAY_FLOW)
    marker = tmp_path / "marker"
    store = (tmp_path / "store").as_uri()
    r = cli("run", path, "--store", store, "--", "--marker", str(marker), env=mf_env, cwd=proj)
    assert r.code == 0, r.text[-4000:]
    marker.write_text("now the step raises")
    rep = cli("replay", "FailingReplayFlow/latest", "--store", store, env=mf_env, cwd=tmp_path)
    assert rep.code == 3, rep.text[-4000:]
    assert "result: replay failed" in rep.out and "result: different" not in rep.out
    line = next(x for x in rep.out.splitlines() if x.startswith("step check failed"))
    assert "RuntimeError: the marker file appeared" in line
    logs = next(x for x in rep.out.splitlines() if x.startswith("its logs: ")).split(": ", 1)[1]
    shown = subprocess.run(
        logs, shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, **mf_env}
    )
    assert "the marker file appeared" in shown.stdout + shown.stderr, shown.stdout[-2000:] + shown.stderr[-2000:]
    # the failed replay is recorded, with replay_of, and can be named like any run
    replay_ref = rep.out.split("replay recorded as ")[1].split()[0]
    show = cli("store", "show", replay_ref, "--store", store)
    assert show.code == 0 and "replay of FailingReplayFlow/" in show.out and "status failed" in show.out
    assert cli("report", replay_ref, "--store", store).code == 0
    diff = cli("diff", "FailingReplayFlow/latest", replay_ref, "--store", store, env=mf_env)
    assert diff.code == 1 and "end/-.*: different: task - exists only in" in diff.out  # never reached


def test_the_replay_runtime_is_the_recorded_metaflow_not_the_hosts(tmp_path, mf_env):
    """Months later the host's Metaflow moved on: the replay still runs on the Metaflow that ran the
    original (it is in the code package) and its record names that version."""
    import shutil

    import metaflow

    from metaflow_repro.adapter.metaflow import _metaflow_version
    from metaflow_repro.env.uvtool import uv_bin

    if not can_unshare():
        pytest.skip("cannot create a network namespace here")
    recorded = _metaflow_version()
    other = "2.19.38" if recorded != "2.19.38" else "2.19.37"
    venv = tmp_path / "host-later"
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    subprocess.run([uv_bin(), "venv", "-q", str(venv), "--python", sys.executable], check=True)
    subprocess.run(
        [uv_bin(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-e", root, f"metaflow=={other}"],
        check=True,
        timeout=600,
    )
    later = str(venv / "bin" / "python")
    assert (
        subprocess.run(
            [later, "-c", "import metaflow; print(metaflow.__version__)"], capture_output=True, text=True, cwd=tmp_path
        ).stdout.strip()
        == other
    )
    proj = tmp_path / "proj"
    path = write_flow(proj, FAILING_REPLAY_FLOW)
    store = (tmp_path / "store").as_uri()
    r = cli("run", path, "--store", store, env=mf_env, cwd=proj)
    assert r.code == 0, r.text[-4000:]
    env = {**os.environ, **mf_env, **NO_INDEX, "REPRO_HOME": str(tmp_path / "empty-home")}
    proc = offline(
        [later, "-m", "metaflow_repro", "replay", "FailingReplayFlow/latest", "--store", store], env, tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "result: identical" in proc.stdout
    replay_ref = proc.stdout.split("replay recorded as ")[1].split()[0]
    show = cli("store", "show", replay_ref, "--store", store)
    assert f"metaflow {recorded}" in show.out and f"metaflow {other}" not in show.out, show.out
    assert metaflow.__version__ == recorded  # this test's own Metaflow was never touched
    shutil.rmtree(venv)
