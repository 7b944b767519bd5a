"""The entry point inside a replay container (repro.cli.container): its arguments, and the RunResult file it writes whatever happens."""

from __future__ import annotations

from repro.errors import BadInput
from repro.model.interpreter import Executor, ExecutorKind
from repro.model.replay import parse_result

IMAGE = "sha256:" + "a" * 64


def test_the_container_entry_writes_its_error_to_the_result_file(tmp_path, monkeypatch):
    from repro.cli import container

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPRO_HOME", str(tmp_path / "home"))
    out = tmp_path / "out" / "result.json"
    out.parent.mkdir()
    code = container.main([str(out), "F/1", (tmp_path / "store").as_uri(), IMAGE])
    result = parse_result(out.read_bytes(), "result")
    assert code == result.error_code == BadInput.exit_code == 2
    assert result.error.endswith("has no run F/1 (no runs/F/1/record.json)"), result.error
    assert result.executor == Executor(ExecutorKind.DOCKER, IMAGE) and result.record is None
