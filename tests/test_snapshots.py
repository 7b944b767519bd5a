"""Record, snapshot, replay and compare, for real: Metaflow runs, uv-built envs, a local store and
S3 over HTTP (moto's server), replays from an empty REPRO_HOME with no package index."""

import json
import os
import shutil
import subprocess
import sys

import boto3
import pytest
import tomllib

from metaflow_repro.model.record import from_json
from tests.helpers import SCENARIOS, FlakyProxy, cli, require_netns

EXPECTED = tomllib.loads((SCENARIOS / "expected.toml").read_text())
pytestmark = pytest.mark.slow
NO_INDEX = {"REPRO_INDEX_URL": "http://127.0.0.1:9/simple", "UV_OFFLINE": "1"}


@pytest.fixture
def mf_env(tmp_path):
    """A private Metaflow datastore for the runs of one test."""
    return {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_FROZEN": "1",
    }


def run(flow, store, env, cwd):
    r = cli("run", SCENARIOS / f"{flow}.py", "--store", store, env=env, cwd=cwd)
    assert r.code == 0, r.text[-4000:]
    return r


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Runs recorded once for the module, each in a file store of its own (``recorded("linear")``); a test
    that needs one copies that store (``store_with``) and then changes its copy as it likes."""
    stores = {}

    def get(flow):
        if flow not in stores:
            work = tmp_path_factory.mktemp(f"recorded-{flow}")
            env = {
                "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "mf"),
                "METAFLOW_DEFAULT_DATASTORE": "local",
                "METAFLOW_DEFAULT_METADATA": "local",
                "REPRO_FROZEN": "1",
            }
            run(flow, (work / "store").as_uri(), env, work)
            stores[flow] = work / "store"
        return stores[flow]

    return get


def store_with(recorded, flow, root):
    """``root``: a copy of the module's store holding one recorded run of ``flow`` (as a ``run`` there)."""
    shutil.copytree(recorded(flow), root)
    return root


def record_of(store_uri, ref, env=None):
    r = cli("store", "show", ref, "--store", store_uri, env=env)
    assert r.code == 0, r.text
    return r.out


def s3_keys(endpoint, bucket, prefix=""):
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for p in pages for o in p.get("Contents", [])}


def test_s3_snapshot_then_replay_from_empty_home_without_an_index(tmp_path, s3_server, s3_bucket, mf_env):
    store = f"s3://{s3_bucket}/team"
    run("linear_sklearn", store, mf_env, tmp_path)
    keys = s3_keys(s3_server, s3_bucket, "team/")
    runs = [k for k in keys if k.endswith("/record.json")]
    assert len(runs) == 1 and "team/runs/LinearSklearnFlow@scenarios~linear_sklearn.py/latest" in keys
    record = from_json(
        boto3.client("s3", endpoint_url=s3_server).get_object(Bucket=s3_bucket, Key=runs[0])["Body"].read().decode(),
        runs[0],
    )
    # every package file (stated and transitive), every env lock, the code package
    for sha, name in record.package_shas().items():
        assert f"team/packages/sha256/{sha[:2]}/{sha}/{name}" in keys
    for env_id in record.envs:
        assert f"team/locks/{env_id}.toml" in keys
    assert f"team/code/{record.code_sha256}.tar.gz" in keys
    assert {"scikit-learn", "numpy", "scipy", "requests"} <= {p.name for e in record.envs.values() for p in e.packages}
    task = record.steps["start"].tasks["-"]
    assert task.artifacts["sklearn_version"].type and len(task.artifacts["sklearn_version"].sha1) == 40
    assert task.env_id == record.steps["start"].env_id and len(task.fingerprint) == 64
    assert record.pythonhashseed == "0" and record.metaflow_version.startswith("2.19")
    # a second record of the same flow uploads no package bytes
    second = run("linear_sklearn", store, mf_env, tmp_path)
    assert "packages: 0 uploaded" in second.err and "locks: 0 uploaded" in second.err
    packages_after = {k: v["LastModified"] for k, v in s3_keys(s3_server, s3_bucket, "team/packages/").items()}
    assert packages_after == {k: v["LastModified"] for k, v in keys.items() if k.startswith("team/packages/")}
    # months later, elsewhere: empty REPRO_HOME, no package index
    home = tmp_path / "empty-home"
    replay = cli(
        "replay",
        "LinearSklearnFlow/latest",
        "--store",
        store,
        cwd=tmp_path,
        env={**mf_env, **NO_INDEX, "REPRO_HOME": str(home)},
    )
    assert replay.code == 0, replay.text[-4000:]
    assert f"result: {EXPECTED['linear_sklearn']['replay']}" in replay.out
    assert "rebuilding env" in replay.err and "resolving" not in replay.err
    # each env's bytecode: packed at the record and in the store (a container replay restores it:
    # tests/test_docker_replay.py); a replay here builds into this machine's envs, which later runs reuse,
    # so it compiles: a record's bytecode is code that no source vouches for
    assert set(record.bytecode) == set(record.envs)
    for env_id, sha in record.bytecode.items():
        assert f"team/bytecode/{sha}.tar.zst" in keys
    assert "fetching the bytecode" not in replay.err
    assert not list((home / "bytecode").glob("*.tar.zst")), "a replay here takes no bytecode from a record"


def test_replay_in_a_network_namespace_with_no_network(tmp_path, mf_env, recorded):
    require_netns()
    store = store_with(recorded, "linear", tmp_path / "store").as_uri()
    env = {**os.environ, **mf_env, **NO_INDEX, "REPRO_HOME": str(tmp_path / "fresh-home")}
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "metaflow_repro", "replay", "LinearFlow/latest", "--store", store],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "result: identical" in proc.stdout


def test_pickle_matrix_shows_the_warning_and_the_failing_case(tmp_path, mf_env):
    store = (tmp_path / "store").as_uri()
    r = run("pickle_compat", store, mf_env, tmp_path)
    ref = "PickleCompatFlow/latest"
    path = next((tmp_path / "store").glob("runs/PickleCompatFlow@*/*/record.json"))
    record = from_json(path.read_text(), str(path))
    for artifact, reader, status, words in EXPECTED["pickle_compat"]["pickle"]:
        rows = [c for c in record.pickle_checks if c.artifact == artifact and reader in c.reader_steps]
        assert rows, (artifact, reader)
        assert rows[0].status == status, rows[0]
        assert words in rows[0].detail + rows[0].static
    warn = next(c for c in record.pickle_checks if c.artifact == "model" and "older_sklearn" in c.reader_steps)
    assert "scikit-learn 1.5.2 -> 1.5.1" in warn.static  # the static check names the version change
    assert "fails" in r.out and "InconsistentVersionWarning" in r.out
    assert "No module named 'numpy._core'" in record_of(store, ref)
    # expected.toml's `replay`: the recorded run replays to the same conclusion
    replay = cli("replay", ref, "--store", store, env=mf_env, cwd=tmp_path)
    want = EXPECTED["pickle_compat"]["replay"]
    assert replay.code == (0 if want == "identical" else 1), replay.text[-3000:]
    assert f"result: {want}" in replay.out


def test_unseeded_replay_is_different_and_says_how(tmp_path, mf_env, recorded):
    store = store_with(recorded, "unseeded_random", tmp_path / "store").as_uri()
    r = cli("replay", "UnseededRandomFlow/latest", "--store", store, env=mf_env, cwd=tmp_path)
    want = EXPECTED["unseeded_random"]["replay"]
    assert want == "different" and r.code == 1, r.text[-3000:]
    assert f"result: {want}" in r.out and EXPECTED["unseeded_random"]["replay_detail"] in r.out
    assert "label" not in r.out.split("result:")[0].split("different")[-1]  # identical artifacts are not listed


def test_diff_between_runs(tmp_path, mf_env, recorded):
    store = store_with(recorded, "unseeded_random", tmp_path / "store").as_uri()
    first = json.loads(next((tmp_path / "store").glob("runs/UnseededRandomFlow@*/*/record.json")).read_text())["run_id"]
    run("unseeded_random", store, mf_env, tmp_path)
    r = cli("diff", f"UnseededRandomFlow/{first}", "UnseededRandomFlow/latest", "--store", store, env=mf_env)
    assert r.code == 1 and "value: different" in r.out
    linear = store_with(recorded, "linear", tmp_path / "linear-store")
    lin = json.loads(next(linear.glob("runs/LinearFlow@*/*/record.json")).read_text())["run_id"]
    run("linear", linear.as_uri(), mf_env, tmp_path)
    r = cli("diff", f"LinearFlow/{lin}", "LinearFlow/latest", "--store", linear.as_uri(), env=mf_env)
    assert r.code == 0, r.text
    assert "different" not in r.out.split("\n", 1)[1].replace("different\n", "")


def test_missing_or_corrupt_objects_are_named_and_nothing_runs(tmp_path, mf_env, recorded):
    root = store_with(recorded, "linear", tmp_path / "store")
    assert cli("store", "verify", "--store", root.as_uri()).code == 0
    pkgs = sorted(root.glob("packages/sha256/*/*/*.whl"))
    missing, corrupt = pkgs[0], pkgs[1]
    missing.unlink()
    corrupt.write_bytes(b"tampered")
    v = cli("store", "verify", "--store", root.as_uri())
    assert v.code == 1
    assert f"{missing.relative_to(root).as_posix()}: missing" in v.out
    assert f"{corrupt.relative_to(root).as_posix()}: corrupt" in v.out
    r = cli(
        "replay",
        "LinearFlow/latest",
        "--store",
        root.as_uri(),
        cwd=tmp_path,
        env={**mf_env, "REPRO_HOME": str(tmp_path / "h")},
    )
    assert r.code == 3, r.text[-2000:]
    assert ("missing object " + missing.relative_to(root).as_posix()) in r.err or corrupt.relative_to(
        root
    ).as_posix() in r.err
    assert "Workflow starting" not in r.text


def test_corrupt_artifact_copy_is_never_unpickled(tmp_path, mf_env):
    root = tmp_path / "store"
    run("unseeded_random", root.as_uri(), mf_env, tmp_path)
    shutil.rmtree(tmp_path / "mf")  # only the store's copies remain
    path = next(root.glob("runs/UnseededRandomFlow@*/*/record.json"))
    record = from_json(path.read_text(), str(path))
    sha = record.steps["start"].tasks["-"].artifacts["value"].sha1
    import pickle

    (root / "artifacts" / "sha1" / sha[:2] / sha).write_bytes(pickle.dumps("evil but harmless"))
    assert cli("store", "verify", "--store", root.as_uri()).code == 1
    run("unseeded_random", root.as_uri(), mf_env, tmp_path)
    r = cli("diff", record.ref, "UnseededRandomFlow/latest", "--store", root.as_uri(), env=mf_env)
    assert r.code == 1 and "does not match its recorded sha1" in r.out and "not unpickled" in r.out


def test_store_failing_mid_push_leaves_no_record_and_the_next_push_completes(tmp_path, s3_server, s3_bucket, mf_env):
    store = f"s3://{s3_bucket}/flaky"
    proxy = FlakyProxy(int(s3_server.rsplit(":", 1)[1]), limit=2_000_000)
    try:
        r = cli(
            "run",
            SCENARIOS / "linear.py",
            "--store",
            store,
            cwd=tmp_path,
            env={**mf_env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.port}"},
        )
    finally:
        proxy.close()
    assert r.code == 3, r.text[-3000:]
    assert "did not finish" in r.err and "repro store push" in r.err
    keys = s3_keys(s3_server, s3_bucket, "flaky/")
    assert not [k for k in keys if k.startswith("flaky/runs/")]  # no record visible
    saved = r.err.split("repro store push ")[1].split()[0].rstrip(")")  # "(or repro store push PATH)"
    again = cli("store", "push", saved, "--store", store, env=mf_env)
    assert again.code == 0, again.text
    assert "already there" in again.err  # what landed before the failure is not uploaded again
    assert cli("store", "verify", "--store", store).code == 0


def test_unreachable_store_fails_the_push_with_exit_3(tmp_path, mf_env):
    from tests.helpers import free_port

    r = cli(
        "run",
        SCENARIOS / "linear.py",
        "--store",
        "s3://nobody/x",
        cwd=tmp_path,
        env={
            **mf_env,
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    assert r.code == 3 and "s3://nobody/x" in r.err


def test_bad_refs_and_newer_records_exit_2(tmp_path, mf_env):
    store = (tmp_path / "store").as_uri()
    assert cli("replay", "not a ref", "--store", store).code == 2
    assert "no runs of flow" in cli("replay", "NoSuchFlow/latest", "--store", store).err
    newer = tmp_path / "record.json"
    newer.write_text(json.dumps({"schema": "repro.run-record", "schema_version": 99}))
    r = cli("replay", str(newer), "--store", store)
    assert r.code == 2 and "schema version 99, newer than this repro" in r.err


def test_gc_removes_only_what_no_record_names(tmp_path, mf_env, recorded):
    root = store_with(recorded, "linear", tmp_path / "store")
    stray = root / "packages" / "sha256" / "ff" / ("f" * 64) / "stray-1.0-py3-none-any.whl"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"orphan")
    os.utime(stray, (0, 0))  # old enough to be past the grace period
    young = root / "code" / ("e" * 64 + ".tar.gz")
    young.write_bytes(b"a push in flight")
    r = cli("store", "gc", "--store", root.as_uri())
    assert r.code == 0 and "removed 1 object" in r.out
    assert not stray.exists() and young.exists()
    assert cli("store", "verify", "--store", root.as_uri()).code == 0
    ls = cli("store", "ls", "--store", root.as_uri())
    assert "LinearFlow" in ls.out


def test_gc_long_after_a_push_keeps_every_object_a_record_names(tmp_path, mf_env, recorded):
    """Pins gc's `not in named` rule: an object a record names is never deleted, however old.
    Every object here is aged far past the default grace period (as an hour after any push), so
    only that rule can keep the snapshot whole."""
    root = store_with(recorded, "linear", tmp_path / "store")
    orphan = root / "artifacts" / "sha1" / "00" / ("0" * 40)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"named by no record")
    objects = [p for p in root.rglob("*") if p.is_file()]
    for p in objects:
        os.utime(p, (1_000_000, 1_000_000))  # 1970: older than any grace period
    # objects records name (runs/ are the records; leases/ of finished pushes expire, as they should)
    named = [p for p in objects if p != orphan and p.relative_to(root).parts[0] not in ("runs", "leases")]
    assert len(named) > 5
    r = cli("store", "gc", "--store", root.as_uri())
    assert r.code == 0, r.text
    assert "removed 1 object" in r.out, r.out
    assert not orphan.exists()
    assert [p for p in named if not p.exists()] == []
    v = cli("store", "verify", "--store", root.as_uri())
    assert v.code == 0, v.text
    # and the snapshot still replays from an empty home
    replay = cli(
        "replay",
        "LinearFlow/latest",
        "--store",
        root.as_uri(),
        cwd=tmp_path,
        env={**mf_env, **NO_INDEX, "REPRO_HOME": str(tmp_path / "fresh-home")},
    )
    assert replay.code == 0, replay.text[-3000:]
    assert f"result: {EXPECTED['linear'].get('replay', 'identical')}" in replay.out


def test_replay_uses_the_recorded_parameters(tmp_path, mf_env):
    from tests.helpers import write_flow

    path = write_flow(
        tmp_path / "proj",
        """
        from metaflow import FlowSpec, Parameter, step

        class ParamFlow(FlowSpec):
            alpha = Parameter("alpha", default=0.5, type=float)
            label = Parameter("label", default="plain")

            @step
            def start(self):
                self.scaled = self.alpha * 10
                self.tag = self.label.upper()
                self.next(self.end)

            @step
            def end(self):
                pass

        if __name__ == "__main__":
            ParamFlow()
    """,
    )
    assert cli("lock", path).code == 0
    store = (tmp_path / "store").as_uri()
    r = cli("run", path, "--store", store, "--", "--alpha", "0.7", "--label", "tuned", env=mf_env, cwd=tmp_path)
    assert r.code == 0, r.text[-3000:]
    rec = from_json(next((tmp_path / "store").glob("runs/ParamFlow@*/*/record.json")).read_text(), "record")
    assert rec.parameters == {"alpha": 0.7, "label": "tuned"}
    replay = cli("replay", "ParamFlow/latest", "--store", store, env=mf_env, cwd=tmp_path)
    assert replay.code == 0, replay.text[-3000:]
    assert "result: identical" in replay.out  # with the defaults, scaled and tag would differ
