"""`repro replay --from-step`'s seeding, on folders the test writes: the recorded run's folder and blobs
copied into the replay's own datastore (its tasks' ds-root pointed there), or, when the recorded
datastore cannot serve, why the run replays whole."""

from __future__ import annotations

import json
import os
from dataclasses import replace

from metaflow_repro.operations.replay_from import seed
from tests.helpers import make_record

SHA = "ab" + "1" * 38


def recorded_datastore(tmp_path):
    root = tmp_path / "orig" / ".metaflow"
    meta = root / "F" / "1" / "start" / "1" / "_meta"
    meta.mkdir(parents=True)
    (meta / "sysmeta_ds-root_1.json").write_text(json.dumps({"field_name": "ds-root", "value": str(root)}))
    (root / "F" / "data" / "ab").mkdir(parents=True)
    (root / "F" / "data" / "ab" / SHA).write_bytes(b"blob")
    record = make_record(tasks={"start": {"-": {"x": (SHA, 4, "int")}}, "end": {"-": {}}})
    return root, replace(record, datastore={"type": "local", "root": str(root)})


def test_the_recorded_run_is_copied_into_the_replays_datastore_and_points_there(tmp_path):
    root, record = recorded_datastore(tmp_path)
    work = tmp_path / "work"
    assert seed(record, work) == ""
    copied = work / ".metaflow" / "F"
    assert (copied / "data" / "ab" / SHA).read_bytes() == b"blob"
    meta = json.loads((copied / "1" / "start" / "1" / "_meta" / "sysmeta_ds-root_1.json").read_text())
    assert meta == {"field_name": "ds-root", "value": str(work / ".metaflow")}
    assert json.loads((root / "F" / "1" / "start" / "1" / "_meta" / "sysmeta_ds-root_1.json").read_text())[
        "value"
    ] == str(root), "the recorded datastore is never written"


def test_a_datastore_that_cannot_serve_says_why(tmp_path):
    root, record = recorded_datastore(tmp_path)
    s3 = replace(record, datastore={"type": "s3", "root": "s3://b/mf"})
    assert seed(s3, tmp_path / "w1") == "its datastore is s3, not a local folder this replay can read"
    os.symlink("/etc", root / "F" / "1" / "start" / "link")
    assert seed(record, tmp_path / "w2").startswith("its run folder holds a symbolic link")
    (root / "F" / "1" / "start" / "link").unlink()
    (root / "F" / "data" / "ab" / SHA).unlink()
    assert seed(record, tmp_path / "w3").startswith("the recorded datastore lacks 1 of its artifact blobs")
    gone = replace(record, run_id="2")
    assert seed(gone, tmp_path / "w4").startswith("the recorded datastore no longer holds it")
    hostile = replace(record, flow="../../x")
    assert "corrupt or hostile" in seed(hostile, tmp_path / "w5")  # a name never leads out of the datastore
    assert not any((tmp_path / w).exists() for w in ("w1", "w2", "w3", "w4", "w5")), "nothing copied"
