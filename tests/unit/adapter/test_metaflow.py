"""A flow's identity (``adapter.metaflow.flow_identity``): its class and its flow file from the project
root, found by ``pyproject.toml`` or ``.git`` first (as before, so stored runs keep their identity), then
``setup.cfg``, ``setup.py`` or ``.hg``; with no root at all, the flow file's folder names it too
(issue 26 item 5). Real folders under tmp_path, which has no marker above it."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaflow_repro.adapter.metaflow import flow_identity, project_root


def _flow(folder: Path, name: str = "playlist.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("# a flow\n")
    return path


@pytest.fixture
def tmp(tmp_path) -> Path:
    if project_root(tmp_path / "x.py") is not None:  # a marker above the test's folder would decide
        pytest.skip(f"a project marker above {tmp_path}")
    return tmp_path


def test_without_a_root_the_folder_names_the_flow_and_a_metaflow_datastore_is_not_a_root(tmp):
    paths = [_flow(tmp / "tutorials" / f) for f in ("00-helloworld", "01-playlist", "02-statistics")]
    for path in paths:
        (path.parent / ".metaflow").mkdir()  # what `python playlist.py run` leaves in the current folder
    assert [flow_identity("PlayListFlow", p) for p in paths] == [
        "PlayListFlow:00-helloworld/playlist.py",
        "PlayListFlow:01-playlist/playlist.py",
        "PlayListFlow:02-statistics/playlist.py",
    ]


@pytest.mark.parametrize("marker", ["setup.cfg", "setup.py", ".hg", "pyproject.toml", ".git"])
def test_each_marker_is_a_project_root(tmp, marker):
    proj = tmp / "proj"
    path = _flow(proj / "src" / "flows")
    (proj / marker).mkdir() if marker.startswith(".") else (proj / marker).write_text("")
    assert flow_identity("PlayListFlow", path) == "PlayListFlow:src/flows/playlist.py"


def test_a_pyproject_or_git_root_keeps_the_identity_it_gave_before(tmp):
    """A setup.py nearer the flow than the repository's .git (or its pyproject.toml) does not change the
    identity the flow's stored runs were recorded under."""
    repo = tmp / "repo"
    path = _flow(repo / "pkg" / "flows")
    (repo / ".git").mkdir()
    (repo / "pkg" / "setup.py").write_text("")
    assert flow_identity("F", path) == "F:pkg/flows/playlist.py"


def test_a_project_flow_is_its_project_and_branch_wherever_it_is(tmp):
    assert flow_identity("F", _flow(tmp / "a"), "music", "user.ann") == "F:@music/user.ann"
