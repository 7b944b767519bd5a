"""The store's gc knows records and leases only; what else is live (Batch staging's objects) comes
from its caller (metaflow_repro.operations.gc), so metaflow_repro.store imports no executor (issue 21, item 1).

A failed replay none of whose tasks started (e.g. every Batch job failed before its step) has no code
package (code_sha256 NO_CODE); its record is still written to the store (issue 13)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace

import pytest

from metaflow_repro.errors import InfraError
from metaflow_repro.model.record import NO_CODE
from metaflow_repro.store import LocalStore, layout, open_store
from metaflow_repro.store.marker import mark
from metaflow_repro.store.snapshot import gc, named_objects, push_replay_record
from tests.helpers import make_record
from tests.store_fakes import aged_store

ORPHAN = "bootstrap/" + "0" * 64 + ".json"
OTHER = "tools/uv/" + "1" * 64 + "/uv"


def _store(tmp_path) -> LocalStore:
    return aged_store(tmp_path / "store", ORPHAN, OTHER)


def test_what_the_caller_says_is_live_is_kept_and_it_sees_the_records(tmp_path):
    store = _store(tmp_path)
    seen = []

    def live(records):
        seen.append(list(records))
        return {ORPHAN}

    assert gc(store, grace_seconds=0, dry_run=True, live=live) == [OTHER]
    assert seen == [[]]  # the store holds no records


def test_without_a_caller_nothing_beyond_records_and_leases_is_kept(tmp_path):
    assert sorted(gc(_store(tmp_path), grace_seconds=0, dry_run=True)) == sorted([ORPHAN, OTHER])


def test_the_store_imports_no_executor():
    probe = "import sys, metaflow_repro.store.snapshot; print([m for m in sys.modules if m.startswith('metaflow_repro.executors')])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_failed_replay_with_no_code_package_is_recorded_in_the_store(tmp_path):
    record = replace(make_record(run_id="9", status="failed"), code_sha256=NO_CODE, replay_of="F/1")
    assert layout.code(NO_CODE) not in named_objects(record)
    store = open_store((tmp_path / "store").as_uri())
    for key in named_objects(record):  # everything else it names is the replayed run's, in the store
        store.put_bytes(key, b"x")
    key = push_replay_record(record, store)
    assert key == layout.record(layout.flow_dir(record.flow, record.identity), "9")
    assert store.get_bytes(key) == record.to_json().encode()
    assert layout.code("c" * 64) in named_objects(make_record())  # a real code package stays named


def test_a_replay_with_a_code_package_of_its_own_uploads_it_once_it_matches(tmp_path):
    """A run made in a git checkout replays with another code package (Metaflow writes the branch and
    commit into it): the replay's record uploads that one from REPRO_HOME, never a file that does not
    match its sha256."""
    code = tmp_path / "code.tar.gz"
    code.write_bytes(b"the replay's code package")
    record = replace(
        make_record(run_id="9"), code_sha256=hashlib.sha256(code.read_bytes()).hexdigest(), replay_of="F/1"
    )
    store = open_store((tmp_path / "store").as_uri())
    for key in named_objects(record):
        if key != layout.code(record.code_sha256):
            store.put_bytes(key, b"x")
    with pytest.raises(InfraError, match="missing code/"):
        push_replay_record(record, store)  # no file to upload it from
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(b"something else")
    with pytest.raises(InfraError, match="missing code/"):
        push_replay_record(record, store, damaged)
    assert store.stat(layout.code(record.code_sha256)) is None
    push_replay_record(record, store, code)
    assert store.get_bytes(layout.code(record.code_sha256)) == code.read_bytes()


def test_gc_deletes_only_keys_of_store_shape(tmp_path):
    """A folder taken for a store (``--store file:///some/folder``) may hold the user's own files under
    the same folder names: gc deletes only content-addressed keys, never ``packages/notes.txt``."""
    junk = ["packages/notes.txt", "code/project/main.py", "inputs/data.csv", "pythons/readme.md"]
    orphan = "locks/" + "a" * 64 + ".toml"
    store = aged_store(tmp_path / "folder", *junk, orphan)
    mark(store)  # a store all the same (it was pushed to): gc works there, on its own keys only
    assert gc(store, grace_seconds=0) == [orphan]
    assert all((tmp_path / "folder" / key).is_file() for key in junk)


def test_a_ref_that_matches_several_flows_is_refused_naming_each(tmp_path):
    """A class name alone is ambiguous when several flow files (or @project branches) define the class:
    refused, naming them, for `latest` and for a run id that more than one of them has (issue 26 item 5)."""
    import pytest

    from metaflow_repro.errors import BadInput
    from metaflow_repro.store.snapshot import _flow_folder, load_record, parse_ref

    store = LocalStore((tmp_path / "store").as_uri())
    record = make_record(run_id="7", flow="PlayListFlow")
    folders = [layout.identity_key(f"PlayListFlow:{f}/playlist.py") for f in ("01-playlist", "02-statistics")]
    for folder in folders:
        store.put_bytes(layout.record(folder, "7"), record.to_json().encode())
        store.put_bytes(layout.latest(folder), b"7")
    store.put_bytes(layout.record(folders[0], "8"), replace(record, run_id="8").to_json().encode())
    for ref in ("PlayListFlow/latest", "PlayListFlow/7"):
        with pytest.raises(BadInput, match="ambiguous") as err:
            load_record(store, parse_ref(ref))
        assert all(folder in str(err.value) for folder in folders), err.value
    assert _flow_folder(store, "PlayListFlow", "8") == folders[0]  # one flow has it: no doubt


def test_a_flow_class_under_a_mutator_has_parameters_its_file_does_not_show():
    """`store verify` reads a flow's Parameters from its file: under Metaflow's own decorators it can, under
    any other (a FlowMutator may `add_parameter`) it cannot tell, and says nothing (issue 26 item 3)."""
    from metaflow_repro.store.snapshot import declared_parameters

    body = 'class F(FlowSpec):\n    alpha = Parameter("alpha")\n'
    assert declared_parameters('@project(name="p")\n@pypi_base(python="3.11")\n' + body, "F") == {"alpha"}
    assert declared_parameters("@robust_flow\n" + body, "F") is None
    assert declared_parameters("@mutators.robust_flow(times=2)\n" + body, "F") is None


def test_an_envs_bytecode_object_is_named_by_its_record_and_uploaded_only_as_its_sha256(tmp_path):
    """``record.bytecode``: each env's ahead-of-time ``.pyc`` files, packed here at the record; a push
    uploads the object from REPRO_HOME hashed again, and verify, gc and bundles know it (named_objects)."""
    from metaflow_repro.env import pycache
    from metaflow_repro.errors import BadInput, IntegrityError
    from metaflow_repro.settings import Home, Settings
    from metaflow_repro.store.snapshot import bytecode_uploads

    settings = Settings(home=Home(tmp_path / "home"), store="")
    blob = b"a bytecode object"
    sha = hashlib.sha256(blob).hexdigest()
    record = make_record()
    env_id = "e" * 64
    assert bytecode_uploads(record, settings) == [] and not any(
        k.startswith("bytecode/") for k in named_objects(record)
    )
    record = replace(record, bytecode={env_id: sha})
    assert named_objects(record)[layout.bytecode(sha)] == ("sha256", sha)
    with pytest.raises(BadInput, match=f"bytecode object of env {env_id[:12]}.*push from the machine"):
        bytecode_uploads(record, settings)
    path = pycache.object_path(settings.home, sha)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"another object")
    with pytest.raises(IntegrityError, match="damaged and was not uploaded"):
        bytecode_uploads(record, settings)
    path.write_bytes(blob)
    [upload] = bytecode_uploads(record, settings)
    assert (upload.key, upload.source, upload.sha256, upload.size) == (layout.bytecode(sha), path, sha, len(blob))
