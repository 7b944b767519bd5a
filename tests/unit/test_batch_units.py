"""Pure parts of `--with batch`: what a fingerprint leaves out, which options mean Batch, what an
interpreter snapshot leaves out."""

from __future__ import annotations

from pathlib import PurePosixPath

from metaflow_extensions.repro.plugins import probe
from repro.containers.batch import runs_on_batch
from repro.env.interpreter_snapshot import _excluded


def _dist(site, record_lines):
    info = site / "six-1.16.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "RECORD").write_text("\n".join(record_lines) + "\n")
    return str(info)


def test_a_distributions_fingerprint_leaves_out_the_installers_cache_file(tmp_path):
    """uv's uv_cache.json holds the source file's ctime: two installs of one lock from the same
    verified files must still fingerprint the same; any other line of RECORD still counts."""
    base = ["six.py,sha256=abc,100", "six-1.16.0.dist-info/RECORD,,"]
    one = probe._record(
        str(tmp_path / "a"), _dist(tmp_path / "a", [*base, "six-1.16.0.dist-info/uv_cache.json,sha256=x,127"]), True
    )
    two = probe._record(
        str(tmp_path / "b"), _dist(tmp_path / "b", [*base, "six-1.16.0.dist-info/uv_cache.json,sha256=y,125"]), True
    )
    assert one == two
    other = probe._record(str(tmp_path / "c"), _dist(tmp_path / "c", ["six.py,sha256=abd,100", base[1]]), True)
    assert other[0] != one[0]
    # a package's own file of that name is not the installer's
    own = probe._record(str(tmp_path / "d"), _dist(tmp_path / "d", [*base, "six/uv_cache.json,sha256=x,127"]), True)
    assert own[0] != one[0] and own[1] == one[1] + 1


def test_which_run_options_send_every_step_to_batch():
    assert runs_on_batch(["--with", "batch"])
    assert runs_on_batch(["--tag", "x", "--with", "batch:cpu=2"])
    assert runs_on_batch(["--with=batch"])
    assert not runs_on_batch(["--with", "retry"])
    assert not runs_on_batch(["--tag", "batch"])
    assert not runs_on_batch([])


def test_an_interpreter_snapshot_leaves_out_packages_tests_and_the_static_library():
    # Batch stages the one snapshot a pushed run names (interpreter_snapshot.pack): its exclusions
    site = PurePosixPath("lib/python3.11/site-packages")
    skip = {site, PurePosixPath("lib/python3.11/test")}

    def left_out(rel: str) -> bool:
        return _excluded(PurePosixPath(rel), skip)

    assert left_out("lib/python3.11/site-packages/numpy/__init__.py")
    assert left_out("lib/python3.11/test/test_os.py")
    assert left_out("lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11.a")
    assert left_out("lib/python3.11/__pycache__/os.cpython-311.opt-1.pyc")
    assert left_out("bin/pip3")  # installed there by a package
    assert not left_out("lib/python3.11/config-3.11-x86_64-linux-gnu/Makefile")
    assert not left_out("lib/python3.11/os.py")
    assert not left_out("lib/python3.11/__pycache__/os.cpython-311.pyc")
    assert not left_out("bin/python3.11")
    assert not left_out("lib/libpython3.11.so.1.0")


def test_task_variables_reach_a_batch_job_intact_through_metaflows_quoting(monkeypatch):
    """bootstrap_commands export the task's repro variables into the job; REPRO_STEP_PYTHONS is JSON
    (quotes, spaces), which Metaflow's `bash -c "..."` wrapping (shlex) must not break."""
    import json
    import shlex
    import subprocess
    from types import SimpleNamespace

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins import protocol
    from metaflow_extensions.repro.plugins.environment import CondaEnvironment

    pythons = {"start": "/x/envs/a b/bin/python", "end": "/x/envs/c/bin/python", "q": 'it\'s "quoted" $HOME'}
    for name in protocol.TASK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(protocol.STEP_PYTHONS_VAR, json.dumps(pythons, sort_keys=True))
    monkeypatch.setenv(protocol.STEP_PYTHON_VAR, "/x/envs/c/bin/python")
    cmds = CondaEnvironment.bootstrap_commands(SimpleNamespace(), "start", "s3")
    script = " && ".join([*cmds, f"printenv {protocol.STEP_PYTHONS_VAR}"])
    argv = shlex.split('bash -c "%s"' % script)  # as Metaflow's batch.py builds the job's command
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == pythons


def test_batch_options_names_each_batch_option_and_never_a_decorator_spec_as_an_option():
    from repro.containers.batch import batch_options

    args = ["--with", "batch:cpu=2", "--tag", "batch", "--with=batch", "--with", "retry", "--with=batchy"]
    assert batch_options(args) == [(0, 2), (4, 5)]
    assert batch_options(["--with", "--with", "batch"]) == []  # "--with" is the first option's value
    assert batch_options(["--with"]) == []
