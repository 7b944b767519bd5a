"""conda-source = "conda" for real: a local channel built by metaflow_repro.testing.conda_channel (a python
package made from a real CPython, wheels turned into conda packages), solved and installed with
py-rattler, the seed's examples run under `--environment=conda`, snapshot + offline replay,
resolution drift, and the packages that must be refused (sha256 mismatch, a '..' member)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from metaflow_repro.model.lock import read_lock
from metaflow_repro.model.record import from_json
from tests.helpers import SCENARIOS, FlowRun, cli, run_flow

pytestmark = pytest.mark.slow

SIX_FLOW = """
from metaflow import FlowSpec, conda, step


class CondaSixFlow(FlowSpec):
    @conda(libraries={"six": "1.16.0", "markupsafe": "2.1.5"})
    @step
    def start(self):
        import sys

        import markupsafe
        import six

        self.six = six.__version__
        self.speedups = markupsafe._speedups.__file__  # the compiled extension
        self.python = sys.executable
        self.next(self.end)

    @step
    def end(self):
        try:
            import six  # noqa: F401 - declared for `start` only

            self.six_in_end = True
        except ImportError:
            self.six_in_end = False


if __name__ == "__main__":
    CondaSixFlow()
"""


def project(root: Path, channel: Path, flows: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f'[tool.repro]\nconda-source = "conda"\nchannels = ["{channel}"]\n')
    for name, body in flows.items():
        (root / name).write_text(body)
    return root


def mf_env(folder: Path) -> dict:
    return {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(folder / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }


@pytest.fixture(scope="module")
def six_project(tmp_path_factory, conda_channel):
    root = project(tmp_path_factory.mktemp("conda-six"), conda_channel, {"flow.py": SIX_FLOW})
    r = cli("lock", root / "flow.py", cwd=root)
    assert r.code == 0, r.text
    return root


# -- the channel ------------------------------------------------------------------------------


def test_channel_python_is_relocatable_and_wheels_become_conda_packages(conda_channel):
    repodata = {
        sub: json.loads((conda_channel / sub / "repodata.json").read_text())["packages"]
        for sub in ("linux-64", "noarch")
    }
    py = next(r for r in repodata["linux-64"].values() if r["name"] == "python")
    assert py["version"] == ".".join(map(str, sys.version_info[:3])) and py["depends"][0].startswith("__glibc >=")
    six = [r for r in repodata["noarch"].values() if r["name"] == "six"]
    assert sorted(r["version"] for r in six) == ["1.16.0", "1.17.0"]  # two versions of one library
    assert all(r["noarch"] == "python" for r in six)
    assert next(r for r in repodata["linux-64"].values() if r["name"] == "markupsafe")["subdir"] == "linux-64"
    requests = next(r for r in repodata["noarch"].values() if r["name"] == "requests")
    assert {d.split()[0] for d in requests["depends"]} >= {"urllib3", "idna", "certifi", "charset-normalizer", "python"}
    with tarfile.open(next((conda_channel / "linux-64").glob("python-*.tar.bz2"))) as tar:
        paths = json.loads(tar.extractfile("info/paths.json").read())["paths"]
    placeholders = {p["_path"] for p in paths if p.get("prefix_placeholder")}
    assert any("_sysconfigdata" in p for p in placeholders), placeholders  # text files naming the prefix
    assert {"bin/python", "bin/python3"} <= {p["_path"] for p in paths if p["path_type"] == "softlink"}


# -- lock, build, run -------------------------------------------------------------------------


def test_lock_records_channel_subdir_hashes_and_virtual_packages(six_project, conda_channel):
    lock = read_lock(six_project / "flow.repro.lock")
    start = lock.steps["start"]
    assert (start.source, start.channels) == ("conda", (str(conda_channel),))
    (pl,) = start.platforms.values()
    by = pl.by_name()
    assert {"python", "six", "markupsafe", "requests", "urllib3"} <= set(by)
    assert pl.python == by["python"].version
    six = by["six"]
    assert (six.version, six.subdir, six.source) == ("1.16.0", "noarch", conda_channel.as_uri())
    assert six.url == f"{conda_channel.as_uri()}/noarch/{six.file}" and six.file.endswith(".tar.bz2")
    assert (
        len(six.md5) == 32
        and len(six.sha256) == 64
        and six.size == (conda_channel / "noarch" / six.file).stat().st_size
    )
    assert by["markupsafe"].subdir == "linux-64"
    assert any(v.startswith("__glibc=") for v in pl.virtual_packages)
    assert not any(v.startswith("__archspec") for v in pl.virtual_packages)  # machine-specific: left out
    # the bare step gets Python + Metaflow's needs from the channel too, and no six
    end = lock.steps["end"].platforms[pl.platform].by_name()
    assert "six" not in end and {"python", "requests"} <= set(end)


def test_flow_runs_in_rattler_built_envs_with_the_channels_python(six_project):
    run = run_flow(six_project / "flow.py", six_project / "mf")
    assert run.code == 0, run.text[-4000:]
    art = {s: t[0]["artifacts"] for s, t in run.inspect("CondaSixFlow")["steps"].items()}
    home = Path(run.env["REPRO_HOME"])
    assert art["start"]["six"] == "1.16.0"
    assert art["start"]["python"].startswith(str(home / "envs"))  # the env's own interpreter, not the host's
    assert art["start"]["speedups"].endswith(".so")
    assert art["end"]["six_in_end"] is False
    # the env is a conda prefix: conda-meta lists every package, and `env show` says it matches its lock
    show = cli("env", "show", six_project / "flow.py", cwd=six_project)
    assert show.code == 0 and show.out.count("matches lock") == 2, show.text


def test_runtime_drift_in_a_conda_env_is_seen(six_project, tmp_path):
    lock = read_lock(six_project / "flow.repro.lock")
    from metaflow_repro.env.build import Environments
    from metaflow_repro.env.cache import PackageCache
    from metaflow_repro.settings import load_settings

    settings = load_settings(six_project)
    envs = Environments(settings.home.envs, PackageCache(settings.home.packages), settings.home.uv_cache)
    pl = next(iter(lock.steps["start"].platforms.values()))
    assert cli("env", "build", six_project / "flow.py", "--step", "start", cwd=six_project).code == 0
    built = envs.get(pl.env_id)
    assert built is not None
    meta = next((built.path / "conda-meta").glob("six-*.json"))
    saved = meta.read_bytes()
    meta.unlink()
    try:
        r = cli("drift", six_project / "flow.py", cwd=six_project)
        assert r.code == 1 and "conda package six 1.16.0" in r.text, r.text
    finally:
        meta.write_bytes(saved)
    assert cli("drift", six_project / "flow.py", cwd=six_project).code == 0


# -- refused packages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "libraries, words",
    [
        ({"six": "1.17.0"}, "does not match the lock"),  # the repodata's sha256 is not the file's
        ({"evil-dotdot": "1.0"}, "'..' component"),
    ],
)
def test_a_package_that_fails_verification_is_refused_and_nothing_is_installed(
    tmp_path, conda_channel, libraries, words
):
    body = SIX_FLOW.replace('{"six": "1.16.0", "markupsafe": "2.1.5"}', json.dumps(libraries))
    root = project(tmp_path / "p", conda_channel, {"flow.py": body})
    assert cli("lock", root / "flow.py", cwd=root).code == 0
    r = cli("env", "build", root / "flow.py", "--step", "start", cwd=root)
    assert r.code == 3, r.text
    assert words in r.text and next(iter(libraries)) in r.text
    lock = read_lock(root / "flow.repro.lock")
    pl = next(iter(lock.steps["start"].platforms.values()))
    from metaflow_repro.settings import load_settings

    assert not (load_settings(root).home.envs / pl.env_id[:16]).exists()  # no partial env left behind


def test_unsatisfiable_pins_are_bad_input_naming_the_step(tmp_path, conda_channel):
    body = SIX_FLOW.replace('{"six": "1.16.0", "markupsafe": "2.1.5"}', '{"six": "9.9.9"}')
    root = project(tmp_path / "p", conda_channel, {"flow.py": body})
    r = cli("lock", root / "flow.py", cwd=root)
    assert r.code == 2 and "step 'start'" in r.err and "six ==9.9.9" in r.err, r.text


# -- drift --------------------------------------------------------------------------------------


def test_repodata_moving_under_the_lock_is_resolution_drift(tmp_path, conda_channel):
    from metaflow_repro.testing.conda_channel import Entry, Meta, index, write_package

    channel = tmp_path / "channel"
    shutil.copytree(conda_channel, channel, ignore=shutil.ignore_patterns(".wheels", ".tmp"))
    root = project(tmp_path / "p", channel, {"flow.py": SIX_FLOW})
    assert cli("lock", root / "flow.py", cwd=root).code == 0
    assert cli("drift", root / "flow.py", cwd=root).code == 0
    # a newer idna (requests' dependency, not pinned by the flow) lands in the channel
    write_package(
        channel,
        Meta("idna", "3.99", "pyh_repro_0", "noarch", ["python"], "python"),
        [Entry("site-packages/idna/__init__.py", b"__version__ = '3.99'\n")],
    )
    index(channel)
    r = cli("drift", root / "flow.py", cwd=root)
    assert r.code == 1 and "idna" in r.text and "3.99" in r.text, r.text


# -- the seed's examples, snapshot and offline replay --------------------------------------------


@pytest.fixture(scope="module")
def seed_project(tmp_path_factory, conda_channel):
    flows = {f"{n}.py": (SCENARIOS / f"{n}.py").read_text() for n in ("linear", "linear_sklearn", "base_override")}
    root = project(tmp_path_factory.mktemp("conda-seed"), conda_channel, flows)
    for name in flows:
        r = cli("lock", root / name, cwd=root)
        assert r.code == 0, r.text
    return root


def test_seed_examples_run_from_the_channel(seed_project):
    linear = run_flow(seed_project / "linear.py", seed_project / "mf")
    assert linear.code == 0 and "the data artifact is still: hello world" in linear.text, linear.text[-4000:]
    base = run_flow(seed_project / "base_override.py", seed_project / "mf")
    assert base.code == 0, base.text[-4000:]
    art = {s: t[0]["artifacts"] for s, t in base.inspect("BaseOverrideFlow")["steps"].items()}
    assert (art["a"]["numpy_a"], art["b"]["numpy_b"]) == ("1.26.4", "2.1.3")  # base, and the step's override
    assert (
        art["c"]["c_python"] == sys.executable or Path(art["c"]["c_python"]).resolve() == Path(sys.executable).resolve()
    )


def test_seed_snapshot_replays_offline_from_the_store_identical(seed_project, tmp_path):
    store = (tmp_path / "store").as_uri()
    env = {**mf_env(seed_project), "REPRO_FROZEN": "1"}
    r = cli("run", seed_project / "linear_sklearn.py", "--store", store, env=env, cwd=seed_project)
    assert r.code == 0, r.text[-4000:]
    home = Path(os.environ["REPRO_HOME"])
    newest = max((home / "records" / "LinearSklearnFlow").glob("*.json"), key=lambda p: p.stat().st_mtime)
    record = from_json(newest.read_text(), str(newest))
    art = FlowRun(0, "", "", record.run_id, {**os.environ, **env}).inspect("LinearSklearnFlow")
    assert art["steps"]["start"][0]["artifacts"]["sklearn_version"] == "1.5.2"
    assert art["steps"]["a"][0]["artifacts"]["sklearn_in_a"] is False
    # every conda package file the run used is in the store, content-addressed
    root = tmp_path / "store"
    for pl in record.envs.values():
        for p in pl.packages:
            assert (root / "packages" / "sha256" / p.sha256[:2] / p.sha256 / p.file).is_file(), p.file
    # replay from an empty REPRO_HOME, with the channel gone: everything comes from the store
    empty = tmp_path / "empty-home"
    r = cli("replay", "LinearSklearnFlow/latest", "--store", store, env={**env, "REPRO_HOME": str(empty)}, cwd=tmp_path)
    assert r.code == 0 and "identical" in r.text, r.text[-4000:]
    assert any((empty / "envs").iterdir())  # rebuilt offline from the store's package files


def test_conda_source_pypi_maps_conda_names_and_records_the_map(tmp_path):
    body = SIX_FLOW.replace('{"six": "1.16.0", "markupsafe": "2.1.5"}', '{"msgpack-python": "1.1.0"}')
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    (root / "flow.py").write_text(body)
    r = cli("lock", root / "flow.py", cwd=root)
    assert r.code == 0, r.text
    (pl,) = read_lock(root / "flow.repro.lock").steps["start"].platforms.values()
    assert dict(pl.name_map) == {"msgpack-python": "msgpack"}
    assert pl.by_name()["msgpack"].version == "1.1.0" and "msgpack-python" not in pl.by_name()
    assert 'msgpack-python = "msgpack"' in (root / "flow.repro.lock").read_text()


MIXED_FLOW = """
from metaflow import FlowSpec, conda_base, pypi, step


@conda_base(libraries={"six": "1.16.0"})
class MixedFlow(FlowSpec):
    @step
    def start(self):
        import six

        self.six = six.__version__
        self.next(self.mid)

    @pypi(packages={"tomli": "2.0.1"})
    @step
    def mid(self):
        import sys

        import six
        import tomli

        self.both = [six.__version__, tomli.__version__ if hasattr(tomli, "__version__") else "2.0.1"]
        self.python = sys.executable
        self.next(self.end)

    @step
    def end(self):
        try:
            import tomli  # noqa: F401 - only `mid` has the pip package

            self.tomli_in_end = True
        except ImportError:
            self.tomli_in_end = False


if __name__ == "__main__":
    MixedFlow()
"""

SIDE_BY_SIDE_FLOW = """
from metaflow import FlowSpec, conda, pypi, step


class SideBySideFlow(FlowSpec):
    @conda(libraries={"six": "1.16.0"})
    @step
    def start(self):
        import sys

        self.conda_python = sys.executable
        self.next(self.end)

    @pypi(packages={"six": "1.17.0"})
    @step
    def end(self):
        import six

        self.six = six.__version__


if __name__ == "__main__":
    SideBySideFlow()
"""


def test_pip_packages_on_top_of_a_conda_env_and_pypi_steps_beside_conda_steps(tmp_path, conda_channel):
    root = project(tmp_path / "p", conda_channel, {"mixed.py": MIXED_FLOW, "side.py": SIDE_BY_SIDE_FLOW})
    for name in ("mixed.py", "side.py"):
        r = cli("lock", root / name, cwd=root)
        assert r.code == 0, r.text
    lock = read_lock(root / "mixed.repro.lock")
    mid = lock.steps["mid"]
    assert (mid.source, dict(mid.pip), dict(mid.libraries)) == ("conda", {"tomli": "2.0.1"}, {"six": "1.16.0"})
    (pl,) = mid.platforms.values()
    by = pl.by_name()
    assert by["six"].is_conda and by["python"].is_conda  # conda first ...
    assert not by["tomli"].is_conda and by["tomli"].source == "pypi"  # ... then exactly the pip pin, no deps
    assert [p.name for p in pl.packages if not p.is_conda] == ["tomli"]
    run = run_flow(root / "mixed.py", root / "mf")
    assert run.code == 0, run.text[-4000:]
    art = {s: t[0]["artifacts"] for s, t in run.inspect("MixedFlow")["steps"].items()}
    assert art["start"]["six"] == "1.16.0" and art["mid"]["both"] == ["1.16.0", "2.0.1"]
    assert art["end"]["tomli_in_end"] is False
    show = cli("env", "show", root / "mixed.py", cwd=root)
    assert show.code == 0 and show.out.count("matches lock") == 3, show.text
    # a @pypi step beside @conda steps is a PyPI env (a venv of the host's Python) in the same run
    side = read_lock(root / "side.repro.lock")
    assert side.steps["start"].source == "conda" and side.steps["end"].source == "pypi"
    run = run_flow(root / "side.py", root / "mf")
    assert run.code == 0, run.text[-4000:]
    art = {s: t[0]["artifacts"] for s, t in run.inspect("SideBySideFlow")["steps"].items()}
    assert art["end"]["six"] == "1.17.0"


def test_conda_lock_export_is_read_by_conda_lock_and_imports_back_to_the_same_env(six_project, tmp_path):
    from conda_lock.conda_lock import render_lockfile_for_platform
    from conda_lock.lockfile import parse_conda_lock_file

    out = tmp_path / "exported"
    r = cli("lock", six_project / "flow.py", "--export-conda-lock", out, cwd=six_project)
    assert r.code == 0, r.text
    files = sorted(out.glob("*.conda-lock.yml"))
    assert [f.name for f in files] == ["flow-end.conda-lock.yml", "flow-start.conda-lock.yml"]
    lock = read_lock(six_project / "flow.repro.lock")
    (pl,) = lock.steps["start"].platforms.values()
    parsed = parse_conda_lock_file(out / "flow-start.conda-lock.yml")  # conda-lock's own parser and validation
    assert {d.name: d.version for d in parsed.package} == {p.name: p.version for p in pl.packages}
    assert {d.hash.sha256 for d in parsed.package} == {p.sha256 for p in pl.packages}
    # what `conda-lock install` hands to conda: an explicit list of URLs with their hashes
    explicit = render_lockfile_for_platform(
        lockfile=parsed, include_dev_dependencies=False, extras=None, kind="explicit", platform=pl.platform
    )
    assert "@EXPLICIT" in explicit and all(any(p.url in line for line in explicit) for p in pl.packages)
    # import it as the step's lock in a fresh copy of the project: the same env id, nothing re-solved
    fresh = tmp_path / "fresh"
    shutil.copytree(six_project, fresh, ignore=shutil.ignore_patterns("*.repro.lock", "mf", ".metaflow"))
    r = cli("lock", fresh / "flow.py", "--from", out / "flow-start.conda-lock.yml", "--step", "start", cwd=fresh)
    assert r.code == 0, r.text
    imported = read_lock(fresh / "flow.repro.lock").steps["start"].platforms[pl.platform]
    assert imported.env_id == pl.env_id and imported.virtual_packages == pl.virtual_packages
    # a file that does not hold what the step declares is refused, naming the library
    other = SIX_FLOW.replace('"six": "1.16.0"', '"six": "1.17.0"')
    (fresh / "flow.py").write_text(other)
    r = cli("lock", fresh / "flow.py", "--from", out / "flow-start.conda-lock.yml", "--step", "start", cwd=fresh)
    assert r.code == 2 and "six 1.16.0" in r.err and "six==1.17.0" in r.err, r.text


# -- py-rattler only in its worker process (issue 22 item 12) -------------------------------------

TINY_FLOW = """
from metaflow import FlowSpec, step


class TinyCondaFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TinyCondaFlow()
"""

#: Every Python process started with this lists each module it imports on its stderr ("... | rattler").
IMPORTS_SHOWN = {"PYTHONPROFILEIMPORTTIME": "1"}
RATTLER_IMPORTED = re.compile(r"^import time:.*\|\s+rattler(\.|$)", re.MULTILINE)
ROUNDS = 20
#: rounds run side by side (each in folders of its own): the suite's time on two cores, and exits under load
AT_ONCE = 2


def _rounds(one_round) -> None:
    """``one_round(i)`` for every round, in ``AT_ONCE`` lanes side by side: lane k runs rounds k,
    k + AT_ONCE, ... one after another (so ``i % AT_ONCE`` names folders no other round uses meanwhile);
    the first failure is raised."""
    from concurrent.futures import ThreadPoolExecutor

    def lane(k: int) -> None:
        for i in range(k, ROUNDS, AT_ONCE):
            one_round(i)

    with ThreadPoolExecutor(AT_ONCE) as pool:
        list(pool.map(lane, range(AT_ONCE)))


def test_the_channel_builder_exits_0_every_time_and_never_loads_rattler(tmp_path):
    """The builder crashed at exit (SIGABRT/SIGSEGV after printing success) in 2 runs of 6, when it ran
    rattler in its own process. About 10 s a round here (the python package is most of it)."""
    python = ".".join(map(str, sys.version_info[:3]))

    def one_round(i: int) -> None:
        channel = tmp_path / f"ch{i % AT_ONCE}"  # a round at a time in each: it rebuilds the channel there
        cmd = [sys.executable, "-m", "metaflow_repro.testing.conda_channel", str(channel), "--python", python]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **IMPORTS_SHOWN}, timeout=600)
        assert proc.returncode == 0 and "channel in" in proc.stdout, (i, proc.returncode, proc.stderr[-3000:])
        assert "| metaflow_repro.env.rattler_worker" in proc.stderr  # the listing is on (it asked the worker)
        assert not RATTLER_IMPORTED.search(proc.stderr), i

    _rounds(one_round)
    assert json.loads((tmp_path / "ch0" / "linux-64" / "repodata.json").read_text())["packages"]  # it was indexed


def test_a_conda_repro_run_exits_0_every_time_and_neither_repro_nor_metaflow_loads_rattler(tmp_path, conda_channel):
    """Each round solves (no lock) and installs (no env) with rattler, then runs the flow: 20 rounds, exit 0
    every time, and no process but rattler's worker imports rattler: not the command line, not Metaflow's
    runtime (which builds the envs), not a task. About 20 s a round here."""

    def one_round(i: int) -> None:
        slot = i % AT_ONCE  # a round at a time in each project and home
        root = project(tmp_path / f"p{slot}", conda_channel, {"flow.py": TINY_FLOW})
        home = tmp_path / f"home{slot}"
        env = {**mf_env(root), **IMPORTS_SHOWN, "REPRO_HOME": str(home)}
        (root / "flow.repro.lock").unlink(missing_ok=True)
        shutil.rmtree(home / "envs", ignore_errors=True)
        r = cli("run", root / "flow.py", env=env, cwd=root)
        assert r.code == 0, (i, r.text[-4000:])
        assert "| metaflow_repro.cli" in r.err and "| metaflow_repro.bridge" in r.err  # both processes listed
        assert not RATTLER_IMPORTED.search(r.text), i
        assert any((home / "envs").iterdir())  # rattler built it this round

    _rounds(one_round)
