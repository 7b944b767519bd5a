"""Packages published only as source (issue 10 item 4): built once into a wheel at lock time,
offline, with locked build requirements; the lock names the sdist's and the wheel's sha256 and the
build environment; the wheel is cached and snapshotted, so a replay with no network and an empty
REPRO_HOME installs that very wheel and builds nothing."""

import io
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from metaflow_repro.env.cache import sha256_file
from metaflow_repro.env.sdist import DEFAULT_REQUIRES, build_requirements
from metaflow_repro.model.lock import read_lock
from tests.helpers import cli, require_netns, write_flow

DOCOPT_SDIST_SHA256 = "49b3a825280bd66b3aa83585ef59c4a8c82f2c8a522dbe754a8bc8d08c85c491"  # docopt-0.6.2.tar.gz on PyPI

FLOW = """
from metaflow import FlowSpec, step, pypi


class DocoptFlow(FlowSpec):
    @pypi(packages={"docopt": "0.6.2"})
    @step
    def start(self):
        import docopt

        self.parsed = dict(docopt.docopt("Usage: prog <name>", argv=["world"]))
        self.version = docopt.__version__
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    DocoptFlow()
"""


def _sdist(folder: Path, name: str, files: dict) -> Path:
    """A .tar.gz sdist ``<name>-1.0/...`` holding ``files``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}-1.0.tar.gz"
    with tarfile.open(target, "w:gz") as tf:
        for path, text in {"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", **files}.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(f"{name}-1.0/{path}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return target


def test_build_requirements_come_from_the_sdists_pyproject_or_pep517s_default(tmp_path):
    declared = _sdist(
        tmp_path / "a",
        "declared",
        {"pyproject.toml": '[build-system]\nrequires = ["flit_core>=3.2,<4"]\nbuild-backend = "flit_core.buildapi"\n'},
    )
    assert build_requirements(declared) == ["flit_core>=3.2,<4"]
    legacy = _sdist(tmp_path / "b", "legacy", {"setup.py": "from setuptools import setup\nsetup()\n"})
    assert build_requirements(legacy) == list(DEFAULT_REQUIRES)
    # a pyproject.toml deeper down (a test fixture of the package) is not the project's
    nested = _sdist(tmp_path / "c", "nested", {"tests/pyproject.toml": '[build-system]\nrequires = ["x"]\n'})
    assert build_requirements(nested) == list(DEFAULT_REQUIRES)


@pytest.fixture(scope="module")
def docopt_run(tmp_path_factory):
    """One lock + run + push of a flow that needs docopt 0.6.2 (no wheel on PyPI), shared."""
    work = tmp_path_factory.mktemp("sdist")
    home, store = work / "home", (work / "store").as_uri()
    env = {
        "REPRO_HOME": str(home),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    flow = write_flow(work / "proj", FLOW)
    locked = cli("lock", flow, env=env)
    assert locked.code == 0, locked.text
    ran = cli("run", flow, "--store", store, env=env, cwd=flow.parent)
    assert ran.code == 0, ran.text[-4000:]
    return {"work": work, "home": home, "store": store, "flow": flow, "env": env}


@pytest.mark.slow
def test_the_lock_names_the_sdist_the_built_wheel_and_its_build_environment(docopt_run):
    lock = read_lock(docopt_run["flow"].with_name("flow.repro.lock"))
    assert lock is not None
    pkg = next(p for p in lock.steps["start"].platforms["linux-64"].packages if p.name == "docopt")
    assert pkg.built is not None
    assert pkg.file == "docopt-0.6.2-py2.py3-none-any.whl"
    assert pkg.built.sdist.file == "docopt-0.6.2.tar.gz" and pkg.built.sdist.sha256 == DOCOPT_SDIST_SHA256
    assert pkg.built.python == lock.steps["start"].platforms["linux-64"].python
    assert [p.name for p in pkg.built.requires] == ["setuptools"] and pkg.built.requires[0].sha256
    cached = next((docopt_run["home"] / "packages").rglob(pkg.file))
    assert sha256_file(cached) == pkg.sha256 and cached.stat().st_size == pkg.size
    stored = list((docopt_run["work"] / "store").rglob(pkg.file))
    assert stored and sha256_file(stored[0]) == pkg.sha256  # the wheel itself is in the snapshot
    # the lock holds: no spec drift, and re-resolving reuses the wheel built from that very sdist
    check = cli("lock", docopt_run["flow"], "--check", env=docopt_run["env"])
    assert check.code == 0, check.text
    drift = cli("drift", docopt_run["flow"], env=docopt_run["env"])
    assert drift.code == 0, drift.text


@pytest.mark.slow
def test_relocking_elsewhere_on_this_machine_reuses_the_built_wheel(docopt_run, tmp_path):
    """Built once: a second flow (another lock) that needs the same sdist gets the same wheel,
    so the same env id, and nothing is built again."""
    index = list((docopt_run["home"] / "builds").glob(f"{DOCOPT_SDIST_SHA256}-*.json"))
    assert len(index) == 1
    before = index[0].stat()
    flow = write_flow(tmp_path / "other", FLOW)
    r = cli("lock", flow, env=docopt_run["env"])
    assert r.code == 0, r.text
    first = read_lock(docopt_run["flow"].with_name("flow.repro.lock"))
    second = read_lock(flow.with_name("flow.repro.lock"))
    assert first is not None and second is not None
    assert second.steps["start"].platforms["linux-64"].env_id == first.steps["start"].platforms["linux-64"].env_id
    after = index[0].stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not built again


@pytest.mark.slow
def test_replay_with_no_network_from_an_empty_home_installs_the_snapshotted_wheel(docopt_run, tmp_path):
    require_netns()
    fresh = tmp_path / "fresh-home"
    env = {**os.environ, **docopt_run["env"], "REPRO_HOME": str(fresh), "REPRO_INDEX_URL": "http://127.0.0.1:9/simple"}
    proc = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-m",
            "metaflow_repro",
            "replay",
            "DocoptFlow/latest",
            "--store",
            docopt_run["store"],
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "result: identical" in proc.stdout
    assert not (fresh / "builds").exists()  # nothing was built: the wheel came from the store
    lock = read_lock(docopt_run["flow"].with_name("flow.repro.lock"))
    assert lock is not None
    wheel = next(p for p in lock.steps["start"].platforms["linux-64"].packages if p.name == "docopt")
    assert sha256_file(next((fresh / "packages").rglob(wheel.file))) == wheel.sha256
    assert not list((fresh / "packages").rglob("setuptools-*.whl"))  # no build backend was fetched


@pytest.mark.slow
def test_a_failing_build_exits_2_naming_the_package_and_the_build_logs_last_lines(docopt_run, tmp_path):
    """An sdist whose metadata builds but whose wheel build fails, from a local index only (its
    build backend, setuptools, is the wheel the docopt build fetched)."""
    links, empty = tmp_path / "links", tmp_path / "empty-index"
    empty.mkdir()
    _sdist(
        links,
        "reprobrokenbuild",
        {
            "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n',
            "setup.py": """
                import sys
                from setuptools import setup
                if "bdist_wheel" in sys.argv:
                    sys.exit("error: the compiler exploded on purpose (reprobrokenbuild)")
                setup(name="reprobrokenbuild", version="1.0", py_modules=[])
                """,
        },
    )
    for wheel in (docopt_run["home"] / "packages").rglob("*.whl"):
        shutil.copy(wheel, links / wheel.name)  # setuptools and Metaflow's own needs
    flow = write_flow(tmp_path / "proj", FLOW.replace('"docopt": "0.6.2"', '"reprobrokenbuild": "1.0"'))
    env = {**docopt_run["env"], "REPRO_FIND_LINKS": str(links), "REPRO_INDEX_URL": empty.as_uri()}
    r = cli("lock", flow, env=env)
    assert r.code == 2, r.text
    assert "reprobrokenbuild 1.0" in r.err and "DocoptFlow" in r.err and "start" in r.err
    assert "the compiler exploded on purpose" in r.err  # the build log's last lines
    assert "Traceback" not in r.err
    assert not flow.with_name("flow.repro.lock").exists()


@pytest.mark.slow
def test_a_lost_wheel_is_rebuilt_from_the_locked_sdist_and_kept_only_with_the_locked_sha256(docopt_run, tmp_path):
    """A teammate with the committed lock and no store: the wheel is built again from the locked
    sdist, build requirements and interpreter (SOURCE_DATE_EPOCH fixed, so this build repeats)."""
    fresh = tmp_path / "home"
    r = cli("env", "build", docopt_run["flow"], "--step", "start", env={**docopt_run["env"], "REPRO_HOME": str(fresh)})
    assert r.code == 0, r.text
    lock = read_lock(docopt_run["flow"].with_name("flow.repro.lock"))
    assert lock is not None
    wheel = next(p for p in lock.steps["start"].platforms["linux-64"].packages if p.name == "docopt")
    assert sha256_file(next((fresh / "packages").rglob(wheel.file))) == wheel.sha256
