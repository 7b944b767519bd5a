"""The entry point inside a replay container (metaflow_repro.cli.container): its arguments, and the RunResult file
it writes whatever happens. No replay runs here: a run the store lacks stops it, as any error would."""

from __future__ import annotations

import os
import subprocess
import sys

from metaflow_repro.cli import container
from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.replay import parse_result

IMAGE = "sha256:" + "a" * 64


def test_the_container_entry_writes_its_error_to_the_result_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPRO_HOME", str(tmp_path / "home"))
    out = tmp_path / "out" / "result.json"
    out.parent.mkdir()
    code = container.main([str(out), "F/1", (tmp_path / "store").as_uri(), IMAGE])
    result = parse_result(out.read_bytes(), "result")
    assert code == result.error_code == BadInput.exit_code == 2
    assert result.error.endswith("has no run F/1 (no runs/F/1/record.json)"), result.error
    assert result.executor == Executor(ExecutorKind.DOCKER, IMAGE) and result.record is None


def _main(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPRO_HOME", str(tmp_path / "home"))
    return container.main(argv)


def test_the_arguments_name_the_result_file_the_run_the_store_the_image_and_the_users_run_arguments(
    tmp_path, monkeypatch
):
    """What the container is asked: the run to replay, from which store, in which image (what the
    replay's record says ran it), with the user's own run arguments after it, in order; the local place
    (the flow runs in this container). Asked again on the restored interpreter (--on-restored-python
    first), the same."""
    from metaflow_repro.operations import replay

    asked = []

    def load_request(ref, store, settings, place, executor, extra_args=()):
        asked.append((ref, store.uri, place.kind, executor, extra_args))
        raise InfraError("stop here")

    monkeypatch.setattr(replay, "load_request", load_request)
    store = (tmp_path / "store").as_uri()
    out = tmp_path / "result.json"
    for argv in (
        [str(out), "F/1", store, IMAGE, "--max-workers", "1", "--tag", "x"],
        [container.ON_RESTORED, str(out), "F/1", store, IMAGE, "--max-workers", "1", "--tag", "x"],
    ):
        out.unlink(missing_ok=True)
        assert _main(tmp_path, monkeypatch, argv) == InfraError.exit_code
        assert parse_result(out.read_bytes(), "result").error == "stop here"
    expected = (
        "F/1",
        store,
        ExecutorKind.LOCAL,
        Executor(ExecutorKind.DOCKER, IMAGE),
        ("--max-workers", "1", "--tag", "x"),
    )
    assert asked == [expected, expected]


def test_the_result_file_is_readable_by_the_host_whoever_runs_the_container(tmp_path, monkeypatch):
    out = tmp_path / "out" / "result.json"
    out.parent.mkdir()
    _main(tmp_path, monkeypatch, [str(out), "F/1", (tmp_path / "store").as_uri(), IMAGE])
    assert out.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # written whole (no temporary file left)


def test_run_as_a_module_it_exits_with_the_errors_code_having_written_the_result(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "REPRO_HOME": str(tmp_path / "home"), "METAFLOW_USER": "dev"}
    proc = subprocess.run(
        [sys.executable, "-m", container.MODULE, str(out), "F/1", (tmp_path / "store").as_uri(), IMAGE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == BadInput.exit_code and proc.stdout == ""
    assert parse_result(out.read_bytes(), "result").error_code == BadInput.exit_code
