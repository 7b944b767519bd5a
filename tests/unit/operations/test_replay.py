"""The command printed for a failed task's logs names the run (issue 13): `repro run` and `repro
replay` share one helper (metaflow_repro.operations.replay.task_pathspec / logs_command)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from metaflow_repro.cli.run import failed_tasks
from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.operations.replay import logs_command, task_pathspec
from metaflow_repro.operations.run import Outcome
from tests.helpers import make_record


def _failed(step: str, task: str = "-") -> Finding:
    return Finding(Kind.TASK_FAILED, "Traceback ...\nValueError: boom", step=step, task=task)


def test_a_failed_task_the_record_lacks_still_gets_a_logs_command_with_the_run_id():
    record = make_record(run_id="17")  # steps start and end, task "-" each
    assert task_pathspec(record, _failed("start")) == "17/start/1"
    assert task_pathspec(record, _failed("train")) == "17/train"  # failed before its task got an id
    lines = failed_tasks(Outcome(path="f.py", record=record, findings=[_failed("train")]), Path("/p/f.py"))
    assert lines == [
        "step train failed (F/17/train): ValueError: boom",
        f"  its logs: {shlex.quote(sys.executable)} /p/f.py logs 17/train",
    ]


def test_the_logs_command_carries_the_replays_datastore_so_it_finds_that_run():
    env = {"METAFLOW_DATASTORE_SYSROOT_LOCAL": "/w d", "METAFLOW_DEFAULT_DATASTORE": "local", "OTHER": "x"}
    cmd = logs_command(Path("/c/flow.py"), "5/start/2", env)
    assert shlex.split(cmd) == [
        "METAFLOW_DATASTORE_SYSROOT_LOCAL=/w d",
        "METAFLOW_DEFAULT_DATASTORE=local",
        sys.executable,
        "/c/flow.py",
        "logs",
        "5/start/2",
    ]


def _with_data(record, *paths: str):
    from dataclasses import replace

    from metaflow_repro.model.record import DataFile

    return replace(record, data_files={p: DataFile("a" * 64, 1, ("start",), stored=True) for p in paths})


def test_data_files_are_laid_out_at_their_paths_in_the_code_folder(tmp_path):
    from metaflow_repro.operations.replay import _lay_out_data_files

    code, blob = tmp_path / "code", tmp_path / "blob"
    code.mkdir()
    blob.write_text("a,1\n")
    said: list[str] = []
    _lay_out_data_files(_with_data(make_record(), "data/train.csv"), {"data/train.csv": blob}, code, said.append)
    assert (code / "data" / "train.csv").read_text() == "a,1\n"
    assert said == ["giving back 1 data file the steps read: data/train.csv"]


def test_a_record_cannot_lay_a_data_file_over_its_code_or_outside_the_folder(tmp_path):
    """A record is untrusted: a data file named like a file of the code package (the flow itself), or
    reaching out of the code folder through a link, is refused before anything runs."""
    import pytest

    from metaflow_repro.errors import BadInput
    from metaflow_repro.operations.replay import _lay_out_data_files

    code, blob, outside = tmp_path / "code", tmp_path / "blob", tmp_path / "outside"
    code.mkdir()
    outside.mkdir()
    (code / "flow.py").write_text("the recorded code")
    (code / "link").symlink_to(outside)
    blob.write_text("hostile")
    for path in ("flow.py", "link/x.csv"):
        with pytest.raises(BadInput):
            _lay_out_data_files(_with_data(make_record(), path), {path: blob}, code, print)
    assert (code / "flow.py").read_text() == "the recorded code" and not (outside / "x.csv").exists()


def test_a_replay_names_the_endpoints_a_step_contacted_up_front_and_as_the_likely_cause(tmp_path):
    """Issue 23 item 4: what no snapshot holds (files elsewhere, network endpoints) is said before the run,
    and named as the likely cause of a `different` verdict."""
    from dataclasses import replace

    from metaflow_repro.model.record import StepReads
    from metaflow_repro.operations.replay import _lay_out_data_files, _not_given_back

    reads = StepReads(("/home/u/x.csv",), 1, hosts=("huggingface.co:443",), hosts_count=1)
    record = replace(make_record(), reads={"start": replace(reads, loopback=("127.0.0.1:8765",), loopback_count=1)})
    said: list[str] = []
    _lay_out_data_files(record, {}, tmp_path, said.append)
    assert said == [
        "start read 1 file outside the snapshot and contacted huggingface.co:443, 127.0.0.1:8765; "
        "a replay cannot give these back"
    ]
    assert _not_given_back(record) == "/home/u/x.csv, huggingface.co:443, 127.0.0.1:8765"


def _metaflow_package(folder: Path, version: str) -> Path:
    """A code package's .mf_code folder whose Metaflow says ``version`` (and counts its imports)."""
    (folder / "metaflow").mkdir(parents=True)
    (folder / "metaflow" / "__init__.py").write_text(
        "import pathlib\nwith open(pathlib.Path(__file__).parents[2] / 'imports', 'a') as fh:\n    fh.write('x')\n"
    )
    (folder / "metaflow" / "metaflow_version.py").write_text(f"def get_version():\n    return {version!r}\n")
    return folder


def test_the_recorded_metaflow_is_probed_once_per_code_package_in_a_process(tmp_path, monkeypatch):
    """An audit replays many runs of one code package: its Metaflow (imported from source, 0.5 s) is asked
    its version once per package sha256, and a package of another sha256 is asked anew."""
    from dataclasses import replace

    from metaflow_repro.operations import replay as mod

    monkeypatch.setattr(mod, "_PROBED", {})
    record = replace(make_record(run_id="1"), code_sha256="a" * 64, metaflow_version="2.0")
    for run in ("r1", "r2", "r3"):  # three replays of runs of one package, each extracted in its own folder
        assert mod._recorded_metaflow_problem(_metaflow_package(tmp_path / run / ".mf_code", "2.0"), record) == ""
    assert (tmp_path / "r1" / "imports").read_text() == "x"  # probed in the first replay's folder only
    assert not (tmp_path / "r2" / "imports").exists() and not (tmp_path / "r3" / "imports").exists()
    other = replace(record, code_sha256="b" * 64)
    problem = mod._recorded_metaflow_problem(_metaflow_package(tmp_path / "r4" / ".mf_code", "2.1"), other)
    assert problem == "the code package carries Metaflow 2.1, but the record says 2.0 ran"
    assert (tmp_path / "r4" / "imports").read_text() == "x"


def test_a_records_bytecode_object_is_fetched_verified_and_a_corrupt_one_is_refused(tmp_path):
    """What a replay inside a container fetches for its builds to restore (a replay here never asks:
    tests/test_snapshots.py): a copy that does not match the record's sha256 is refused (exit 3) naming
    it, and nothing is kept or remembered."""
    import hashlib
    from dataclasses import replace

    from metaflow_repro.env import pycache
    from metaflow_repro.errors import IntegrityError
    from metaflow_repro.operations import replay as op
    from metaflow_repro.settings import load_settings
    from metaflow_repro.store import layout, open_store
    from tests.unit.model.test_record import ENV, make_record

    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    store = open_store(f"file://{tmp_path / 'store'}")
    blob = b"an env's bytecode object"
    sha = hashlib.sha256(blob).hexdigest()
    record = replace(make_record(), bytecode={ENV.env_id: sha})
    store.put_bytes(layout.bytecode(sha), blob[:-1] + b"!")
    said: list[str] = []
    with pytest.raises(IntegrityError, match=rf"{layout.bytecode(sha)} is corrupt"):
        op.fetch_bytecode(record, store, settings, said.append)
    assert not pycache.known(settings.home, ENV.env_id) and not pycache.object_path(settings.home, sha).exists()
    store.put_bytes(layout.bytecode(sha), blob)
    op.fetch_bytecode(record, store, settings, said.append)
    assert (
        pycache.known(settings.home, ENV.env_id) == sha and pycache.object_path(settings.home, sha).read_bytes() == blob
    )
