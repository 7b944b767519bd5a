"""A store is untrusted input (issue 11): hostile records and objects are refused with exit 2 (or 3 for
bytes that do not match their hash), nothing lands outside REPRO_HOME or the store, push never uploads
or keeps corrupt objects, and gc never deletes what a push in flight names."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import boto3
import pytest

from metaflow_repro.errors import BadInput, IntegrityError
from metaflow_repro.model.record import from_json
from metaflow_repro.store import LocalStore, layout, open_store
from metaflow_repro.store.marker import mark
from metaflow_repro.store.snapshot import gc, load_record, parse_ref, push, scan_records, verify
from tests.helpers import cli
from tests.store_fakes import age, fake_run

# -- helpers --------------------------------------------------------------------------------------


def files_under(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")} if root.exists() else set()


def record_doc(run) -> dict:
    return json.loads(run.record.to_json())


def write_record(store_root: Path, doc: dict, flow: str = "FakeFlow", run_id: str = "1") -> Path:
    path = store_root / "runs" / flow / run_id / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


# -- 1, 3: fields that would lead out of their folder -------------------------------------------------

HOSTILE_FIELDS = [
    ("flow_file", "/etc/passwd"),
    ("flow_file", "../../outside.py"),
    ("flow_file", "a/../../b.py"),
    ("flow_file", "C:\\evil.py"),
    ("flow_file", "..\\evil.py"),
    ("code_sha256", "../../../../tmp/evil"),
    ("run_id", "../../x"),
    ("flow", "../Evil"),
]


@pytest.mark.parametrize("field,value", HOSTILE_FIELDS)
def test_hostile_record_fields_are_refused_naming_the_field_and_nothing_is_written(tmp_path, field, value):
    home = tmp_path / "home"
    run = fake_run(home)
    store = tmp_path / "store"
    doc = record_doc(run)
    doc[field] = value
    record_file = tmp_path / "record.json"
    record_file.write_text(json.dumps(doc))
    outside_before = files_under(tmp_path / "outside") | files_under(Path("/tmp/evil"))
    before = files_under(tmp_path)
    r = cli("replay", record_file, "--store", store.as_uri(), env={"REPRO_HOME": str(home)})
    assert r.code == 2, r.text
    assert f"'{field}'" in r.err and "Traceback" not in r.text
    assert files_under(tmp_path) == before  # no replay folder, no code extracted, nothing anywhere
    assert files_under(tmp_path / "outside") | files_under(Path("/tmp/evil")) == outside_before


def test_env_id_that_walks_out_of_locks_is_refused(tmp_path):
    run = fake_run(tmp_path / "home")
    doc = record_doc(run)
    env_id = next(iter(doc["envs"]))
    doc["envs"]["../../etc/passwd"] = doc["envs"].pop(env_id)
    with pytest.raises(BadInput, match="envs"):
        from_json(json.dumps(doc), "hostile.json")


def test_replay_passes_only_parameters_the_flow_declares():
    from metaflow_repro.operations.replay import recorded_args

    def _parameter_args(record, declared):
        return recorded_args(record, {}, Path("."), declared)

    run = fake_run(Path(os.environ["REPRO_HOME"]) / "params", parameters={"alpha": 2, "run-id-file": "/tmp/x"})
    with pytest.raises(BadInput, match="'run-id-file'.*not Parameters of flow FakeFlow"):
        _parameter_args(run.record, ("alpha",))
    ok = fake_run(Path(os.environ["REPRO_HOME"]) / "params", parameters={"alpha": 2, "label": "x"})
    assert _parameter_args(ok.record, ("alpha", "label")) == ["--alpha", "2", "--label", "x"]


@pytest.mark.parametrize(
    "members",
    [
        {"../evil.py": b"print('out')"},
        {"/abs/evil.py": b"x"},
        {"other.py": b"x"},  # flow.py not in it
    ],
)
def test_verify_flags_a_code_package_replay_would_refuse(tmp_path, members):
    run = fake_run(tmp_path / "home", code=members)
    store = LocalStore(str(tmp_path / "store"))
    push(run.record, store, run.settings)
    problems = verify(run.record, store)
    assert problems and layout.code(run.record.code_sha256) in problems[0]


# -- 10: spoofing, binary pointers, one bad record -------------------------------------------------


def test_a_record_filed_under_another_runs_key_is_refused(tmp_path):
    run = fake_run(tmp_path / "home", run_id="7")
    store_root = tmp_path / "store"
    write_record(store_root, record_doc(run), run_id="8")  # run 7 posing as run 8
    with pytest.raises(BadInput, match="filed as FakeFlow/8"):
        load_record(LocalStore(str(store_root)), parse_ref("FakeFlow/8"))


def test_binary_latest_is_bad_input(tmp_path):
    store_root = tmp_path / "store"
    (store_root / "runs" / "FakeFlow").mkdir(parents=True)
    (store_root / "runs" / "FakeFlow" / "latest").write_bytes(b"\xff\xfe\x00garbage")
    r = cli("store", "show", "FakeFlow/latest", "--store", store_root.as_uri())
    assert r.code == 2 and "not a run id" in r.err and "Traceback" not in r.text, r.text


def test_one_malformed_record_does_not_hide_the_others(tmp_path):
    home = tmp_path / "home"
    store_root = tmp_path / "store"
    store = LocalStore(str(store_root))
    push(fake_run(home, run_id="1").record, store, fake_run(home, run_id="1").settings)
    bad = record_doc(fake_run(home, run_id="2"))
    bad["steps"]["start"]["spec_id"] = 5  # wrong type
    write_record(store_root, bad, run_id="2")
    listing = scan_records(store)
    assert [r.run_id for r in listing.records] == ["1"]
    assert listing.broken and "spec_id" in listing.broken[0][1]
    ls = cli("store", "ls", "--store", store_root.as_uri())
    assert ls.code == 0 and "FakeFlow" in ls.out and "unreadable record" in ls.err
    v = cli("store", "verify", "--store", store_root.as_uri())
    assert v.code == 1 and "steps.start.spec_id" in v.out and "FakeFlow/1: ok" in v.out, v.text


def test_verify_of_a_store_that_does_not_exist_is_bad_input(tmp_path, s3_server):
    r = cli("store", "verify", "--store", (tmp_path / "typo").as_uri())
    assert r.code == 2 and "does not exist" in r.err, r.text
    r = cli("store", "verify", "--store", "s3://no-such-bucket-repro/x")
    assert r.code == 2 and "does not exist" in r.err, r.text
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("store", "verify", "--store", empty.as_uri())
    assert r.code == 0 and "no runs recorded" in r.out


# -- 5: push hashes what it uploads and repairs what it finds corrupt -------------------------------


def test_push_refuses_a_corrupt_local_code_package(tmp_path):
    run = fake_run(tmp_path / "home")
    data = bytearray(run.code_file.read_bytes())
    data[-1] ^= 1
    run.code_file.write_bytes(bytes(data))
    store = LocalStore(str(tmp_path / "store"))
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        push(run.record, store, run.settings)
    assert not (tmp_path / "store" / "runs").exists()  # no record, no code object
    assert not (tmp_path / "store" / "code").exists()


def test_push_refuses_a_cached_package_with_bit_rot_under_an_unchanged_stamp(tmp_path):
    run = fake_run(tmp_path / "home")
    from metaflow_repro.env.cache import PackageCache

    path = PackageCache(run.settings.home.packages).path(run.packages[0])
    st = path.stat()
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    with open(path, "r+b") as fh:  # same inode, same size, mtime put back: the stamp still matches
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(IntegrityError):
        push(run.record, LocalStore(str(tmp_path / "store")), run.settings)
    assert not (tmp_path / "store" / "runs").exists()


@pytest.fixture(params=["file", "s3"])
def any_store(request, tmp_path):
    if request.param == "file":
        return open_store((tmp_path / "store").as_uri())
    request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/team")


def _corrupt(store, key: str) -> None:
    if isinstance(store, LocalStore):
        path = store.root / key
        path.write_bytes(b"rotten" + path.read_bytes()[6:])
    else:
        store.client.put_object(Bucket=store.bucket, Key=store._key(key), Body=b"rotten bytes")


def test_a_repush_replaces_corrupt_objects(any_store, tmp_path):
    run = fake_run(tmp_path / "home")
    push(run.record, any_store, run.settings)
    assert verify(run.record, any_store) == []
    code_key = layout.code(run.record.code_sha256)
    pkg_key = layout.package(run.packages[0].sha256, run.packages[0].file)
    _corrupt(any_store, code_key)
    _corrupt(any_store, pkg_key)
    assert len(verify(run.record, any_store)) == 2
    result = push(run.record, any_store, run.settings)
    assert sorted(result.repaired) == sorted([code_key, pkg_key])
    assert verify(run.record, any_store) == []


def test_a_repush_of_large_objects_to_s3_keeps_them(tmp_path, s3_server, s3_bucket):
    store = open_store(f"s3://{s3_bucket}/big")
    run = fake_run(tmp_path / "home", first_size=20 * 1024 * 1024)
    push(run.record, store, run.settings)
    again = push(run.record, store, run.settings)
    assert again.repaired == [] and again.uploaded == {} and verify(run.record, store) == []


def test_s3_objects_carry_a_sha256_the_server_checked(tmp_path, s3_server, s3_bucket):
    store = open_store(f"s3://{s3_bucket}/p")
    run = fake_run(tmp_path / "home")
    push(run.record, store, run.settings)
    head = store.client.head_object(
        Bucket=s3_bucket, Key=store._key(layout.code(run.record.code_sha256)), ChecksumMode="ENABLED"
    )
    assert head.get("ChecksumSHA256")
    assert store.sha256(layout.code(run.record.code_sha256)) == run.record.code_sha256


# -- 4: gc racing a push ---------------------------------------------------------------------------


class PushDuringGc(LocalStore):
    """A local store on which a push happens right after gc's first listing of ``packages/``:
    the interleaving that lost objects (gc deleting from a stale listing)."""

    def __init__(self, uri, during):
        super().__init__(uri)
        self.during = during

    def list(self, prefix):
        items = list(super().list(prefix))
        if prefix == "packages/" and self.during:
            during, self.during = self.during, None
            during()
        return iter(items)


def test_gc_never_deletes_objects_a_concurrent_push_reuses(tmp_path):
    home = tmp_path / "home"
    store_root = tmp_path / "store"
    old = fake_run(home, run_id="1", seed="shared")
    push(old.record, LocalStore(str(store_root)), old.settings)
    # the old run's record goes (a failed push's leftovers look the same): its objects are orphans, old
    shutil.rmtree(store_root / "runs")
    for p in list(store_root.rglob("*")):
        if p.is_file():
            age(p)
    new = fake_run(home, run_id="2", seed="shared")  # names the same package files and code
    store = PushDuringGc(str(store_root), lambda: push(new.record, LocalStore(str(store_root)), new.settings))
    gc(store, grace_seconds=3600)
    assert verify(new.record, LocalStore(str(store_root))) == []


def test_gc_aborts_stale_uploads_and_partial_files(tmp_path, s3_server, s3_bucket):
    s3 = boto3.client("s3", endpoint_url=s3_server)
    up = s3.create_multipart_upload(Bucket=s3_bucket, Key="team/packages/sha256/aa/x/big.whl")
    store = open_store(f"s3://{s3_bucket}/team")
    mark(store)
    removed = gc(store, grace_seconds=0, stale_upload_seconds=0)
    assert any("big.whl" in k for k in removed)
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert up["UploadId"]
    local = tmp_path / "store"
    partial = local / "packages" / ".partial-abc"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    age(partial)
    mark(LocalStore(str(local)))
    gc(LocalStore(str(local)))
    assert not partial.exists()


# -- 11: leaks ---------------------------------------------------------------------------------------


def test_partial_downloads_older_than_an_hour_are_removed_at_startup(tmp_path):
    home = tmp_path / "home"
    folder = home / "packages" / "sha256" / "ab" / ("ab" * 32)
    folder.mkdir(parents=True)
    old, young = folder / ".partial-old", folder / ".partial-young"
    old.write_bytes(b"killed download")
    young.write_bytes(b"a download in progress")
    age(old)
    assert cli("store", "ls", "--store", (tmp_path / "store").as_uri(), env={"REPRO_HOME": str(home)}).code == 0
    assert not old.exists() and young.exists()


PARAM_FLOW = """
    from metaflow import FlowSpec, Parameter, step

    class ParamFlow(FlowSpec):
        alpha = Parameter("alpha", default=0.5, type=float)

        @step
        def start(self):
            self.scaled = self.alpha * 10
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        ParamFlow()
"""


@pytest.mark.slow
def test_replay_refuses_injected_options_and_leaves_no_workdir(tmp_path):
    from tests.helpers import write_flow

    mf_env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    path = write_flow(tmp_path / "proj", PARAM_FLOW)
    assert cli("lock", path).code == 0
    store_root = tmp_path / "store"
    r = cli("run", path, "--store", store_root.as_uri(), "--", "--alpha", "0.7", env=mf_env, cwd=tmp_path)
    assert r.code == 0, r.text[-3000:]
    replays = Path(os.environ["REPRO_HOME"]) / "replays" / "ParamFlow"
    before = set(replays.glob("*")) if replays.exists() else set()
    ok = cli("replay", "ParamFlow/latest", "--store", store_root.as_uri(), env=mf_env, cwd=tmp_path)
    assert ok.code == 0 and "result: identical" in ok.out, ok.text[-3000:]
    assert set(replays.glob("*")) == before  # the working folder went with the verdict
    kept = cli("replay", "ParamFlow/latest", "--store", store_root.as_uri(), "--keep", env=mf_env, cwd=tmp_path)
    assert kept.code == 0 and len(set(replays.glob("*")) - before) == 1
    # a record whose parameters name a Metaflow option: refused before anything runs
    record_file = next(store_root.glob("runs/ParamFlow*/*/record.json"))  # runs/<flow identity>/<run>/
    doc = json.loads(record_file.read_text())
    target = tmp_path / "injected-run-id"
    doc["parameters"]["run-id-file"] = str(target)
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(doc))
    bad = cli("replay", hostile, "--store", store_root.as_uri(), env=mf_env, cwd=tmp_path)
    assert bad.code == 2 and "'run-id-file'" in bad.err and "Traceback" not in bad.text, bad.text[-3000:]
    assert not target.exists()


def _pushed_with_orphan(tmp_path):
    """A folder store holding one pushed run and an old code package no record names: (its root, the
    orphan, the run)."""
    store_root = tmp_path / "store"
    run = fake_run(tmp_path / "home")
    push(run.record, LocalStore(str(store_root)), run.settings)
    orphan = store_root / "code" / ("e" * 64 + ".tar.gz")
    orphan.write_bytes(b"unnamed")
    age(orphan)
    return store_root, orphan, run


def test_gc_deletes_nothing_while_a_record_cannot_be_read(tmp_path):
    store_root, orphan, run = _pushed_with_orphan(tmp_path)
    (store_root / "runs" / "FakeFlow" / "2").mkdir()
    (store_root / "runs" / "FakeFlow" / "2" / "record.json").write_text("{not json")
    r = cli("store", "gc", "--store", store_root.as_uri())
    assert r.code == 2 and "cannot be read" in r.err and "Traceback" not in r.text, r.text
    assert orphan.exists()


@pytest.mark.parametrize("folder", ["FakeFlow@a b.py/1", "FakeFlow/1/nested", ".hidden/1"])
def test_a_record_where_no_record_is_kept_is_broken_and_gc_deletes_nothing(tmp_path, folder):
    """A record.json the store's layout does not parse as a record key might still name objects: gc must
    not skip it silently (it would delete what that record names) but refuse, as for an unreadable one."""
    store_root, orphan, run = _pushed_with_orphan(tmp_path)
    misplaced = store_root / "runs" / folder / "record.json"
    misplaced.parent.mkdir(parents=True)
    misplaced.write_text(run.record.to_json())
    listing = scan_records(LocalStore(str(store_root)))
    assert [r.run_id for r in listing.records] == [run.record.run_id]
    assert [k for k, _ in listing.broken] == [f"runs/{folder}/record.json"]
    assert "not where records are kept" in listing.broken[0][1]
    with pytest.raises(BadInput, match="cannot be read"):
        gc(LocalStore(str(store_root)), grace_seconds=0)
    assert orphan.exists()


def test_verify_cache_rehashes_every_cached_file_and_removes_damaged_ones(tmp_path):
    from metaflow_repro.env.cache import PackageCache

    home = tmp_path / "home"
    run = fake_run(home)
    cache = PackageCache(run.settings.home.packages)
    bad = cache.path(run.packages[1])
    st = bad.stat()
    os.chmod(bad, 0o644)
    with open(bad, "r+b") as fh:  # bit rot: same size, mtime kept
        fh.write(b"X")
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = cli("store", "verify", "--cache", env={"REPRO_HOME": str(home)})
    assert r.code == 1 and "5 file(s) re-hashed, 1 damaged and removed" in r.out and bad.name in r.out, r.text
    assert not bad.exists() and all(cache.path(p).exists() for p in run.packages if p != run.packages[1])
    assert cli("store", "verify", "--cache", env={"REPRO_HOME": str(home)}).code == 0


def test_replay_refuses_run_options_and_include_files_a_record_could_smuggle_in():
    """Pins: only run options that shape a run (--max-num-splits, --with, --tag...) and declared
    names reach Metaflow from a record; `--run-id-file` in run_options writes a file anywhere."""
    from dataclasses import replace as _replace

    from metaflow_repro.operations.replay import recorded_args

    run = fake_run(Path(os.environ["REPRO_HOME"]) / "smuggle", parameters={"alpha": 2})
    ok = _replace(run.record, run_options=("--max-num-splits", "1000", "--tag", "x", "--with", "retry:times=1"))
    assert recorded_args(ok, {}, Path("."), ("alpha",))[-6:] == list(ok.run_options)
    bad = _replace(run.record, run_options=("--run-id-file", "/tmp/anywhere"))
    with pytest.raises(BadInput, match="'--run-id-file'.*not options a replay passes on"):
        recorded_args(bad, {}, Path("."), ("alpha",))
    with pytest.raises(BadInput, match="'--run-id-file=/x'"):
        recorded_args(_replace(run.record, run_options=("--run-id-file=/x",)), {}, Path("."), ("alpha",))


def test_a_local_store_lists_every_flow_identity_folder_of_a_class(tmp_path):
    """Pins: `runs/F` as a listing prefix also finds `runs/F@flows~a.py/...` when a folder `runs/F/`
    (an older layout) exists, so `F/latest` is refused as ambiguous rather than read from the old one."""
    store = LocalStore(str(tmp_path / "store"))
    for key in ("runs/F/1/record.json", "runs/F@a.py/2/record.json", "runs/F@b.py/3/record.json", "runs/G/4/x"):
        store.put_bytes(key, b"{}")
    assert sorted(i.key for i in store.list("runs/F")) == [
        "runs/F/1/record.json",
        "runs/F@a.py/2/record.json",
        "runs/F@b.py/3/record.json",
    ]
    assert sorted(i.key for i in store.list("runs/F/")) == ["runs/F/1/record.json"]


DECLARING_FLOW = b"""
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("the flow file ran")  # verify must never run it
from metaflow import FlowSpec, IncludeFile, Parameter, step
import metaflow


class FakeFlow(FlowSpec):
    alpha = Parameter("alpha", default=1)
    data: object = metaflow.IncludeFile("data", default="data.csv")
    not_a_parameter = dict(alpha=2)

    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
"""


def test_verify_names_record_parameters_the_verified_flow_file_does_not_declare(tmp_path):
    """Read with ast from the flow file in the (hash-verified) code package: never imported."""
    home = Path(os.environ["REPRO_HOME"]) / "declared"
    store = open_store((tmp_path / "store").as_uri())
    cases = {
        "1": ({"alpha": 2, "smuggled": "x", "not_a_parameter": 1}, DECLARING_FLOW),
        "2": ({"alpha": 2}, DECLARING_FLOW),
        "3": (
            {"smuggled": "x"},
            DECLARING_FLOW.replace(b"class FakeFlow(FlowSpec)", b"class FakeFlow(Mixin, FlowSpec)"),
        ),
    }
    runs = {}
    for run_id, (parameters, source) in cases.items():
        run = fake_run(home, run_id=run_id, parameters=parameters, code={"flow.py": source})
        push(run.record, store, run.settings)
        runs[run_id] = run.record
    problems = verify(runs["1"], store)
    assert len(problems) == 1 and "'not_a_parameter', 'smuggled'" in problems[0], problems
    assert "not Parameters that flow FakeFlow declares in flow.py (alpha, data)" in problems[0]
    assert verify(runs["2"], store) == []
    assert verify(runs["3"], store) == []  # a mixin may declare more: the file alone cannot tell
    r = cli("store", "verify", "--store", store.uri)
    assert r.code == 1 and "FakeFlow/1: 1 problem(s)" in r.out and "'smuggled'" in r.out, r.text
    assert not list(tmp_path.rglob("IMPORTED")) and not list(home.rglob("IMPORTED"))
