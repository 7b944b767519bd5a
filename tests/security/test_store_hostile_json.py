"""Issue 22 item 8: one hostile document in a store ("[" * 100000: json and tomllib recurse once per level)
is read within depth and size limits everywhere a record, lock, lease or manifest is read. A bad record
is listed as bad, never fatal for the others; no command ends in an internal RecursionError."""

from __future__ import annotations

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.model import validate as v
from metaflow_repro.model.interpreter import parse_snapshot
from metaflow_repro.model.lock import parse_lock
from metaflow_repro.model.record import from_json
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.snapshot import StoreObjectCorrupt, gc, parse_env_lock, push, scan_records
from tests.helpers import cli
from tests.store_fakes import age, fake_run

DEEP_JSON = "[" * 100000
DEEP_TOML = "a = " + "[" * 100000


def _store_with_hostile_record(tmp_path):
    """A folder store with one good pushed run (FakeFlow/1) and a hostile record (FakeFlow/2)."""
    root = tmp_path / "store"
    run = fake_run(tmp_path / "home")
    push(run.record, LocalStore(str(root)), run.settings)
    hostile = root / layout.record("FakeFlow", "2")
    hostile.parent.mkdir(parents=True)
    hostile.write_text(DEEP_JSON)
    return root, run


@pytest.mark.parametrize("text", [DEEP_JSON, '{"a":' * 100000, "[" * 65 + "]" * 65])
def test_a_deep_record_is_bad_input_not_a_recursion_error(text):
    with pytest.raises(BadInput, match="nested deeper than 64 levels"):
        from_json(text, "hostile.json")


def test_documents_over_their_size_limit_are_refused_before_decoding():
    with pytest.raises(v.Invalid, match="larger than 10 bytes"):
        v.load_json(b"[" + b" " * 20 + b"]", v.At("doc"), max_bytes=10)


def test_a_deep_lock_manifest_or_config_value_is_bad_input(tmp_path):
    with pytest.raises(StoreObjectCorrupt, match="is corrupt.*nested deeper"):
        parse_env_lock(DEEP_TOML.encode(), "a" * 64, "store/locks/x.toml")
    with pytest.raises(BadInput, match="nested deeper"):
        parse_lock(DEEP_TOML, tmp_path / "flow.repro.lock")
    with pytest.raises(BadInput, match="nested deeper"):
        parse_snapshot(DEEP_JSON, "pythons/x.json")
    run = fake_run(tmp_path / "home")
    text = run.record.to_json().replace('"configs": {}', '"configs": {"c": {"value": "' + DEEP_JSON + '"}}')
    with pytest.raises(BadInput, match="'configs.c.value'"):
        from_json(text, "hostile.json")


def test_one_hostile_record_is_listed_as_bad_and_every_command_stays_clean(tmp_path):
    root, run = _store_with_hostile_record(tmp_path)
    uri = root.as_uri()
    listing = scan_records(LocalStore(str(root)))
    assert [r.ref for r in listing.records] == ["FakeFlow/1"]
    assert [k for k, _ in listing.broken] == ["runs/FakeFlow/2/record.json"]
    ls = cli("store", "ls", "--store", uri)
    assert ls.code == 0 and "FakeFlow" in ls.out and "runs/FakeFlow/2/record.json: unreadable" in ls.err, ls.text
    verify = cli("store", "verify", "--store", uri)
    assert verify.code == 1 and "FakeFlow/1: ok" in verify.out and "nested deeper" in verify.out, verify.text
    gc_run = cli("store", "gc", "--store", uri)
    assert gc_run.code == 2 and "cannot be read" in gc_run.err, gc_run.text
    replay = cli("replay", "FakeFlow/2", "--store", uri, env={"REPRO_HOME": str(tmp_path / "home")})
    assert replay.code == 2 and "nested deeper" in replay.err, replay.text
    for r in (ls, verify, gc_run, replay):
        assert "Traceback" not in r.text and "RecursionError" not in r.text, r.text


def test_a_hostile_lease_or_sweep_names_nothing_and_gc_goes_on(tmp_path):
    root = tmp_path / "store"
    run = fake_run(tmp_path / "home")
    store = LocalStore(str(root))
    push(run.record, store, run.settings)
    orphan = root / layout.code("e" * 64)
    orphan.write_bytes(b"unnamed")
    age(orphan)
    store.put_bytes(layout.lease("1" * 32), DEEP_JSON.encode())
    store.put_bytes(layout.sweep("2" * 32), DEEP_JSON.encode())
    assert gc(store, grace_seconds=60) == [layout.code("e" * 64)]
