"""Pure parts of `--with batch`: what a fingerprint leaves out, which options mean Batch, what an
interpreter snapshot leaves out."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path, PurePosixPath

import pytest

from metaflow_extensions.repro.plugins import probe
from repro.env.interpreter_snapshot import _excluded
from repro.executors.batch import runs_on_batch


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
    from repro.executors.batch import batch_options

    args = ["--with", "batch:cpu=2", "--tag", "batch", "--with=batch", "--with", "retry", "--with=batchy"]
    assert batch_options(args) == [(0, 2), (4, 5)]
    assert batch_options(["--with", "--with", "batch"]) == []  # "--with" is the first option's value
    assert batch_options(["--with"]) == []


def _job_variables(monkeypatch, steps: int) -> None:
    """What the runtime exports to a Batch job's command for a flow of ``steps`` steps, each with an
    env of its own at a long (but ordinary) path, and the bootstrap's store and manifest."""
    import json

    from metaflow_extensions.repro.plugins import protocol

    for name in protocol.TASK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    pythons = {
        f"train_model_{i:02d}": f"/home/someone/.local/share/repro/envs/{i:064x}/bin/python" for i in range(steps)
    }
    monkeypatch.setenv(protocol.STEP_PYTHONS_VAR, json.dumps(pythons, sort_keys=True))
    monkeypatch.setenv(protocol.STEP_PYTHON_VAR, next(iter(pythons.values())))
    monkeypatch.setenv(protocol.ENV_ID_VAR, "e" * 64)
    monkeypatch.setenv(protocol.SPEC_ID_VAR, "5" * 64)
    monkeypatch.setenv(protocol.CODE_SHA_VAR, "c" * 64)
    monkeypatch.setenv(protocol.PYTHONHASHSEED_VAR, "0")
    monkeypatch.setenv(protocol.PYTHONNOUSERSITE_VAR, "1")
    monkeypatch.setenv(protocol.PYTHONDONTWRITEBYTECODE_VAR, "1")
    monkeypatch.setenv(protocol.BOOTSTRAP_STORE_VAR, "s3://some-company-ml-artifacts-bucket/teams/research/repro-store")
    monkeypatch.setenv(protocol.BOOTSTRAP_MANIFEST_VAR, "a" * 64)


def test_a_batch_jobs_bootstrap_command_stays_far_below_aws_batchs_limit(monkeypatch):
    """AWS Batch refuses container overrides over 8192 characters (Metaflow issues #977, #1482; moto
    does not check), and Metaflow's own part of the command (code package download, the step's
    arguments) needs ~2-3 KB: ours stays under 3 KB for a flow of 30 steps, each with an env of its
    own (it was ~22 KB when batch_bootstrap.py was inline). Only the small fetcher is inline (zlib'd),
    batch_bootstrap.py is a store object named by its sha256."""
    import base64
    import hashlib
    import re
    import zlib
    from types import SimpleNamespace

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins import batch_bootstrap, batch_fetch
    from metaflow_extensions.repro.plugins.environment import CondaEnvironment
    from repro.store.layout import bootstrap_script as script_key

    _job_variables(monkeypatch, steps=30)
    cmds = CondaEnvironment.bootstrap_commands(SimpleNamespace(), "start", "s3")
    command = " && ".join(cmds)
    assert len(command) < 3072, len(command)
    # what it runs: batch_fetch.py, told the store, the key and sha256 of this very batch_bootstrap.py
    m = re.search(r"echo (\S+) \| base64 -d \| python3 -c '[^']+' (\S+) (\S+) (\S+) (\S+)$", cmds[-1])
    assert m, cmds[-1]
    with open(batch_fetch.__file__, "rb") as fh:
        assert zlib.decompress(base64.b64decode(m.group(1))) == fh.read()
    with open(batch_bootstrap.__file__, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    assert m.group(2, 3, 4, 5) == (
        "s3://some-company-ml-artifacts-bucket/teams/research/repro-store",
        script_key(sha),
        sha,
        "a" * 64,
    )


def test_the_instance_cache_is_mounted_beside_the_users_own_host_volumes():
    from metaflow_extensions.repro.plugins.decorators import with_volume

    assert with_volume(None, "/var/cache/repro") == ["/var/cache/repro"]
    assert with_volume("/data", "/var/cache/repro") == ["/data", "/var/cache/repro"]
    assert with_volume(["/data", "/x:/y"], "/c") == ["/data", "/x:/y", "/c"]
    # mounted already as it would be: as it is
    assert with_volume("/var/cache/repro", "/var/cache/repro") == ["/var/cache/repro"]
    assert with_volume(["/var/cache/repro:/var/cache/repro"], "/var/cache/repro") == [
        "/var/cache/repro:/var/cache/repro"
    ]
    # the user's volumes use the folder otherwise: theirs, no cache (a second volume of that name is refused)
    assert with_volume(["/mnt/fast:/var/cache/repro"], "/var/cache/repro") is None
    assert with_volume(["/var/cache/repro:/data"], "/var/cache/repro") is None
    assert with_volume(None, "/var/cache/repro", efs_volumes="fs-1234:/var/cache/repro") is None
    assert with_volume(None, "/var/cache/repro", efs_volumes=["fs-1234"]) == ["/var/cache/repro"]


@pytest.mark.parametrize("text", ["/var/cache/repro", "/mnt/nvme0/repro-cache", "off"])
def test_batch_cache_is_a_plain_absolute_path_or_off(text):
    from repro.settings import load_settings

    assert load_settings(environ={"REPRO_BATCH_CACHE": text}).batch_cache == text


@pytest.mark.parametrize(
    "text", ["relative/path", "/var/cache/my repro", "/var/$(reboot)", "/var/../etc", "/", "/mnt/c++"]
)
def test_a_batch_cache_that_cannot_go_into_a_jobs_command_is_refused_naming_the_setting(text):
    from repro.errors import BadInput
    from repro.settings import load_settings

    with pytest.raises(BadInput, match="REPRO_BATCH_CACHE=.* is not valid: expected an absolute path"):
        load_settings(environ={"REPRO_BATCH_CACHE": text})


def test_the_job_and_the_host_take_a_record_files_digest_the_same_way(tmp_path):
    """batch_bootstrap.record_digest runs on its own in a job (it cannot import probe): its rule must stay
    the fingerprint's (uv's cache file lines left out), or every cached env would be refused."""
    from metaflow_extensions.repro.plugins import batch_bootstrap

    site = tmp_path / "site"
    info = site / "six-1.16.0.dist-info"
    info.mkdir(parents=True)
    (site / "six.py").write_text("x = 1\n")
    blob = b"six.py,sha256=abc,6\nsix-1.16.0.dist-info/uv_cache.json,sha256=def,120\nsix-1.16.0.dist-info/RECORD,,\n"
    (info / "RECORD").write_bytes(blob)
    other = blob.replace(b"sha256=def,120", b"sha256=xyz,121")  # another install's cache file
    digest = probe._record(str(site), str(info))[0]
    assert batch_bootstrap.record_digest(blob) == probe.record_digest(blob) == digest
    assert batch_bootstrap.record_digest(other) == digest
    assert batch_bootstrap.record_digest(blob.replace(b"sha256=abc", b"sha256=abd")) != digest


def test_the_host_lists_an_envs_files_as_a_jobs_build_of_it_will_hold_them(tmp_path):
    from metaflow_extensions.repro.plugins import protocol
    from metaflow_extensions.repro.plugins.batch_bootstrap import ANY, DIR, FILE, LINK, RECORD, check_tree
    from repro.executors.batch import env_files
    from repro.settings import Home

    env = tmp_path / "env"
    info = env / "lib" / "python3.11" / "site-packages" / "six-1.16.0.dist-info"
    info.mkdir(parents=True)
    (info.parent / "six.py").write_text("x = 1\n")
    (info.parent / "__pycache__").mkdir()
    (info.parent / "__pycache__" / "six.cpython-311.pyc").write_bytes(b"host bytecode")
    (info / "RECORD").write_text("six.py,sha256=abc,6\n")
    (info / "uv_cache.json").write_text('{"ctime": 1}')
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to("/usr/bin/python3.11")
    (env / protocol.ENV_MARKER).write_text("{}")
    files = env_files(env, Home(tmp_path / "home"))
    site = "lib/python3.11/site-packages/"
    folders = ["bin", "lib", "lib/python3.11", "lib/python3.11/site-packages", site + "six-1.16.0.dist-info"]
    assert files == {
        **{f: [DIR, ""] for f in folders},  # the bytecode folder is not listed: a job's env has none
        site + "six.py": [FILE, hashlib.sha256(b"x = 1\n").hexdigest()],
        site + "six-1.16.0.dist-info/RECORD": [RECORD, probe.record_digest(b"six.py,sha256=abc,6\n")],
        site + "six-1.16.0.dist-info/uv_cache.json": [ANY, ""],
        "bin/python": [LINK, "/usr/bin/python3.11"],
    }
    # a job's build (no bytecode; its own marker and uv cache file) checks against it
    job = tmp_path / "job-env"
    shutil.copytree(env, job, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    (job / site / "six-1.16.0.dist-info" / "uv_cache.json").write_text('{"ctime": 2}')
    expected = {**files, protocol.ENV_MARKER: [ANY, ""]}
    assert check_tree(str(job), expected) == ""
    (job / site / "__pycache__").mkdir()
    (job / site / "__pycache__" / "six.cpython-311.pyc").write_bytes(b"planted")
    assert check_tree(str(job), expected) == site + "__pycache__ was added"


@pytest.mark.parametrize("batch_first", [False, True])
def test_a_batch_steps_job_mounts_the_instance_cache_whichever_decorator_runs_first(batch_first, monkeypatch):
    """Metaflow calls each decorator's runtime_step_cli in turn; @batch copies its attributes into the
    command's options: the volume reaches `batch step` whether ours ran before or after it."""
    from types import SimpleNamespace

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins.decorators import CondaStepDecorator
    from repro.executors import batch as batch_module

    monkeypatch.setitem(batch_module._PLATFORMS, "ec2-queue", "EC2")
    batch = SimpleNamespace(name="batch", attributes={"queue": "ec2-queue", "host_volumes": ["/data"]})
    ours = CondaStepDecorator.__new__(CondaStepDecorator)
    ours._decos = [batch, ours]
    cli_args = SimpleNamespace(command_options={})
    if batch_first:
        cli_args.command_options.update(batch.attributes)  # as BatchDecorator.runtime_step_cli does
    assert ours._mount_instance_cache(cli_args, "/var/cache/repro") == "/var/cache/repro"
    if not batch_first:
        cli_args.command_options.update(batch.attributes)
    assert cli_args.command_options["host_volumes"] == ["/data", "/var/cache/repro"]
    monkeypatch.setitem(batch_module._PLATFORMS, "fargate-queue", "FARGATE")
    batch.attributes.update(queue="fargate-queue", host_volumes=None)
    assert ours._mount_instance_cache(SimpleNamespace(command_options={}), "/var/cache/repro") == ""
    assert batch.attributes["host_volumes"] is None


def test_an_env_a_job_could_not_build_the_same_is_not_cached_and_the_log_says_why(tmp_path):
    """The host lists no files (so jobs keep no copy of the env, each builds its own) when its env was built
    with another uv than the jobs', or links outside itself and the interpreter (uv's symlink link mode)."""
    from metaflow_extensions.repro.plugins import protocol
    from repro.env.uvtool import uv_bin
    from repro.executors.batch import _env_files_if_same_uv, _uv_version
    from repro.settings import Home

    uv = Path(uv_bin())
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / protocol.ENV_MARKER).write_text("{}")
    (env / "bin" / "python").symlink_to("/opt/py/bin/python3")
    logged: list[str] = []

    def files(cfg_uv: str):
        (env / "pyvenv.cfg").write_text(f"home = /opt/py/bin\nuv = {cfg_uv}\n")
        return _env_files_if_same_uv(env, Home(tmp_path / "home"), uv, "/opt/py", "F", logged.append)

    assert files(_uv_version(uv)) is not None and not logged
    assert files("0.0.1") is None and "built with uv 0.0.1" in logged[-1]
    (env / "bin" / "six.py").symlink_to("/root/.cache/uv/archive-v0/x/six.py")
    (env / protocol.ENV_MARKER).write_text("{} ")  # the env was rebuilt (its file list is listed again)
    assert files(_uv_version(uv)) is None and "bin/six.py leads outside it" in logged[-1]


def test_a_file_list_kept_by_an_older_repro_is_made_again(tmp_path):
    """The lists are kept under their format: one kept before folders were listed would make every job's
    check fail ("bin was added"), so it is never used (found by benchmarks/bench_batch.py on a warm home)."""
    import json

    from metaflow_extensions.repro.plugins import protocol
    from repro.executors.batch import env_files
    from repro.settings import Home

    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "tool").write_text("x")
    (env / protocol.ENV_MARKER).write_text("{}")
    home = Home(tmp_path / "home")
    first = env_files(env, home)
    (kept,) = home.staged.glob("files-*.json")
    doc = json.loads(kept.read_text())
    marker = (env / protocol.ENV_MARKER).stat()
    old = {"key": [str(env), marker.st_mtime_ns, marker.st_size], "files": {"bin/tool": first["bin/tool"]}}
    kept.write_text(json.dumps(old))  # as the first version of the instance cache kept it
    assert env_files(env, home) == first and "bin" in first
    assert json.loads(kept.read_text())["key"] == doc["key"]
