"""One codec per type: PlatformLock through the lock file, the store's lock object and the run
record; the strict run-record decoder; property-based round trips. Pure, fast."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaflow_repro.errors import BadInput, LockFileError
from metaflow_repro.model.interpreter import Executor, ExecutorKind, InterpreterSnapshot, parse_snapshot
from metaflow_repro.model.lock import Lock, Package, PlatformLock, StepLock, parse_lock
from metaflow_repro.model.record import (
    SCHEMA_VERSION,
    ArtifactRecord,
    ConfigRecord,
    ConfigSource,
    Hybrid,
    IncludedFileRecord,
    InputArtifact,
    InputVia,
    PickleCheck,
    PickleStatus,
    RunRecord,
    RunStatus,
    StepRecord,
    TaskRecord,
    UpstreamRun,
    UpstreamTask,
    from_json,
)
from metaflow_repro.store.snapshot import StoreObjectCorrupt, env_lock_toml, parse_env_lock, record_packages

SHA_A, SHA_B = "a" * 64, "0123456789abcdef" * 4


def pkg(name="numpy", version="1.26.4", sha=SHA_A, size=123):
    file = f"{name}-{version}-py3-none-any.whl"
    return Package(name, version, "pypi", file, f"https://example.invalid/{file}", sha, size)


ENV = PlatformLock("linux-64", "3.11.7", (pkg("requests", "2.32.3", SHA_B), pkg()))


def make_record(env: PlatformLock = ENV, **changes) -> RunRecord:
    arts = {
        "x": ArtifactRecord(sha1="1" * 40, size=5, type="<class 'int'>", stored=True),
        "_foreach_stack": ArtifactRecord(sha1="2" * 40, size=5, type="<class 'list'>"),
    }
    steps = {
        "start": StepRecord(
            spec_id="5" * 64,
            env_id=env.env_id,
            disabled=False,
            tasks={"-": TaskRecord("1", env.env_id, "f" * 64, "/envs/x/bin/python", arts)},
        ),
        "end": StepRecord(
            spec_id="6" * 64,
            env_id="disabled",
            disabled=True,
            tasks={"-": TaskRecord("2", "disabled", "", "/usr/bin/python3", {})},
        ),
    }
    fields = dict(
        flow="MyFlow",
        run_id="1795853570405835",
        flow_file="flows/my_flow.py",
        code_sha256="c" * 64,
        lock_sha256="d" * 64,
        parameters={"alpha": 0.5, "max-depth": 3},
        pythonhashseed="0",
        metaflow_version="2.19.39",
        repro_version="0.1.0",
        host={"platform": "linux-64", "node": "vm"},
        datastore={"type": "local", "root": "/tmp/mf/.metaflow"},
        steps=steps,
        envs={env.env_id: env},
        created_at="2026-11-28T08:12:53+00:00",
        duration_s=3.654,
        status=RunStatus.SUCCESS,
        pickle_checks=(
            PickleCheck(
                "start",
                "-",
                "x",
                env.env_id,
                ("start", "end"),
                PickleStatus.WARNING,
                "loads, but versions differ",
                "numpy 1.26.4 -> 2.1.3",
            ),
        ),
        settings={"conda_source": "pypi"},
        graph={"start": ("end",), "end": ()},
        step_order=("start", "end"),
    )
    return RunRecord(**{**fields, **changes})


# -- one PlatformLock codec, three uses ------------------------------------------------------------


def test_platform_lock_dict_round_trip_is_exact():
    d = ENV.to_dict()
    assert set(d) == {"env_id", "platform", "python", "packages"} and d["env_id"] == ENV.env_id
    assert [p["name"] for p in d["packages"]] == ["numpy", "requests"]  # canonical order
    assert PlatformLock.from_dict(d, "here") == ENV


def test_the_lock_file_the_store_object_and_the_record_give_the_same_environment(tmp_path):
    step = StepLock(
        "start", "pypi", "pypi", "3.11", (("numpy", "1.26.4"),), (("requests", "2.32.3"),), (), False, {"linux-64": ENV}
    )
    via_lock = parse_lock(Lock("MyFlow", "flow.py", {"start": step}).to_toml(), tmp_path / "flow.repro.lock")
    via_lock = via_lock.steps["start"].platforms["linux-64"]
    via_store = parse_env_lock(env_lock_toml(ENV), ENV.env_id, "store/locks/x.toml")
    via_record = from_json(make_record().to_json(), "record.json").envs[ENV.env_id]
    assert via_lock == via_store == via_record == ENV
    assert via_lock.env_id == via_store.env_id == via_record.env_id == ENV.env_id


def test_record_envs_are_typed_and_keep_the_v1_json_shape():
    record = make_record()
    doc = json.loads(record.to_json())
    assert doc["schema_version"] == 5 and SCHEMA_VERSION == 6  # nothing of schema 6 in it: a schema-5 repro reads it
    for newer in (
        replace(record, replay_of="MyFlow/1", hybrid=Hybrid("ab" * 32)),
        replace(record, executor=Executor(ExecutorKind.BATCH, image_digest="sha256:" + "e" * 64)),
    ):
        assert json.loads(newer.to_json())["schema_version"] == 6
        assert from_json(newer.to_json(), "record.json") == newer
    assert doc["envs"][ENV.env_id] == {k: v for k, v in ENV.to_dict().items() if k != "env_id"}
    assert doc["status"] == "success" and doc["pickle_checks"][0]["status"] == "warning"
    back = from_json(record.to_json(), "record.json")
    assert back == record and back.to_json() == record.to_json()
    assert back.status is RunStatus.SUCCESS and back.pickle_checks[0].status is PickleStatus.WARNING
    assert f"{back.status}" == "success" and str(PickleStatus.FAILS) == "fails"
    assert record_packages(back) == list(ENV.packages)


def test_a_store_object_whose_packages_do_not_hash_to_its_name_is_corrupt():
    other = PlatformLock("linux-64", "3.11.7", (pkg(),))
    with pytest.raises(StoreObjectCorrupt, match="env_id does not match the packages"):
        parse_env_lock(env_lock_toml(other), ENV.env_id, "store/locks/x.toml")
    with pytest.raises(StoreObjectCorrupt, match="not a valid environment lock"):
        parse_env_lock(b"\xff not toml", ENV.env_id, "store/locks/x.toml")


def test_a_lock_section_filed_under_another_platform_is_refused(tmp_path):
    step = StepLock("start", "pypi", "pypi", "3.11", (), (), (), False, {"linux-64": ENV})
    text = Lock("MyFlow", "flow.py", {"start": step}).to_toml()
    assert 'platform = "' not in text  # the section's name says it: the lock file format is unchanged
    bad = text.replace(
        "[steps.start.platforms.linux-64]\n", '[steps.start.platforms.linux-64]\nplatform = "osx-arm64"\n'
    )
    with pytest.raises(LockFileError, match="steps.start.platforms.linux-64.platform"):
        parse_lock(bad, tmp_path / "flow.repro.lock")


# -- the strict record decoder ------------------------------------------------------------------

E = ENV.env_id


def _set(path, value):
    def mutate(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        if value is KeyError:
            del doc[last]
        else:
            doc[last] = value

    return mutate


def _rename_env(doc):
    doc["envs"]["E" * 64] = doc["envs"].pop(E)


MUTATIONS = [
    # (mutation, field path named in the message, bad value shown in the message)
    (_set(["flow_file"], "/etc/passwd"), "flow_file", "/etc/passwd"),
    (_set(["flow_file"], "flows/../../evil.py"), "flow_file", "../../evil.py"),
    (_set(["flow_file"], "flows\\win.py"), "flow_file", "win.py"),
    (_set(["code_sha256"], "c" * 63), "code_sha256", "c" * 63),
    (_set(["lock_sha256"], "D" * 64), "lock_sha256", "D" * 64),
    (
        _set(["steps", "start", "tasks", "-", "artifacts", "x", "sha1"], "zz"),
        "steps.start.tasks.-.artifacts.x.sha1",
        "zz",
    ),
    (_set(["steps", "start", "env_id"], "not-hex"), "steps.start.env_id", "not-hex"),
    (_rename_env, "envs." + "E" * 64, "E" * 64),
    (_set(["run_id"], "1/../../2"), "run_id", "1/../../2"),
    (_set(["run_id"], ".."), "run_id", ".."),
    (_set(["flow"], "My-Flow"), "flow", "My-Flow"),
    (_set(["steps", "start", "disabled"], "no"), "steps.start.disabled", "no"),
    (
        _set(["steps", "start", "tasks", "-", "artifacts", "x", "size"], -1),
        "steps.start.tasks.-.artifacts.x.size",
        "-1",
    ),
    (
        _set(["steps", "start", "tasks", "-", "artifacts", "x", "size"], True),
        "steps.start.tasks.-.artifacts.x.size",
        "True",
    ),
    (_set(["duration_s"], "3s"), "duration_s", "3s"),
    (_set(["parameters"], {"a b": 1}), "parameters.a b", "a b"),
    (_set(["status"], "maybe"), "status", "maybe"),
    (_set(["pickle_checks", 0, "status"], "broken"), "pickle_checks.0.status", "broken"),
    (_set(["envs", E, "packages", 0, "sha256"], "xyz"), f"envs.{E}.packages.0.sha256", "xyz"),
    (_set(["envs", E, "packages", 0, "file"], "../evil.whl"), f"envs.{E}.packages.0.file", "../evil.whl"),
    (_set(["envs", E, "packages", 0, "version"], "9.9"), f"envs.{E}", E),  # no longer hashes to its id
    (_set(["envs", E, "packages", 1, "size"], "big"), f"envs.{E}.packages.1.size", "big"),
    (
        _set(["steps", "start", "tasks", "-", "artifacts", "x", "extra"], 1),
        "steps.start.tasks.-.artifacts.x.extra",
        "extra",
    ),
    (_set(["steps", "start", "tasks", "-", "task_id"], KeyError), "steps.start.tasks.-.task_id", ""),
    (_set(["steps", "start", "tasks", "1/2"], {}), "steps.start.tasks.1/2", "1/2"),
    (_set(["steps", "start", "env_id"], "b" * 64), "steps.start.env_id", "b" * 64),  # not one of the envs
    (_set(["graph", "start"], "end"), "graph.start", "end"),
    (_set(["host"], ["vm"]), "host", "vm"),
]


@pytest.mark.parametrize("mutate,path,value", MUTATIONS, ids=[m[1] + ":" + m[2][:12] for m in MUTATIONS])
def test_the_decoder_refuses_each_bad_field_naming_it(mutate, path, value):
    doc = json.loads(make_record().to_json())
    mutate(doc)
    with pytest.raises(BadInput) as err:
        from_json(json.dumps(doc), "store/runs/MyFlow/1/record.json")
    message = str(err.value)
    assert message.startswith("store/runs/MyFlow/1/record.json: ")
    assert f"'{path}'" in message, message
    assert value in message, message


@pytest.mark.parametrize(
    "version,match",
    [(SCHEMA_VERSION + 1, "newer than this repro"), (0, "unknown"), ("1", "unknown"), (True, "unknown")],
)
def test_other_schema_versions_are_refused(version, match):
    doc = json.loads(make_record().to_json())
    doc["schema_version"] = version
    with pytest.raises(BadInput, match=match):
        from_json(json.dumps(doc), "record.json")


def test_records_written_by_earlier_v1_writers_still_read():
    # what the current writer produces, minus the fields older v1 writers did not have yet
    doc = json.loads(make_record(pickle_checks=()).to_json())
    for key in ("settings", "graph", "step_order", "pickle_checks", "created_at", "duration_s", "status"):
        del doc[key]
    record = from_json(json.dumps(doc), "record.json")
    assert record.status is RunStatus.SUCCESS and record.step_order == tuple(doc["steps"]) and record.graph == {}
    assert record.envs == {E: ENV}


def test_version_1_records_read_with_empty_version_2_fields():
    doc = json.loads(make_record().to_json())
    doc["schema_version"] = 1
    for key in ("replay_of", "include_files", "configs", "run_options", "identity", "inputs"):
        del doc[key]
    record = from_json(json.dumps(doc), "record.json")
    assert record == make_record() and record.replay_of == "" and record.include_files == {} == record.configs


def test_version_2_fields_round_trip_and_are_checked():
    record = make_record(
        replay_of="MyFlow/1795853570405835",
        run_options=("--max-num-splits", "1000", "--with", "retry"),
        identity="MyFlow:flows/my_flow.py",
        include_files={"data": IncludedFileRecord("a" * 64, 300000, "big.csv", True, "utf-8")},
        configs={"cfg": ConfigRecord('{"pandas": "2.2.3"}', ConfigSource.COMMAND_LINE, parser=True)},
    )
    back = from_json(record.to_json(), "record.json")
    assert back == record and back.to_json() == record.to_json()
    for path, bad, words in (
        (("include_files", "data", "name"), "../etc/passwd", "a plain file name"),
        (("include_files", "data", "sha256"), "zz", "64 hex digits"),
        (("configs", "cfg", "value"), "{not json", "JSON text"),
        (("configs", "cfg", "source"), "a file somewhere", "one of"),
        (("replay_of",), "../x", "a run reference"),
        (("identity",), "MyFlow:../elsewhere.py", "relative path"),
        (("identity",), "My Flow:flows/a.py", "identifier"),
    ):
        doc = json.loads(record.to_json())
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad
        with pytest.raises(BadInput, match=words):
            from_json(json.dumps(doc), "record.json")


UPSTREAM = UpstreamRun(
    "UpstreamFlow",
    "1742",
    ("start",),
    InputVia.LATEST_SUCCESSFUL,
    ts_epoch=1795864035652,
    user="dev",
    system_tags=("user:dev", "metaflow_version:2.19.39"),
    tasks={
        "end/2": UpstreamTask(
            0,
            1795864036366,
            {"x": InputArtifact("b" * 40, 22), "_success": InputArtifact("8" * 40, 4)},
            others={"_task_ok": InputArtifact("8" * 40, 0)},
        )
    },
)


def test_input_lineage_round_trips_and_every_field_is_checked():
    record = make_record(inputs={UPSTREAM.ref: UPSTREAM})
    back = from_json(record.to_json(), "record.json")
    assert back == record and back.to_json() == record.to_json()
    assert back.input_artifacts() == {"b" * 40: 22, "8" * 40: 4}  # what was read; "others" are only listed
    ref = UPSTREAM.ref
    for path, bad, words in (
        (("inputs", ref, "tasks", "end/2", "artifacts", "x", "sha1"), "zz", "40 hex digits"),
        (("inputs", ref, "tasks", "end/2", "artifacts", "x", "size"), -1, ">= 0"),
        (("inputs", ref, "tasks", "end/2", "artifacts", "../x"), {"sha1": "b" * 40, "size": 1}, "plain name"),
        (("inputs", ref, "tasks", "end/../../2"), {}, "plain name"),
        (("inputs", ref, "tasks", "end/2", "attempt"), -1, ">= 0"),
        (("inputs", ref, "tasks", "end/2", "others", "_task_ok", "sha1"), "x", "40 hex digits"),
        (("inputs", ref, "run_id"), "1743", "the run it describes"),
        (("inputs", ref, "run_id"), "../1742", "plain name"),
        (("inputs", ref, "flow"), "Up/stream", "identifier"),
        (("inputs", ref, "via"), "whatever", "one of"),
        (("inputs", ref, "read_by"), ["no step"], "identifier"),
        (("inputs", ref, "tags"), ["a\nb"], "a Metaflow tag"),
        (("inputs", ref, "extra"), 1, "extra"),
        (("inputs", "../x"), {}, "a run reference"),
    ):
        doc = json.loads(record.to_json())
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad
        with pytest.raises(BadInput, match=words) as err:
            from_json(json.dumps(doc), "record.json")
        assert "inputs." in str(err.value), str(err.value)


def test_records_without_input_lineage_still_read():
    doc = json.loads(make_record().to_json())
    del doc["inputs"]
    assert from_json(json.dumps(doc), "record.json").inputs == {}


def test_a_failed_task_without_an_env_report_is_readable():
    record = make_record(status=RunStatus.FAILED)
    doc = json.loads(record.to_json())
    doc["steps"]["start"]["tasks"]["-"].update(env_id="", fingerprint="", artifacts={})
    back = from_json(json.dumps(doc), "record.json")
    assert back.status is RunStatus.FAILED and back.steps["start"].tasks["-"].env_id == ""


# -- property-based round trips --------------------------------------------------------------------

HEX = "0123456789abcdef"
names = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}\Z", fullmatch=True).filter(lambda s: ".." not in s)
identifiers = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,10}\Z", fullmatch=True)
sha256s = st.text(HEX, min_size=64, max_size=64)
sha1s = st.text(HEX, min_size=40, max_size=40)
package_names = st.from_regex(r"\A[A-Za-z0-9_]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?\Z", fullmatch=True)
packages = st.builds(
    Package,
    name=package_names,
    version=st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,3}){0,3}\Z", fullmatch=True),
    source=st.sampled_from(["pypi", "https://conda.anaconda.org/conda-forge"]),
    file=st.from_regex(r"\A[A-Za-z0-9_+][A-Za-z0-9_+-]{0,20}\.(whl|tar\.gz|conda)\Z", fullmatch=True),
    url=st.text(max_size=40),
    sha256=sha256s,
    size=st.integers(0, 2**40),
)
platform_locks = st.builds(
    PlatformLock,
    platform=st.sampled_from(["linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64"]),
    python=st.from_regex(r"\A3\.[0-9]{1,2}\.[0-9]{1,2}\Z", fullmatch=True),
    packages=st.lists(packages, max_size=6, unique_by=lambda p: p.name).map(tuple),
)


@settings(max_examples=60, deadline=None)
@given(platform_locks)
def test_any_platform_lock_round_trips_through_every_use(pl):
    assert PlatformLock.from_dict(pl.to_dict(), "d") == pl
    assert parse_env_lock(env_lock_toml(pl), pl.env_id, "store") == pl
    back = PlatformLock.from_dict(json.loads(json.dumps(pl.to_dict())), "d", env_id=pl.env_id)
    assert back == pl and back.env_id == pl.env_id


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.text(max_size=10),
    st.floats(allow_nan=False, allow_infinity=False),
)
artifacts = st.builds(
    ArtifactRecord, sha1=sha1s, size=st.integers(0, 2**40), type=st.text(max_size=20), stored=st.booleans()
)
task_keys = st.one_of(st.just("-"), st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,3}){0,2}\Z", fullmatch=True))


@st.composite
def run_records(draw):
    envs = draw(st.lists(platform_locks, max_size=3, unique_by=lambda pl: pl.env_id))
    env_ids = [pl.env_id for pl in envs] + ["disabled"]
    step_names = draw(st.lists(identifiers, min_size=1, max_size=4, unique=True))
    steps = {}
    for step in step_names:
        env_id = draw(st.sampled_from(env_ids))
        tasks = draw(
            st.dictionaries(
                task_keys,
                st.builds(
                    TaskRecord,
                    task_id=names,
                    env_id=st.sampled_from([env_id, ""]),
                    fingerprint=st.text(max_size=10),
                    interpreter=st.text(max_size=20),
                    artifacts=st.dictionaries(names, artifacts, max_size=3),
                ),
                max_size=3,
            )
        )
        steps[step] = StepRecord(spec_id=draw(sha256s), env_id=env_id, disabled=env_id == "disabled", tasks=tasks)
    checks = draw(
        st.lists(
            st.builds(
                PickleCheck,
                step=st.sampled_from(step_names),
                task=task_keys,
                artifact=names,
                reader_env=st.sampled_from(env_ids),
                reader_steps=st.lists(st.sampled_from(step_names)).map(tuple),
                status=st.sampled_from(list(PickleStatus)),
                detail=st.text(max_size=10),
                static=st.text(max_size=10),
            ),
            max_size=3,
        )
    )
    return RunRecord(
        flow=draw(identifiers),
        run_id=draw(names),
        flow_file=draw(st.from_regex(r"\A([a-z_]{1,5}/){0,2}[a-z_]{1,8}\.py\Z", fullmatch=True)),
        code_sha256=draw(sha256s),
        lock_sha256=draw(sha256s),
        parameters=draw(
            st.dictionaries(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_-]{0,8}\Z", fullmatch=True), json_scalars, max_size=3)
        ),
        pythonhashseed=draw(st.sampled_from(["0", "", "123"])),
        metaflow_version="2.19.39",
        repro_version="0.1.0",
        host=draw(st.dictionaries(identifiers, st.text(max_size=10), max_size=3)),
        datastore=draw(st.dictionaries(identifiers, st.one_of(st.none(), st.text(max_size=10)), max_size=2)),
        steps=steps,
        envs={pl.env_id: pl for pl in envs},
        created_at=draw(st.text(max_size=25)),
        duration_s=draw(st.floats(0, 1e6)),
        status=draw(st.sampled_from(list(RunStatus))),
        pickle_checks=tuple(checks),
        settings=draw(st.dictionaries(identifiers, json_scalars, max_size=2)),
        graph={s: tuple(draw(st.lists(st.sampled_from(step_names), max_size=2))) for s in step_names},
        step_order=tuple(step_names),
        replay_of=draw(st.sampled_from(["", "OtherFlow/17"])),
        identity=draw(st.sampled_from(["", "F:flows/a.py", "F:@proj/user.me"])),
        run_options=tuple(draw(st.lists(st.text(max_size=8).filter(lambda t: "\0" not in t), max_size=3))),
        inputs=draw(st.sampled_from([{}, {UPSTREAM.ref: UPSTREAM}])),
        include_files=draw(
            st.dictionaries(
                identifiers,
                st.builds(
                    IncludedFileRecord,
                    sha256=sha256s,
                    size=st.integers(0, 1 << 40),
                    name=names.filter(lambda n: n[0] != "-"),
                    is_text=st.booleans(),
                    encoding=st.sampled_from(["utf-8", "latin-1"]),
                ),
                max_size=2,
            )
        ),
        configs=draw(
            st.dictionaries(
                identifiers,
                st.builds(
                    ConfigRecord,
                    value=json_scalars.map(json.dumps),
                    source=st.sampled_from(list(ConfigSource)),
                    plain=st.booleans(),
                    parser=st.booleans(),
                ),
                max_size=2,
            )
        ),
    )


@settings(max_examples=60, deadline=None)
@given(run_records())
def test_any_run_record_round_trips_exactly(record):
    text = record.to_json()
    back = from_json(text, "record.json")
    assert back == record
    assert back.to_json() == text
    assert list(back.steps) == list(record.step_order)


def test_an_environment_must_name_its_env_id_somewhere():
    d = ENV.to_dict()
    del d["env_id"]
    with pytest.raises(BadInput, match="missing key 'env_id'"):
        PlatformLock.from_dict(d, "x")
    assert PlatformLock.from_dict(d, "x", env_id=ENV.env_id) == ENV


def test_runs_are_filed_by_flow_identity():
    from metaflow_repro.store import layout

    assert layout.identity_key("PlayListFlow:flows/a.py") == "PlayListFlow@flows~a.py"
    assert layout.identity_key("F:@proj/user.me") == "F@@proj~user.me"
    assert layout.record(layout.flow_dir("F", "F:a b/c.py"), "17") == "runs/F@a_b~c.py/17/record.json"
    assert layout.latest(layout.flow_dir("F")) == "runs/F/latest"  # version 1 records: by class name
    with pytest.raises(BadInput):
        layout.record("../F", "1")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("prefix", "relative/path", "install prefix"),
        ("prefix", "/root/../etc", "install prefix"),
        ("sha256", "abc", "64 hex"),
        ("executable", "../../bin/sh", "relative"),
        ("python", "3.11", "3.X.Y"),
    ],
)
def test_a_record_naming_a_bad_snapshot_is_refused_naming_the_field(field, value, match):
    snap = InterpreterSnapshot("a" * 64, 10, "3.11.7", "/opt/py", "bin/python3.11", "b" * 64)
    doc = json.loads(make_record().to_json())
    doc["interpreters"] = {"3.11.7": {**snap.to_dict(), field: value}}
    with pytest.raises(BadInput, match=match) as info:
        from_json(json.dumps(doc), "rec.json")
    assert f"interpreters.3.11.7.{field}" in str(info.value)
    assert parse_snapshot(snap.to_json(), "m.json") == snap


def test_interpreters_and_executor_round_trip():
    snap = InterpreterSnapshot("a" * 64, 10, "3.11.7", "/opt/py", "bin/python3.11", "b" * 64)
    record = make_record(interpreters={"3.11.7": snap}, executor=Executor(ExecutorKind.DOCKER, "sha256:" + "c" * 64))
    assert from_json(record.to_json(), "r.json") == record
    doc = json.loads(record.to_json())
    doc["interpreters"] = {"3.12.1": snap.to_dict()}
    with pytest.raises(BadInput, match="interpreters.3.12.1.python"):
        from_json(json.dumps(doc), "r.json")
    doc["interpreters"], doc["executor"] = {}, {"kind": "moon", "image": ""}
    with pytest.raises(BadInput, match="executor.kind"):
        from_json(json.dumps(doc), "r.json")


@pytest.mark.parametrize(
    "key, value",
    [("channels", 5), ("virtual_packages", 2.5), ("conda_source", True), ("conda_source", "moon")],
)
def test_a_recorded_setting_of_the_wrong_type_is_refused_naming_the_field(key, value):
    doc = json.loads(make_record(settings={"conda_source": "conda", "channels": "conda-forge"}).to_json())
    doc["settings"][key] = value
    with pytest.raises(BadInput, match=f"'settings.{key}'"):
        from_json(json.dumps(doc), "record.json")


def test_recorded_settings_of_every_era_decode():
    for settings_ in (
        {"conda_source": "pypi"},
        {"conda_source": None},  # before conda-source had a default
        {"conda_source": "", "other": 5},  # keys a replay does not pass back stay scalars
        {"conda_source": "conda", "channels": "conda-forge ./local", "virtual_packages": ""},
    ):
        record = make_record(settings=settings_)
        assert from_json(record.to_json(), "record.json").settings == settings_


def test_spec_environ_refuses_a_recorded_setting_of_the_wrong_type():
    from metaflow_repro.settings import spec_environ

    with pytest.raises(BadInput, match="channels = 5"):
        spec_environ({"conda_source": "conda", "channels": 5})
    assert spec_environ({"conda_source": "conda", "channels": "a b"})["REPRO_CONDA_CHANNELS"] == "a b"


def test_a_caught_exception_round_trips_and_older_records_read_without_one():
    """Issue 26 item 1: a task whose exception @catch handled keeps it (schema 4); a task without one
    writes no key, and a record of schema 3 (no such key) still reads."""
    from dataclasses import replace

    from metaflow_repro.model.record import Caught

    record = make_record()
    task = record.steps["start"].tasks["-"]
    caught = Caught("builtins.ValueError", "x is odd", "compute_failed")
    steps = {**record.steps, "start": replace(record.steps["start"], tasks={"-": replace(task, caught=caught)})}
    with_catch = replace(record, steps=steps)
    doc = json.loads(with_catch.to_json())
    assert doc["steps"]["start"]["tasks"]["-"]["caught"] == {
        "type": "builtins.ValueError",
        "message": "x is odd",
        "var": "compute_failed",
    }
    assert "caught" not in doc["steps"]["end"]["tasks"]["-"]
    assert from_json(with_catch.to_json(), "r").steps["start"].tasks["-"].caught == caught
    old = json.loads(record.to_json())
    old["schema_version"] = 3
    assert "caught" not in old["steps"]["start"]["tasks"]["-"]
    assert from_json(json.dumps(old), "r").steps["start"].tasks["-"].caught is None


@pytest.mark.parametrize(
    "caught,problem",
    [
        ({"type": "os; rm -rf /", "message": "m"}, "an exception class"),
        ({"type": "ValueError", "message": "m", "var": "../x"}, "a Python identifier"),
        ({"type": "ValueError", "message": "m" * 5000}, "at most 2000 characters"),
        ({"type": "ValueError", "message": 3}, "message"),
        ({"type": "ValueError", "message": "m", "traceback": "..."}, "unknown key"),
        ("ValueError", "caught"),
    ],
)
def test_a_caught_exception_from_a_store_is_checked(caught, problem):
    doc = json.loads(make_record().to_json())
    doc["steps"]["start"]["tasks"]["-"]["caught"] = caught
    with pytest.raises(BadInput) as err:
        from_json(json.dumps(doc), "store/record.json")
    assert problem in str(err.value) and "store/record.json" in str(err.value)


def test_files_a_run_read_round_trip_and_older_records_read_without_them():
    """Issue 23: the data files of the flow's folder a run read and the files it read elsewhere (schema 5);
    a run that read none writes neither key, and a record of schema 4 (no such keys) still reads."""
    from dataclasses import replace

    from metaflow_repro.model.record import DataFile, StepReads

    record = make_record()
    data = {"data/train.csv": DataFile("a" * 64, 12, ("start",), True), "big.bin": DataFile("b" * 64, 9, ("end",))}
    reads = {"start": StepReads(("/home/u/x.csv", "/opt/y"), 3), "end": StepReads(unwatched=True)}
    doc = json.loads(replace(record, data_files=data, reads=reads).to_json())
    assert doc["data_files"]["data/train.csv"] == {"sha256": "a" * 64, "size": 12, "read_by": ["start"], "stored": True}
    back = from_json(json.dumps(doc), "r")
    assert back.data_files == data and back.reads == reads
    assert back.data_files_not_kept() == ["big.bin"]
    assert back.outside_reads() == [
        "start read 3 files outside the snapshot; a replay cannot give these back",
        "end: its reads were not watched (Python 3.7 has no audit hooks, or REPRO_WATCH_READS=0), so what it read is unknown",
    ]
    old = json.loads(record.to_json())
    assert "data_files" not in old and "reads" not in old
    old["schema_version"] = 4
    decoded = from_json(json.dumps(old), "r")
    assert decoded.data_files == {} and decoded.reads == {} and decoded.outside_reads() == []


def test_the_endpoints_a_step_contacted_round_trip_loopback_apart_and_are_left_out_when_none():
    """Issue 23: a step's network endpoints (schema 5, beside its files): written only when it contacted some."""
    from dataclasses import replace

    from metaflow_repro.model.record import StepReads

    reads = {"train": StepReads(("/x",), 1, hosts=("huggingface.co:443",), hosts_count=3, loopback=("[::1]:80",))}
    reads["train"] = replace(reads["train"], loopback_count=1)
    doc = json.loads(replace(make_record(), reads=reads).to_json())
    assert doc["reads"]["train"]["hosts"] == ["huggingface.co:443"] and doc["reads"]["train"]["loopback_count"] == 1
    back = from_json(json.dumps(doc), "r")
    assert back.reads == reads
    assert back.outside_reads() == [
        "train read 1 file outside the snapshot and contacted huggingface.co:443, [::1]:80 and 2 more; "
        "a replay cannot give these back"
    ]
    files_only = json.loads(replace(make_record(), reads={"s": StepReads(("/x",), 1)}).to_json())
    assert files_only["reads"]["s"] == {"files": ["/x"], "files_count": 1, "unwatched": False}
    hosts_only = replace(make_record(), reads={"s": StepReads(loopback=("127.0.0.1:8765",), loopback_count=1)})
    assert hosts_only.outside_reads() == ["s contacted 127.0.0.1:8765; a replay cannot give these back"]


@pytest.mark.parametrize(
    "key,value,problem",
    [
        ("reads", {"start": {"hosts": ["evil host:80"], "hosts_count": 1}}, "a host:port"),
        ("reads", {"start": {"loopback": ["127.0.0.1:80\n"], "loopback_count": 1}}, "a host:port"),
        ("reads", {"start": {"hosts": ["a:1", "b:2"], "hosts_count": 1}}, "at least the number of hosts listed"),
        ("reads", {"start": {"hosts": [], "hosts_count": -1}}, "hosts_count"),
        ("data_files", {"../etc/passwd": {"sha256": "a" * 64, "size": 1, "read_by": ["start"]}}, "relative path"),
        ("data_files", {"/etc/passwd": {"sha256": "a" * 64, "size": 1, "read_by": ["start"]}}, "relative path"),
        ("data_files", {".mf_code/x.py": {"sha256": "a" * 64, "size": 1, "read_by": ["start"]}}, "data file"),
        ("data_files", {"a//b": {"sha256": "a" * 64, "size": 1, "read_by": ["start"]}}, "data file"),
        ("data_files", {"a\\b": {"sha256": "a" * 64, "size": 1, "read_by": ["start"]}}, "relative path"),
        ("data_files", {"d.csv": {"sha256": "zz", "size": 1, "read_by": ["start"]}}, "sha256"),
        ("data_files", {"d.csv": {"sha256": "a" * 64, "size": -1, "read_by": ["start"]}}, "size"),
        ("data_files", {"d.csv": {"sha256": "a" * 64, "size": 1, "read_by": ["a b"]}}, "read_by"),
        ("reads", {"start": {"files": ["relative/x"], "files_count": 1}}, "an absolute path"),
        ("reads", {"start": {"files": ["/a\nb"], "files_count": 1}}, "an absolute path"),
        ("reads", {"start": {"files": ["/a\n"], "files_count": 1}}, "an absolute path"),
        ("reads", {"start": {"files": ["/a", "/b"], "files_count": 1}}, "at least the number of files listed"),
        ("reads", {"../x": {"files": []}}, "reads"),
        ("reads", {"start": {"files": [], "secret": 1}}, "unknown key"),
    ],
)
def test_the_files_a_record_says_a_run_read_are_checked(key, value, problem):
    doc = json.loads(make_record().to_json())
    doc[key] = value
    with pytest.raises(BadInput) as err:
        from_json(json.dumps(doc), "store/record.json")
    assert problem in str(err.value) and "store/record.json" in str(err.value)


def test_a_failed_run_without_code_is_sound_but_not_replayable_and_a_successful_one_is_corrupt():
    """A failed run (or replay) no task of which started is recorded with NO_CODE on purpose: `repro store
    verify` finds nothing wrong with it, a replay refuses it for lack of code; a record that says it
    succeeded without code is corrupt, for both."""
    from dataclasses import replace

    from metaflow_repro.model.record import NO_CODE, check_replayable, replay_problems

    failed = replace(make_record(), code_sha256=NO_CODE, status=RunStatus.FAILED)
    assert replay_problems(failed) == []
    with pytest.raises(BadInput, match="failed before any step started"):
        check_replayable(failed)
    succeeded = replace(make_record(), code_sha256=NO_CODE)
    assert any("corrupt" in p for p in replay_problems(succeeded))
    with pytest.raises(BadInput, match="corrupt or hostile"):
        check_replayable(succeeded)


def test_the_image_a_run_ran_in_is_recorded_only_when_there_and_checked():
    ran = Executor(ExecutorKind.DOCKER, "sha256:" + "c" * 64, image_sha256="d" * 64)
    named = Executor(ExecutorKind.DOCKER, "sha256:" + "c" * 64, image_given="team/base:1")
    foreign = Executor(ExecutorKind.BATCH, "team/job:1", image_digest="sha256:" + "e" * 64)  # a registry's
    for executor in (ran, named, foreign):
        record = replace(make_record(), executor=executor)
        assert from_json(record.to_json(), "r.json") == record
    plain = json.loads(replace(make_record(), executor=Executor(ExecutorKind.DOCKER, "x")).to_json())
    assert plain["executor"] == {"kind": "docker", "image": "x"}  # older readers see what they always did
    bad = [("image_sha256", "D" * 64), ("image_sha256", "d" * 63), ("image_given", "a b")]
    bad += [("image_digest", "e" * 64), ("image_digest", "sha256:" + "e" * 63), ("image_digest", "md5:" + "e" * 32)]
    for field, value in bad:
        doc = json.loads(replace(make_record(), executor=ran).to_json())
        doc["executor"][field] = value
        with pytest.raises(BadInput, match=f"executor.{field}"):
            from_json(json.dumps(doc), "r.json")


def test_the_bytecode_of_an_env_is_recorded_only_when_there_and_checked():
    record = replace(make_record(), bytecode={ENV.env_id: "e" * 64})
    assert from_json(record.to_json(), "r.json") == record
    assert json.loads(record.to_json())["schema_version"] == 6  # a schema-5 repro says "upgrade", not "unknown key"
    assert "bytecode" not in json.loads(make_record().to_json())  # older readers see what they always did
    assert from_json(make_record().to_json(), "r.json").bytecode == {}
    for table, problem in [
        ({"f" * 64: "e" * 64}, "an env id listed in 'envs'"),
        ({ENV.env_id: "E" * 64}, "64 hex digits"),
        ({ENV.env_id: "e" * 63}, "64 hex digits"),
        ({ENV.env_id: 3}, "64 hex digits"),
        ([ENV.env_id], "'bytecode' must be a table"),
    ]:
        doc = json.loads(record.to_json())
        doc["bytecode"] = table
        with pytest.raises(BadInput, match=re.escape(problem)):
            from_json(json.dumps(doc), "r.json")
