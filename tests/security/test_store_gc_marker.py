"""Issue 22 item 3 (the rest): gc works only in a repro store. Push writes a store marker when it creates a
store; a store made before markers is recognized once by its layout (every key of store shape) and marked
then; a folder or bucket prefix that is neither (someone's files) is refused with exit 2 and nothing in it
is deleted; a store URI that names nothing is exit 2, as for verify."""

from __future__ import annotations

import json

import boto3
import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.store import LocalStore, layout, open_store
from metaflow_repro.store.marker import SCHEMA, is_marked
from metaflow_repro.store.snapshot import gc, push
from tests.helpers import cli
from tests.store_fakes import age, aged_store, fake_run

USER_FILES = ["code/project/main.py", "packages/notes.txt", "inputs/data.csv"]
ORPHAN = layout.lock("a" * 64)  # of store shape, named by no record


def _files(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _pushed(tmp_path):
    root = tmp_path / "store"
    run = fake_run(tmp_path / "home")
    push(run.record, LocalStore(str(root)), run.settings)
    return root


def test_gc_refuses_a_folder_of_the_users_and_deletes_nothing(tmp_path):
    folder = tmp_path / "folder"
    aged_store(folder, *USER_FILES, ORPHAN)
    for key in USER_FILES:
        age(folder / key, 2 * 86400)  # two days old, as in the issue
    before = _files(folder)
    r = cli("store", "gc", "--store", folder.as_uri())
    assert r.code == 2 and "no store marker (repro-store.json)" in r.err and "Traceback" not in r.text, r.text
    assert "code/project/main.py" in r.err  # it names what is not a store's
    assert _files(folder) == before  # not even the key of store shape went, and no marker was written


@pytest.mark.parametrize("where", ["missing", "empty", "a file"])
def test_gc_of_a_store_that_is_not_there_is_bad_input(tmp_path, where):
    target = tmp_path / "store"
    if where == "empty":
        target.mkdir()
    elif where == "a file":
        target.write_text("x")
    r = cli("store", "gc", "--store", target.as_uri())
    assert r.code == 2 and "Traceback" not in r.text, r.text
    assert ("does not exist" if where == "missing" else "is empty" if where == "empty" else "is not a folder") in r.err


def test_the_first_push_writes_the_marker_and_gc_works_there(tmp_path):
    root = _pushed(tmp_path)
    doc = json.loads((root / layout.MARKER).read_text())
    assert doc["schema"] == SCHEMA
    orphan = root / ORPHAN
    orphan.write_text("x")
    age(orphan)
    (root / "notes.txt").write_text("mine")  # a marked store may hold other files: gc leaves them
    r = cli("store", "gc", "--store", root.as_uri())
    assert r.code == 0 and ORPHAN in r.out, r.text
    assert not orphan.exists() and (root / "notes.txt").exists() and (root / layout.MARKER).exists()


def test_a_store_made_before_markers_is_recognized_by_its_layout_once(tmp_path):
    root = _pushed(tmp_path)
    (root / layout.MARKER).unlink()
    store = LocalStore(str(root))
    assert gc(store, dry_run=True) == [] and not is_marked(store)  # a dry run writes nothing
    assert gc(store) == [] and is_marked(store)
    (root / "notes.txt").write_text("mine")  # marked now: recognized once, not by its layout each time
    assert gc(store) == []


def test_a_store_without_marker_holding_other_files_is_refused(tmp_path):
    root = _pushed(tmp_path)
    (root / layout.MARKER).unlink()
    (root / "inputs" / "data.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "inputs" / "data.csv").write_text("a,b\n")
    with pytest.raises(BadInput, match=r"no store marker .* \(inputs/data.csv\)"):
        gc(LocalStore(str(root)))
    assert not is_marked(LocalStore(str(root)))


def test_s3_a_pushed_prefix_is_marked_and_a_prefix_of_other_files_is_refused(tmp_path, s3_server, s3_bucket):
    run = fake_run(tmp_path / "home")
    store = open_store(f"s3://{s3_bucket}/team")
    push(run.record, store, run.settings)
    assert is_marked(store) and gc(store) == []
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for key in USER_FILES:
        s3.put_object(Bucket=s3_bucket, Key=f"other/{key}", Body=b"mine")
    r = cli("store", "gc", "--store", f"s3://{s3_bucket}/other", "--grace-hours", "0")
    assert r.code == 2 and "no store marker" in r.err, r.text
    assert len(s3.list_objects_v2(Bucket=s3_bucket, Prefix="other/")["Contents"]) == 3
    missing = cli("store", "gc", "--store", "s3://no-such-bucket-here/x")
    assert missing.code == 2 and "does not exist" in missing.err, missing.text
