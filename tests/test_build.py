"""Building environments for real: uv venv + offline hash-checked installs from the package cache."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metaflow_repro.env.cache import PackageCache
from metaflow_repro.env.fetch import Fetcher
from metaflow_repro.errors import IntegrityError
from metaflow_repro.model.lock import Package
from tests.helpers import cli, env_paths, installed_python, require_python, write_flow

SMALL = """
    from metaflow import FlowSpec, step, pypi
    class {name}(FlowSpec):
        @pypi(packages={{"six": "1.16.0"}}{python})
        @step
        def start(self):
            self.next(self.end)
        @step
        def end(self):
            pass
"""


def small_flow(folder: Path, name="SmallFlow", python="") -> Path:
    return write_flow(folder, SMALL.format(name=name, python=f", python={python!r}" if python else ""))


def run_in(env: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True)


def test_build_isolates_each_step_and_shares_identical_envs(tmp_path, repro_home):
    a = small_flow(tmp_path / "a", "FlowA")
    b = small_flow(tmp_path / "b", "FlowB")
    ra = cli("env", "build", a)
    assert ra.code == 0, ra.text
    envs = env_paths(ra.out)
    start, end = envs["start"], envs["end"]
    assert start != end
    # declared library importable, at the locked version
    assert run_in(start, "import six; print(six.__version__)").stdout.strip() == "1.16.0"
    # isolation: the test runner has pytest; the step environment must not
    assert "pytest" in sys.modules
    r = run_in(start, "import pytest")
    assert r.returncode != 0 and "No module named 'pytest'" in r.stderr
    assert run_in(end, "import six").returncode != 0  # not declared for `end`
    assert run_in(end, "import requests").returncode == 0  # Metaflow's implicit need
    assert_isolated(start)
    assert_isolated(end)
    # another flow with the same declarations gets the same environment, reused not rebuilt
    rb = cli("env", "build", b)
    assert rb.code == 0 and env_paths(rb.out) == envs and "building" not in rb.err
    assert "reused env" in rb.out


def assert_isolated(env: Path) -> None:
    """Isolation seen from inside the env, not only through `import pytest`: nothing of the test
    runner's venv, the base interpreter's site-packages or the user site is on sys.path."""
    code = (
        "import json, site, sys; print(json.dumps({'path': sys.path, 'user': site.ENABLE_USER_SITE, "
        "'prefix': sys.prefix}))"
    )
    import json

    def run(src):  # from a neutral folder: `python -c` puts the working directory on sys.path
        return subprocess.run([str(env / "bin" / "python"), "-c", src], capture_output=True, text=True, cwd="/")

    got = json.loads(run(code).stdout)
    assert Path(got["prefix"]).resolve() == env.resolve()
    assert got["user"] is False  # no ~/.local site-packages
    for entry in got["path"]:
        if entry and "site-packages" in entry:
            assert Path(entry).resolve().is_relative_to(env.resolve()), entry
    runner_site = {p for p in sys.path if p.endswith("site-packages")}
    assert runner_site and not runner_site & set(got["path"])
    for module in ("metaflow_repro", "jsonschema", "moto", "_pytest"):  # all installed where the tests run
        r = run(f"import {module}")
        assert f"No module named '{module}'" in r.stderr, (module, r.stderr)


def test_python_minor_request_picks_an_installed_patch_release_and_locks_it(tmp_path):
    require_python("3.10")
    path = small_flow(tmp_path, python="3.10")
    r = cli("env", "build", path)
    assert r.code == 0, r.text
    lock = (tmp_path / "flow.repro.lock").read_text()
    patch = installed_python("3.10").parent.parent.name  # pyenv folder name, e.g. 3.10.13
    assert f'python = "{patch}"' in lock
    env = env_paths(r.out)["start"]
    assert run_in(env, "import sys; print('%d.%d.%d' % sys.version_info[:3])").stdout.strip() == patch


def test_oldest_supported_python_gets_its_own_pins(tmp_path):
    require_python("3.7")
    path = small_flow(tmp_path, python="3.7")
    r = cli("env", "build", path)
    assert r.code == 0, r.text
    env = env_paths(r.out)["start"]
    got = run_in(env, "import requests, six, sys; print(sys.version_info[:2], requests.__version__)").stdout
    assert got.strip() == "(3, 7) 2.31.0"


def test_reuse_is_cheap_and_a_half_built_env_is_rebuilt(tmp_path):
    path = small_flow(tmp_path)
    assert cli("env", "build", path).code == 0
    r = cli("env", "build", path)
    env = env_paths(r.out)["start"]
    assert "reused env" in r.out
    # simulate a build killed half-way: the marker (written last) is missing
    (env / ".repro-env.json").unlink()
    shutil.rmtree(env / "lib")
    r = cli("env", "build", path)
    assert r.code == 0 and "building env" in r.err and "built env" in r.out
    assert run_in(env, "import six").returncode == 0


def test_concurrent_builds_of_one_env_give_one_build_and_all_succeed(tmp_path):
    path = write_flow(tmp_path, SMALL.format(name="RaceFlow", python="").replace('"1.16.0"', '"1.15.0"'))
    assert cli("lock", path).code == 0
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "metaflow_repro", "env", "build", "--step", "start", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in outs), outs
    built = [out for out, _, _ in outs if "built env" in out]
    assert len(built) == 1, outs
    env = env_paths(built[0])["start"]
    assert run_in(env, "import six; print(six.__version__)").stdout.strip() == "1.15.0"


def test_corrupt_cached_file_is_named_never_used_and_refetched(tmp_path, repro_home):
    path = write_flow(tmp_path, SMALL.format(name="CorruptFlow", python="").replace('"1.16.0"', '"1.14.0"'))
    assert cli("lock", path).code == 0
    lock = (tmp_path / "flow.repro.lock").read_text()
    sha = lock.split('file = "six-1.14.0-py2.py3-none-any.whl"')[1].split('sha256 = "')[1][:64]
    cache = PackageCache(repro_home / "packages")
    fake = Package("six", "1.14.0", "pypi", "six-1.14.0-py2.py3-none-any.whl", "file:///nowhere", sha, 0)
    assert cli("env", "build", path, "--step", "end").code == 0  # fills the cache with the other files
    target = cache.path(fake)
    r = cli("env", "build", path, "--step", "start")
    assert r.code == 0
    env = env_paths(r.out)["start"]
    shutil.rmtree(env)
    # same size, different bytes: only a hash check can tell
    size = target.stat().st_size
    os.chmod(target, 0o644)
    target.write_bytes(b"\0" * size)
    r = cli("env", "build", path, "--step", "start")
    assert r.code == 3, r.text  # the bytes are wrong, not the input
    assert "six-1.14.0-py2.py3-none-any.whl" in r.err and "does not match its sha256" in r.err
    assert not target.exists() and not (env / ".repro-env.json").exists()
    r = cli("env", "build", path, "--step", "start")
    assert r.code == 0 and run_in(env, "import six").returncode == 0


def test_download_that_fails_verification_never_enters_the_cache(tmp_path):
    src = tmp_path / "pkg-1.0-py3-none-any.whl"
    src.write_bytes(b"not the real thing")
    cache = PackageCache(tmp_path / "cache")
    bad = Package("pkg", "1.0", "pypi", src.name, src.as_uri(), "0" * 64, src.stat().st_size)
    with pytest.raises(IntegrityError, match="pkg-1.0-py3-none-any.whl.*does not match the lock"):
        Fetcher(cache).fetch(bad, where="flow X, step 'start'")
    assert not cache.has(bad)
    assert not list((tmp_path / "cache").rglob("*.whl")) and not list((tmp_path / "cache").rglob(".partial-*"))


def test_offline_build_needs_no_network_at_all(tmp_path, repro_home):
    path = small_flow(tmp_path, "OfflineFlow")
    r = cli("env", "build", path)
    assert r.code == 0
    for env in set(env_paths(r.out).values()):
        shutil.rmtree(env)
    cmd = [sys.executable, "-m", "metaflow_repro", "env", "build", "--offline", str(path)]
    env = {**os.environ, "REPRO_INDEX_URL": "http://127.0.0.1:9/simple", "https_proxy": "http://127.0.0.1:9"}
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"]).returncode == 0:
        cmd = ["unshare", "-n", *cmd]  # a network namespace with no network at all
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("built env") == 2


def test_offline_build_with_files_missing_names_them_and_builds_nothing(tmp_path):
    path = write_flow(tmp_path, SMALL.format(name="MissFlow", python="").replace('"1.16.0"', '"1.13.0"'))
    assert cli("lock", path).code == 0
    r = cli("env", "build", "--offline", "--step", "start", path)
    assert r.code == 2 and "six-1.13.0-py2.py3-none-any.whl" in r.err and "without --offline" in r.err
    # and an offline build never re-resolves a stale lock
    path.write_text(path.read_text().replace('"1.13.0"', '"1.12.0"'))
    r = cli("env", "build", "--offline", path)
    assert r.code == 2 and "--offline forbids resolving" in r.err and "six 1.13.0 -> 1.12.0" in r.err


def test_env_show_reports_state_and_runtime_drift(tmp_path):
    # its own six version: this test tampers with the env, which no other test may share
    path = write_flow(tmp_path, SMALL.format(name="ShowFlow", python="").replace('"1.16.0"', '"1.11.0"'))
    r = cli("env", "show", path)
    assert r.code == 0 and "not locked" in r.out
    r = cli("env", "build", path)
    env = env_paths(r.out)["start"]
    show = cli("env", "show", path)
    assert show.code == 0, show.text
    rows = {line.split()[0]: line for line in show.out.splitlines() if line.startswith(("start", "end"))}
    assert "built" in rows["start"] and "matches lock" in rows["start"] and "six==1.11.0" in rows["start"]
    # somebody edits an installed package in place: runtime drift
    six_py = next((env / "lib").glob("python3*/site-packages/six.py"))
    six_py.write_text(six_py.read_text() + "\n# edited\n")
    show = cli("env", "show", path)
    assert show.code == 1 and "DRIFT: six 1.11.0 changed on disk" in show.out
    drift = cli("drift", "--no-resolve", path)
    assert drift.code == 1 and "runtime drift: start (env " in drift.out and "six 1.11.0 changed on disk" in drift.out


@pytest.mark.parametrize("minor", ["3.7", "3.13"])
def test_probe_runs_on_old_and_new_pythons_with_stdlib_only(minor):
    exe = require_python(minor)
    from metaflow_repro.env import fingerprint

    fp = fingerprint.take(exe)
    assert fp["python"].startswith(minor + ".") and len(fp["digest"]) == 64
    assert fp["implementation"] == "cpython" and fp["machine"]


def test_fingerprint_lists_the_interpreters_distributions():
    """What a fingerprint holds (its speed is measured in benchmarks/bench_env.py, not asserted here)."""
    from metaflow_repro.env import fingerprint

    fp = fingerprint.take(sys.executable)
    names = {d["name"] for d in fp["distributions"]}
    assert {"pytest", "metaflow", "uv"} <= names and len(names) > 10
    assert len(fp["digest"]) == 64 and fingerprint.take(sys.executable)["digest"] == fp["digest"]


def test_fingerprint_from_outside_equals_fingerprint_from_inside(tmp_path):
    """Builds fingerprint from outside the env (no interpreter start-up); tasks do it from inside.
    Both must give the same digest, or every task would report drift."""
    from metaflow_repro.env import fingerprint, pythons
    from metaflow_repro.env.engine import environments, open_flow

    path = small_flow(tmp_path, "DigestFlow")
    assert cli("env", "build", path).code == 0
    flow = open_flow(path)
    pl = flow.lock.steps["start"].platforms["linux-64"]
    built = environments(flow.settings).get(pl.env_id)
    inside = fingerprint.take(built.python)
    outside = fingerprint.of_env(built.path, pythons.find(pl.python).facts)
    assert inside["digest"] == outside["digest"] == built.fingerprint["digest"]
    assert {d["name"] for d in inside["distributions"]} == {p.name for p in pl.packages}
