"""A flow is its class name plus its flow file (from the project root): two files that both define
`PlayListFlow` are two flows, and their runs are not compared unless asked to. Real Metaflow runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from metaflow_repro.model.record import from_json
from tests.helpers import cli, write_flow

pytestmark = pytest.mark.slow

PLAYLIST = """
    from metaflow import FlowSpec, step


    class PlayListFlow(FlowSpec):
        @step
        def start(self):
            self.genre = "{genre}"
            self.next(self.end)

        @step
        def end(self):
            pass


    if __name__ == "__main__":
        PlayListFlow()
"""


def test_two_files_defining_the_same_class_are_two_flows(tmp_path):
    mf_env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    proj = tmp_path / "proj"
    a = write_flow(proj / "flows", PLAYLIST.format(genre="jazz"), name="jazz.py", conda_source=None)
    b = write_flow(proj / "flows", PLAYLIST.format(genre="rock"), name="rock.py", conda_source=None)
    (proj / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    store_root = tmp_path / "store"
    refs = []
    for path in (a, b):
        r = cli("run", path, "--store", store_root.as_uri(), env=mf_env, cwd=proj)
        assert r.code == 0, r.text[-3000:]
        refs.append(re.search(r"^run (\S+):", r.out, re.M).group(1))  # the summary's first line
    records = {p.parent.name: from_json(p.read_text(), str(p)) for p in store_root.glob("runs/*/*/record.json")}
    identities = sorted(rec.identity for rec in records.values())
    assert identities == ["PlayListFlow:flows/jazz.py", "PlayListFlow:flows/rock.py"]
    assert {p.parent.name for p in store_root.glob("runs/*/latest")} == {
        "PlayListFlow@flows~jazz.py",
        "PlayListFlow@flows~rock.py",
    }
    # `latest` is per flow file; a class name alone no longer says which
    ambiguous = cli("store", "show", "PlayListFlow/latest", "--store", store_root.as_uri())
    assert ambiguous.code == 2 and "ambiguous" in ambiguous.err and "PlayListFlow@flows~rock.py" in ambiguous.err
    jazz = cli("store", "show", "PlayListFlow@flows~jazz.py/latest", "--store", store_root.as_uri())
    assert jazz.code == 0 and refs[0] in jazz.out
    # a run of one file is never silently the baseline of the other
    again = cli("run", b, "--store", store_root.as_uri(), env=mf_env, cwd=proj)
    assert again.code == 0, again.text[-3000:]
    assert cli("store", "show", "PlayListFlow@flows~jazz.py/latest", "--store", store_root.as_uri()).out == jazz.out
    diff = cli("diff", refs[0], refs[1], "--store", store_root.as_uri(), env=mf_env)
    assert diff.code == 2, diff.text
    assert "different flows" in diff.err and "flows/jazz.py" in diff.err and "--allow-other-flow" in diff.err
    allowed = cli("diff", refs[0], refs[1], "--store", store_root.as_uri(), "--allow-other-flow", env=mf_env)
    assert allowed.code == 1 and "genre: different" in allowed.out, allowed.text
    assert "ran other code" in allowed.out  # the two files are two code packages: the diff says so
    # pytest --repro: the same refusal (before the flow runs), and the same way to allow it
    pytest_args = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--repro", str(b),
        "--repro-store", store_root.as_uri(), "--repro-baseline", "PlayListFlow@flows~jazz.py/latest",
    ]  # fmt: skip
    env = {**os.environ, **mf_env}
    refused = subprocess.run(pytest_args, cwd=proj, env=env, capture_output=True, text=True, timeout=900)
    assert refused.returncode == 1, refused.stdout[-3000:]
    assert "different flows" in refused.stdout and "--repro-allow-other-flow" in refused.stdout
    assert "ran other code" not in refused.stdout  # nothing was compared
    compared = subprocess.run(
        [*pytest_args, "--repro-allow-other-flow"], cwd=proj, env=env, capture_output=True, text=True, timeout=900
    )
    assert compared.returncode == 1 and "genre" in compared.stdout, compared.stdout[-3000:]
    assert "ran other code" in compared.stdout  # the terminal summary
    report = (proj / "reports" / "repro-report.md").read_text()
    assert f"**Other code:** the baseline {refs[0]} ran other code" in report, report
    shown = cli("store", "show", refs[1], "--store", store_root.as_uri())
    assert "flow PlayListFlow:flows/rock.py" in shown.out


def test_a_project_runs_identity_is_the_one_predicted_before_it_runs(tmp_path):
    """What `--repro-baseline latest` looks up before the run (the @project branch as Metaflow names it)
    is the identity the run is recorded under. `--branch` goes before `run`, where @project reads it."""
    from metaflow_repro.adapter.metaflow import expected_identity
    from metaflow_repro.env.engine import open_flow
    from metaflow_repro.settings import load_settings

    mf_env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_USER": "ann",
    }
    body = PLAYLIST.format(genre="pop").replace("import FlowSpec, step", "import FlowSpec, project, step")
    body = body.replace("    class PlayListFlow", '    @project(name="music")\n    class PlayListFlow')
    path = write_flow(tmp_path / "proj", body, name="p.py")
    store_root = tmp_path / "store"
    r = cli("run", path, "--store", store_root.as_uri(), "--", "--branch", "x", env=mf_env, cwd=path.parent)
    assert r.code == 0, r.text[-3000:]
    (record_file,) = store_root.glob("runs/*/*/record.json")
    recorded = from_json(record_file.read_text(), str(record_file)).identity
    predicted = expected_identity(open_flow(path, load_settings(path)), ("--branch", "x"), mf_env)
    assert recorded == predicted == "PlayListFlow:@music/test.x"
    assert (store_root / "runs" / "PlayListFlow@@music~test.x" / "latest").is_file()


def test_tutorials_in_sibling_folders_without_a_project_root_are_three_flows(tmp_path):
    """`metaflow tutorials pull` gives folders with neither pyproject.toml nor .git: three `playlist.py`
    files defining PlayListFlow are three flows, each with its own `latest`, and a class name alone is
    refused as ambiguous, naming the three (issue 26 item 5). Each runs from its own folder, where
    Metaflow makes its `.metaflow` datastore (not a project root)."""
    from metaflow_repro.adapter.metaflow import project_root

    tutorials = tmp_path / "metaflow-tutorials"
    if project_root(tutorials / "x.py") is not None:
        pytest.skip(f"a project marker above {tmp_path}")
    store = (tmp_path / "store").as_uri()
    folders = ("01-playlist", "02-statistics", "03-playlist-redux")
    for genre, name in zip(("jazz", "rock", "pop"), folders):
        path = write_flow(tutorials / name, PLAYLIST.format(genre=genre), name="playlist.py", conda_source=None)
        env = {"METAFLOW_DATASTORE_SYSROOT_LOCAL": str(path.parent), "REPRO_CONDA_SOURCE": "pypi"}
        if name == folders[-1]:  # `latest` is this tutorial's own, which has none yet: not another's
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--repro", "playlist.py"]
                + ["--repro-store", store, "--repro-baseline", "latest"],
                cwd=path.parent,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert proc.returncode != 0, proc.stdout[-3000:]
            assert "no runs of flow PlayListFlow:03-playlist-redux/playlist.py" in proc.stdout, proc.stdout[-3000:]
            assert "ran other code" not in proc.stdout and "genre" not in proc.stdout  # nothing was compared
        r = cli("run", "playlist.py", "--store", store, env=env, cwd=path.parent)
        assert r.code == 0, r.text[-3000:]
        assert (path.parent / ".metaflow").is_dir()
    keys = [f"PlayListFlow@{name}~playlist.py" for name in folders]
    assert sorted(p.parent.name for p in (tmp_path / "store").glob("runs/*/latest")) == keys
    records = [from_json(p.read_text(), str(p)) for p in sorted((tmp_path / "store").glob("runs/*/*/record.json"))]
    assert sorted(r.identity for r in records) == [f"PlayListFlow:{name}/playlist.py" for name in folders]
    ambiguous = cli("store", "show", "PlayListFlow/latest", "--store", store)
    assert ambiguous.code == 2 and "ambiguous" in ambiguous.err, ambiguous.text
    assert all(key in ambiguous.err for key in keys), ambiguous.err
    shown = cli("store", "show", f"{keys[1]}/latest", "--store", store)
    assert shown.code == 0 and "flow PlayListFlow:02-statistics/playlist.py" in shown.out, shown.text
