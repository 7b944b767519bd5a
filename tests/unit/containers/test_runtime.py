"""What runs repro inside a container (metaflow_repro.containers.runtime): its source and dependencies mounted
read-only, the dependencies pinned to the versions repro runs with here and installed once per
(image Python, pinned set). The installer is replaced by a small Python command (no network here): what
is tested is what is asked of it and what is kept of what it did."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

import metaflow_repro
from metaflow_repro.containers import runtime
from metaflow_repro.containers.runtime import SITE, SRC, Runtime
from metaflow_repro.errors import InfraError
from metaflow_repro.settings import Home


def test_the_source_and_the_dependencies_are_mounted_read_only_where_the_container_looks():
    rt = Runtime({"repro": Path("/h/repro"), "metaflow_extensions": Path("/h/mfx")}, Path("/h/site"))
    assert rt.volumes() == {
        "/h/repro": {"bind": f"{SRC}/repro", "mode": "ro"},
        "/h/mfx": {"bind": f"{SRC}/metaflow_extensions", "mode": "ro"},
        "/h/site": {"bind": SITE, "mode": "ro"},
    }
    assert rt.pythonpath == f"{SRC}:{SITE}"
    assert rt.path.startswith(f"{SITE}/bin:")  # the dependencies' scripts (uv) before the image's


def test_repros_requirements_are_pinned_to_the_installed_versions_for_the_images_python():
    pins = runtime._pins("3.11")
    assert f"pluggy=={metadata.version('pluggy')}" in pins
    assert pins == sorted(pins) and all("==" in p and ";" not in p for p in pins)
    # tomli is needed below 3.11 only (its marker is judged for the image's Python, not this one)
    assert not any(p.startswith("tomli==") for p in pins)
    assert any(p.lower().startswith("tomli") for p in runtime._pins("3.10"))


def test_the_constraints_pin_everything_installed_here_but_repro_itself():
    constraints = runtime._constraints()
    assert f"pluggy=={metadata.version('pluggy')}" in constraints
    assert not any(c.lower().startswith("repro==") for c in constraints)


@pytest.fixture
def installs(monkeypatch):
    """Each install asked for: the folder it installs into; it makes that folder (as uv would)."""
    asked: list[Path] = []

    def install_into(target: Path, python: str) -> list[str]:
        asked.append(target)
        return [sys.executable, "-c", f"import os; os.makedirs({str(target)!r})"]

    monkeypatch.setattr(runtime, "uv_install_into", install_into)
    return asked


def test_the_dependencies_are_installed_once_per_python_and_kept_complete(tmp_path, installs):
    home = Home(tmp_path / "home")
    logs: list[str] = []
    first = runtime.prepare(home, "3.11", logs.append)
    assert len(installs) == 1 and (first.site / ".complete").is_file()
    assert first.site.parent == home.container_runtime
    assert first.source["metaflow_repro"] == Path(metaflow_repro.__file__).resolve().parent
    assert (first.source["metaflow_extensions"] / "repro" / "plugins" / "protocol.py").is_file()
    assert runtime.prepare(home, "3.11", logs.append) == first and len(installs) == 1  # kept: not again
    other = runtime.prepare(home, "3.12", logs.append)  # same pins as 3.11: the Python alone differs
    assert other.site != first.site and len(installs) == 2
    assert [m.split(" into ")[0] for m in logs] == [
        "installing repro's dependencies for Python 3.11",
        "installing repro's dependencies for Python 3.12",
    ]
    assert not list(home.container_runtime.glob(".build-*"))  # the build folders are gone


def test_a_failed_install_is_an_infrastructure_error_with_its_output_and_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        runtime, "uv_install_into", lambda target, python: [sys.executable, "-c", "import sys; sys.exit('no index')"]
    )
    home = Home(tmp_path / "home")
    with pytest.raises(InfraError, match="cannot install repro's dependencies for the container:\nno index"):
        runtime.prepare(home, "3.11", lambda m: None)
    assert list(home.container_runtime.iterdir()) == []
