"""Property-based tests of untrusted input (issue 11): records, locks, store trees and decorator
arguments are mutated at random. Whatever the mutation: a decoder accepts or raises ``BadInput`` (never
anything else), every path built from what it accepts stays inside its root, the command line exits
0-3 without a traceback and writes nothing outside REPRO_HOME and the store, and ``store verify``
flags every store mutation that replay's pull would reject. Bounded: well under 3 minutes."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaflow_repro.errors import BadInput, ReproError
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.model.record import from_json
from metaflow_repro.model.spec import Declaration, merge
from metaflow_repro.paths import inside
from metaflow_repro.settings import Home
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.snapshot import parse_env_lock, pull, push, verify
from tests.helpers import cli
from tests.store_fakes import fake_run, settings_for

pytestmark = pytest.mark.fuzz
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        ".",
        "..",
        "../x",
        "/etc/passwd",
        "C:\\x",
        "a\\b",
        "a/../../b",
        "\x00",
        "~",
        "$HOME",
        "--run-id-file",
        "x" * 300,
        "é",
        "a b",
        "0" * 64,
        "g" * 64,
        "0" * 63,
        "FakeFlow",
        "disabled",
        "-",
        "1.2",
    ]
) | st.text(max_size=20)
VALUES = st.recursive(
    HOSTILE_TEXT | st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(HOSTILE_TEXT, children, max_size=3),
    max_leaves=6,
)


def _paths(doc, prefix=()):
    """Every (path, value) in a JSON document, tables and lists alike."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, path, value, rename: bool):
    if not path:
        return value
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if rename and isinstance(parent, dict) and isinstance(value, str):
        parent[value] = parent.pop(last)
    else:
        parent[last] = value
    return doc


_BASE: dict = {}


def base_record() -> dict:
    if not _BASE:
        home = Path(tempfile.mkdtemp(prefix="repro-fuzz-"))
        _BASE["doc"] = json.loads(fake_run(home, parameters={"alpha": 1}).record.to_json())
        _BASE["home"] = home
    return json.loads(json.dumps(_BASE["doc"]))


@st.composite
def mutated_records(draw):
    doc = base_record()
    paths = [p for p, _ in _paths(doc)]
    top = [p for p in paths if len(p) == 1]  # half the mutations hit a top-level field (flow_file, run_id...)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(top if draw(st.booleans()) else paths))
        try:
            doc = _mutate(doc, path, draw(VALUES), rename=draw(st.booleans()))
        except (KeyError, IndexError, TypeError):
            pass
        paths = [p for p, _ in _paths(doc)]
    return doc


@FAST
@given(mutated_records())
def test_a_mutated_record_decodes_or_is_bad_input_and_its_paths_stay_inside(doc):
    try:
        record = from_json(json.dumps(doc), "fuzz.json")
    except BadInput:
        return
    root = Path("/nonexistent-root")
    home = Home(root)
    for path in (
        home.record(record.flow, record.run_id),
        home.code_package(record.code_sha256),
        home.replays_of(record.flow),
    ):
        assert root in path.parents
    inside(root, record.flow_file, "flow_file")  # accepted means contained
    keys = [layout.record(record.flow, record.run_id), layout.code(record.code_sha256)]
    keys += [layout.lock(e) for e in record.envs] + [
        layout.package(p.sha256, p.file) for pl in record.envs.values() for p in pl.packages
    ]
    for key in keys:
        inside(root, key, "key")


PATH_FIELDS = ["flow_file", "run_id", "flow", "code_sha256", "lock_sha256"]


@FAST
@given(st.sampled_from(PATH_FIELDS), HOSTILE_TEXT)
def test_a_record_whose_path_fields_are_hostile_never_leads_outside(field, value):
    doc = base_record()
    doc[field] = value
    test_a_mutated_record_decodes_or_is_bad_input_and_its_paths_stay_inside.hypothesis.inner_test(doc)


@FAST
@given(st.data())
def test_a_mutated_env_lock_parses_or_is_refused(data):
    doc = base_record()
    env_id, env = next(iter(doc["envs"].items()))
    lock = {**env, "env_id": env_id}
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(lock)]
        try:
            lock = _mutate(lock, data.draw(st.sampled_from(paths)), data.draw(VALUES), data.draw(st.booleans()))
        except (KeyError, IndexError, TypeError):
            pass
    import tomli_w

    try:
        text = tomli_w.dumps(lock).encode() if isinstance(lock, dict) else b"\xff"
    except (TypeError, ValueError):
        text = json.dumps(lock).encode()
    try:
        pl = parse_env_lock(text, env_id, "locks/x.toml")
    except ReproError:
        return
    assert isinstance(pl, PlatformLock) and pl.env_id == env_id


@FAST
@given(st.dictionaries(HOSTILE_TEXT, VALUES, max_size=4) | VALUES, VALUES, VALUES)
def test_decorator_arguments_give_a_spec_or_a_short_spec_error(libraries, python, disabled):
    try:
        merge("FuzzFlow", "start", [], [Declaration("pypi", libraries, python, disabled)], "3.11.7", None)
    except BadInput as exc:
        assert len(str(exc)) < 2000


# -- store trees: verify flags what pull rejects; the CLI never crashes or writes outside ------------

MUTATIONS = ["flip", "truncate", "delete", "replace", "symlink_out", "binary_latest", "record_field"]


def _store_with_run(tmp: Path):
    run = fake_run(tmp / "home")
    store = LocalStore(str(tmp / "store"))
    push(run.record, store, run.settings)
    return run, store


def _apply(store: LocalStore, run, kind: str, target: str, data, value) -> None:
    path = store.root / target
    if kind == "flip":
        raw = bytearray(path.read_bytes())
        raw[data % len(raw)] ^= 0x01
        path.write_bytes(bytes(raw))
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[: data % max(1, path.stat().st_size)])
    elif kind == "delete":
        path.unlink()
    elif kind == "replace":
        path.write_bytes(json.dumps(value).encode())
    elif kind == "symlink_out":
        outside = store.root.parent / "outside.bin"
        outside.write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(outside)
    elif kind == "binary_latest":
        (store.root / layout.latest(run.record.flow)).write_bytes(bytes([0xFF, data % 256, 0]))
    elif kind == "record_field":
        key = store.root / layout.record(run.record.flow, run.record.run_id)
        doc = json.loads(key.read_text())
        field = sorted(doc)[data % len(doc)]
        doc[field] = value
        key.write_text(json.dumps(doc))


@SLOW
@given(st.sampled_from(MUTATIONS), st.integers(0, 10**6), VALUES, st.data())
def test_store_verify_flags_every_mutation_pull_rejects_and_the_cli_stays_clean(kind, n, value, data):
    tmp = Path(tempfile.mkdtemp(prefix="repro-fuzz-store-"))
    try:
        run, store = _store_with_run(tmp)
        objects = sorted(
            p.relative_to(store.root).as_posix()
            for p in store.root.rglob("*")
            if p.is_file() and not p.relative_to(store.root).as_posix().startswith(("runs/", "leases/"))
        )
        target = data.draw(st.sampled_from(objects))
        _apply(store, run, kind, target, n, value)
        # replay's pull, into an empty REPRO_HOME
        fresh = settings_for(tmp / "fresh-home")
        try:
            from metaflow_repro.store.snapshot import load_record, parse_ref

            record = load_record(store, parse_ref(f"{run.record.flow}/{run.record.run_id}"))
            pull(record, store, fresh)
            pulled = True
        except ReproError:
            pulled = False
        try:
            problems = verify(run.record, store)
        except ReproError as exc:
            problems = [str(exc)]
        cli_home = tmp / "cli-home"
        before = {p for p in tmp.rglob("*") if not p.is_relative_to(cli_home)}
        r = cli("store", "verify", "--store", store.uri, env={"REPRO_HOME": str(cli_home)})
        assert r.code in (0, 1, 2, 3) and "Traceback" not in r.text, r.text
        if not pulled:  # replay would refuse this store: verify must say so (exit 1 or 2)
            assert r.code != 0, f"{kind} {target}: pull refused it, verify did not: {r.text}"
        if problems:
            assert r.code != 0, f"{kind} {target}: {problems}, yet the command line said ok"
        if r.code == 0:
            assert pulled, f"{kind} {target}: verify passed a store pull refuses"
        after = {p for p in tmp.rglob("*") if not p.is_relative_to(cli_home)}
        assert after == before, after - before  # verify wrote nothing outside REPRO_HOME, nothing in the store
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@SLOW
@given(mutated_records())
def test_replay_of_a_mutated_record_exits_cleanly_and_writes_nothing_outside(doc):
    tmp = Path(tempfile.mkdtemp(prefix="repro-fuzz-replay-"))
    try:
        record_file = tmp / "record.json"
        record_file.write_text(json.dumps(doc))
        (tmp / "store").mkdir()
        before = set(tmp.rglob("*"))
        r = cli(
            "replay",
            record_file,
            "--store",
            (tmp / "store").as_uri(),
            env={"REPRO_HOME": str(tmp / "home")},
            timeout=120,
        )
        assert r.code in (0, 1, 2, 3) and "Traceback" not in r.text, r.text
        assert r.code != 0  # the store is empty: nothing can be replayed
        after = {p for p in tmp.rglob("*") if not p.is_relative_to(tmp / "home")}
        assert after == before, after - before
        assert not (tmp / "home" / "replays").exists() or not any((tmp / "home" / "replays").rglob("*.py"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
