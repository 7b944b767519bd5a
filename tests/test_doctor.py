"""`repro doctor` (issue 10, item 5): one table, exit 0 when healthy, 1 when something is not."""

import shutil
import subprocess
import sys
import time

from tests.helpers import ROOT, cli, free_port, require


def _row(out: str, check: str) -> str:
    rows = [line for line in out.splitlines() if f" {check} " in line]
    assert rows, out
    return rows[0]


def test_a_healthy_machine_exits_0_with_one_row_per_check(tmp_path, repro_home):
    r = cli("doctor", "--store", (tmp_path / "store").as_uri(), env={"REPRO_HOME": str(tmp_path / "home")})
    assert r.code == 0, r.text
    for check in (
        "python",
        "uv",
        "store",
        "TLS trust",
        "REPRO_HOME",
        "conda channel",
        "metaflow",
        "metaflow extension",
    ):
        assert _row(r.out, check).startswith("ok"), (check, r.out)
    import metaflow

    assert metaflow.__version__ in _row(r.out, "metaflow")
    assert str(ROOT / "metaflow_extensions" / "repro") in _row(r.out, "metaflow extension")
    assert "%d.%d.%d" % sys.version_info[:3] in r.out  # the interpreters it found, with exact versions


def test_a_store_that_does_not_answer_is_a_problem_and_exit_1(tmp_path, repro_home, s3_server, s3_bucket):
    home = {"REPRO_HOME": str(tmp_path / "home")}
    assert cli("doctor", "--store", f"s3://{s3_bucket}/team", env=home).code == 0
    missing = cli("doctor", "--store", "s3://no-such-bucket-here/team", env=home)
    assert missing.code == 1 and _row(missing.out, "store").startswith("PROBLEM"), missing.text
    assert "no-such-bucket-here" in missing.out
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    down = cli("doctor", "--store", f"s3://{s3_bucket}/team", env={**home, "AWS_ENDPOINT_URL_S3": closed})
    assert down.code == 1 and "unreachable" in _row(down.out, "store"), down.text
    assert time.monotonic() - started < 60  # a short timeout, not boto3's minutes of retries
    assert "1 problem(s): store" in down.out  # the other checks stay healthy


def test_a_read_only_repro_home_is_a_problem_and_exit_1(tmp_path, repro_home):
    ok = shutil.which("unshare") and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
    require(ok, "`unshare -m` (cannot create a mount namespace for a read-only REPRO_HOME)")
    home = tmp_path / "home"
    home.mkdir()
    script = (
        f"mount --bind {home} {home} && mount -o remount,bind,ro {home} && "
        f"{sys.executable} -m metaflow_repro doctor --store {(tmp_path / 'store').as_uri()}"
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**__import__("os").environ, "REPRO_HOME": str(home)},
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = _row(proc.stdout, "REPRO_HOME")
    assert row.startswith("PROBLEM") and "not writable" in row and "Read-only file system" in row


def test_tls_row_is_the_trust_index_connections_use_and_a_bad_config_is_a_row_not_a_crash(tmp_path, monkeypatch):
    """doctor reads TLS trust through metaflow_repro.env.tls (pip's file order, no interpolation), so it names
    the bundle uv is given; a cert that is not a file is a problem row, never an exception."""
    from metaflow_repro.env import tls
    from metaflow_repro.operations import doctor

    a, b = tmp_path / "a.pem", tmp_path / "b 100%.pem"
    a.write_text("x")
    b.write_text("x")
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "XDG_CONFIG_HOME", "VIRTUAL_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "none"))
    (tmp_path / ".config" / "pip").mkdir(parents=True)
    (tmp_path / ".config" / "pip" / "pip.conf").write_text(f"[global]\ncert = {b}\n")
    env_file = tmp_path / "env.conf"
    env_file.write_text(f"[global]\ncert = {a}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(env_file))
    row = doctor.tls_trust()
    assert row.ok and str(a) in row.found and tls.trust().cafile == str(a)
    monkeypatch.delenv("PIP_CONFIG_FILE")
    row = doctor.tls_trust()  # the user's file, whose path has a '%' (no interpolation)
    assert row.ok and str(b) in row.found
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    row = doctor.tls_trust()
    assert not row.ok and "SSL_CERT_FILE" in row.detail


def test_conda_channels_are_rows_a_channel_that_does_not_answer_is_a_problem_with_what_to_do(tmp_path):
    """conda-source = "conda" resolves every step from the channels: each is a row. A local channel
    answers; a URL where nothing listens is a problem within seconds, naming both ways out."""
    channel = tmp_path / "channel"
    (channel / "noarch").mkdir(parents=True)
    (channel / "noarch" / "repodata.json").write_text('{"packages": {}}')
    closed = f"http://127.0.0.1:{free_port()}/forge"
    env = {"REPRO_HOME": str(tmp_path / "home"), "REPRO_CONDA_SOURCE": "conda"}
    started = time.monotonic()
    r = cli(
        "doctor", "--store", (tmp_path / "store").as_uri(), env={**env, "REPRO_CONDA_CHANNELS": f"{channel} {closed}"}
    )
    assert time.monotonic() - started < 60, "a short timeout"
    assert r.code == 1, r.text
    rows = [line for line in r.out.splitlines() if " conda channel " in line]
    assert len(rows) == 2, r.out
    assert rows[0].startswith("ok") and channel.as_uri() in rows[0]
    assert rows[1].startswith("PROBLEM") and closed in rows[1]
    assert "REPRO_CONDA_SOURCE=pypi" in rows[1] and "REPRO_CONDA_CHANNELS" in rows[1]
    assert "1 problem(s): conda channel" in r.out
    missing = cli(
        "doctor", "--store", (tmp_path / "store").as_uri(), env={**env, "REPRO_CONDA_CHANNELS": str(tmp_path)}
    )
    assert missing.code == 1 and "not a conda channel" in _row(missing.out, "conda channel"), missing.text
    pypi = cli("doctor", "--store", (tmp_path / "store").as_uri(), env={**env, "REPRO_CONDA_SOURCE": "pypi"})
    assert _row(pypi.out, "conda channel").startswith("ok") and "not used" in pypi.out, pypi.text


def test_a_docker_daemon_that_does_not_answer_is_not_ready_and_no_problem(tmp_path):
    """Only `--on docker` needs a daemon: a row that says what to do, but doctor still exits 0."""
    closed = f"tcp://127.0.0.1:{free_port()}"
    env = {"REPRO_HOME": str(tmp_path / "home"), "DOCKER_HOST": closed}
    started = time.monotonic()
    r = cli("doctor", "--store", (tmp_path / "store").as_uri(), env=env)
    assert time.monotonic() - started < 60
    row = _row(r.out, "docker")
    assert row.startswith("not ready") and closed in row and "--on docker" in row, r.out
    assert r.code == 0, r.text


def test_metaflow_release_and_which_extension_metaflow_loaded():
    from metaflow_repro.operations import doctor

    ours = ROOT / "metaflow_extensions" / "repro" / "plugins" / "environment.py"
    assert doctor.metaflow_version_check("2.16.0").ok and doctor.metaflow_version_check("2.19.39").ok
    for old_or_new in ("2.15.21", "2.20.0", "3.0.1", "unknown"):
        row = doctor.metaflow_version_check(old_or_new)
        assert not row.ok and "pip install 'metaflow>=2.16,<2.20'" in row.detail, old_or_new
    assert doctor.extension_check({"conda": str(ours), "pypi": str(ours)}, ours).ok
    other = "/elsewhere/metaflow_extensions/other/plugins/conda_env.py"
    row = doctor.extension_check({"conda": other, "pypi": str(ours)}, ours)
    assert not row.ok and other in row.found and "uninstall it" in row.detail
    row = doctor.extension_check({"conda": str(ours)}, ours)  # no pypi environment at all
    assert not row.ok and "--environment=pypi: none" in row.found
