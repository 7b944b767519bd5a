"""What Metaflow's runtime asks of repro through the extension before any task starts (metaflow_repro.bridge.prepare):
the flow's environments, per step, under protocol's names. A flow whose steps use the user's own
environment (``@conda_base(disabled=True)``) is locked and "built" without resolving or installing
anything, so the real function runs here on a real flow class; the checks before it run for real too."""

from __future__ import annotations

import importlib.util

import pytest

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro import bridge
from metaflow_repro.adapter.flowfolder import LargeFlowFolder
from metaflow_repro.errors import ReproError
from metaflow_repro.model.lock import lock_path, read_lock

USER_ENV_FLOW = """
from metaflow import FlowSpec, conda_base, step


@conda_base(disabled=True)
class UserEnvFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
"""


def _flow_class(path):
    spec = importlib.util.spec_from_file_location(f"bridge_flow_{abs(hash(str(path)))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.UserEnvFlow


@pytest.fixture
def flow_file(tmp_path, monkeypatch):
    for name in ("REPRO_FROZEN", "REPRO_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REPRO_HOME", str(tmp_path / "home"))
    path = tmp_path / "flows" / "user_env_flow.py"
    path.parent.mkdir()
    path.write_text(USER_ENV_FLOW)
    return path


def test_steps_in_the_users_own_environment_get_none_and_the_runtime_learns_repro_home(flow_file, tmp_path):
    logs: list[str] = []
    steps, paths = bridge.prepare(_flow_class(flow_file), str(flow_file), False, logs.append)
    assert steps == {"start": None, "end": None}
    assert paths == {protocol.PATH_HOME: str((tmp_path / "home").resolve())}
    lock = read_lock(lock_path(flow_file))  # locked (once) as a run locks it: the lock says they are disabled
    assert lock is not None and lock.flow == "UserEnvFlow"
    assert all(s.disabled for s in lock.steps.values())


def test_a_repro_home_inside_the_flows_folder_is_refused_before_anything_is_locked(flow_file, monkeypatch):
    monkeypatch.setenv("REPRO_HOME", str(flow_file.parent / "home"))
    with pytest.raises(LargeFlowFolder, match="REPRO_HOME .* is inside the flow's folder"):
        bridge.prepare(_flow_class(flow_file), str(flow_file), False, print)
    assert not lock_path(flow_file).exists()


def test_a_repro_home_that_is_a_file_is_refused_with_one_message(flow_file, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("REPRO_HOME", str(tmp_path / "a-file"))
    with pytest.raises(ReproError, match="REPRO_HOME"):
        bridge.prepare(_flow_class(flow_file), str(flow_file), False, print)
    assert not lock_path(flow_file).exists()
