"""Bad input is exit 2 with the field or path, the value and what to do; never a traceback (issue 11, 9-10)."""

from __future__ import annotations

import json

from metaflow_repro.store import LocalStore
from metaflow_repro.store.snapshot import push
from tests.helpers import cli, write_flow
from tests.store_fakes import fake_run

SIX_FLOW = """
    from metaflow import FlowSpec, pypi, step

    class SixFlow(FlowSpec):
        @pypi(packages={"six": "1.16.0"})
        @step
        def start(self):
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        SixFlow()
"""


def no_traceback(r):
    assert "Traceback" not in r.text and "internal error" not in r.text, r.text
    return r


def test_repro_home_that_is_a_file(tmp_path):
    path = write_flow(tmp_path / "proj", SIX_FLOW)
    (tmp_path / "homefile").write_text("")
    r = no_traceback(cli("env", "build", path, env={"REPRO_HOME": str(tmp_path / "homefile")}))
    assert r.code == 2 and "homefile" in r.err and "not a folder" in r.err and "REPRO_HOME" in r.err


def test_lock_with_a_package_url_that_is_not_a_url_and_export_onto_a_file(tmp_path):
    path = write_flow(tmp_path / "proj", SIX_FLOW)
    assert cli("lock", path).code == 0
    (tmp_path / "afile").write_text("")
    r = no_traceback(cli("lock", path, "--export-pylock", tmp_path / "afile"))
    assert r.code == 2 and "afile" in r.err
    lock = path.with_name("flow.repro.lock")
    text = lock.read_text()
    start = text.index('url = "', text.index('name = "six"'))
    end = text.index('"', start + 7)
    lock.write_text(text[:start] + 'url = "notaurl' + text[end:])
    r = no_traceback(cli("env", "build", path, env={"REPRO_HOME": str(tmp_path / "home")}))
    assert r.code == 2 and "'notaurl'" in r.err and "six" in r.err and "re-lock" in r.err


def test_report_into_a_missing_folder(tmp_path):
    run = fake_run(tmp_path / "home")
    record = tmp_path / "record.json"
    record.write_text(run.record.to_json())
    r = no_traceback(cli("report", record, "-o", tmp_path / "missing" / "report.md"))
    assert r.code == 2 and "missing" in r.err and "No such file or directory" in r.err


def test_diff_of_two_different_flows_is_bad_input(tmp_path):
    home = tmp_path / "home"
    store = LocalStore(str(tmp_path / "store"))
    a, b = fake_run(home, flow="AFlow"), fake_run(home, flow="BFlow", run_id="2")
    push(a.record, store, a.settings)
    push(b.record, store, b.settings)
    r = no_traceback(cli("diff", "AFlow/1", "BFlow/2", "--store", store.uri))
    assert r.code == 2 and "different flows" in r.err


def test_malformed_settings_name_their_source(tmp_path):
    proj = tmp_path / "proj"
    path = write_flow(proj, SIX_FLOW, conda_source=None)
    for body, key in (("home = 5", "home"), ("store = 5", "store")):
        (proj / "pyproject.toml").write_text(f"[tool.repro]\n{body}\n")
        r = no_traceback(cli("store", "ls", cwd=proj, env={"REPRO_HOME": "", "HOME": str(tmp_path)}))  # the key counts
        assert r.code == 2 and f"[tool.repro] {key} = 5" in r.err, r.text
    (proj / "pyproject.toml").write_text("[tool.repro]\n")
    r = no_traceback(cli("env", "show", path, env={"REPRO_CONDA_SOURCE": "mamba"}))
    assert r.code == 2 and "REPRO_CONDA_SOURCE='mamba' in the environment" in r.err
    assert "pyproject" not in r.err


def test_malformed_record_field_types(tmp_path):
    run = fake_run(tmp_path / "home")
    doc = json.loads(run.record.to_json())
    doc["parameters"] = ["not", "a", "table"]
    record = tmp_path / "record.json"
    record.write_text(json.dumps(doc))
    r = no_traceback(cli("report", record))
    assert r.code == 2 and "'parameters'" in r.err


def test_a_bad_setting_stops_a_run_before_metaflow_starts(tmp_path):
    path = write_flow(tmp_path / "proj", SIX_FLOW)
    datastore = tmp_path / "mf"
    r = no_traceback(
        cli(
            "run",
            path,
            "--store",
            (tmp_path / "store").as_uri(),
            cwd=tmp_path,
            env={
                "REPRO_ARTIFACT_MAX_BYTES": "lots",
                "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(datastore),
                "METAFLOW_DEFAULT_DATASTORE": "local",
                "METAFLOW_DEFAULT_METADATA": "local",
            },
        )
    )
    assert r.code == 2 and "REPRO_ARTIFACT_MAX_BYTES='lots'" in r.err
    assert not datastore.exists()  # no run was started, so no finished run can be lost


def test_repro_home_unusable_under_a_plain_metaflow_run_is_a_message_not_a_traceback(tmp_path):
    import subprocess
    import sys

    path = write_flow(tmp_path / "proj", SIX_FLOW)
    (tmp_path / "homefile").write_text("")
    env = {
        **__import__("os").environ,
        "REPRO_HOME": str(tmp_path / "homefile"),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    proc = subprocess.run(
        [sys.executable, str(path), "--environment=conda", "run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "homefile" in out and "Traceback" not in out, out[-3000:]
    assert "REPRO_HOME" in out and "is a file, not a folder" in out  # not blamed on the package index
    # with a lock, the first write under REPRO_HOME is ours: an OSError there is a message too
    assert cli("lock", path).code == 0
    env["REPRO_HOME"] = str(tmp_path / "homefile" / "sub")
    proc = subprocess.run(
        [sys.executable, str(path), "--environment=conda", "run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "homefile" in out and "Traceback" not in out, out[-3000:]
