"""A built env is reused only if it holds what it was built with, and a replay mends what it can from the
store (issue 22 item 6): a same-size edit inside a built env (another ``__version__``) is named and the
env rebuilt before the replay, which answers ``identical`` instead of blaming the run; a cached wheel
with bit rot (its stamp kept, so only uv's hash check sees it) is fetched again from the store.

Real runs: ``repro run`` pushes to a file store, ``repro replay`` rebuilds offline, each test with its
own REPRO_HOME (they damage it)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from metaflow_repro._toml import tomllib
from metaflow_repro.env import manifest
from metaflow_repro.env.cache import sha256_file
from metaflow_repro.model.platforms import local_platform_name
from tests.helpers import cli, write_flow

FLOW = """
    from metaflow import FlowSpec, pypi, step

    class ReuseFlow(FlowSpec):
        @pypi(packages={"six": "1.16.0"})
        @step
        def start(self):
            import six
            self.six_version = six.__version__
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        ReuseFlow()
"""


@pytest.fixture
def recorded(tmp_path) -> dict:
    """A run of ReuseFlow pushed to a file store, with a REPRO_HOME of this test's own."""
    path = write_flow(tmp_path / "proj", FLOW)
    env = {
        "REPRO_HOME": str(tmp_path / "home"),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    store = (tmp_path / "store").as_uri()
    r = cli("run", path, "--store", store, env=env, cwd=tmp_path)
    assert r.code == 0, r.text[-3000:]
    lock = tomllib.loads(path.with_name("flow.repro.lock").read_text())
    env_id = lock["steps"]["start"]["platforms"][local_platform_name()]["env_id"]
    return {"env": env, "store": store, "home": tmp_path / "home", "cwd": tmp_path, "env_id": env_id, "flow": path}


def replay(recorded: dict):
    return cli("replay", "ReuseFlow/latest", "--store", recorded["store"], env=recorded["env"], cwd=recorded["cwd"])


def six_py(recorded: dict) -> Path:
    return next((recorded["home"] / "envs" / recorded["env_id"][:16]).glob("lib/python3*/site-packages/six.py"))


def rot(path: Path) -> None:
    """Flip one byte in the middle of ``path``, keeping its size, inode and modification time (its stamp)."""
    st = path.stat()
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    os.chmod(path, st.st_mode & 0o777)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_same_size_edit_in_a_built_env_is_rebuilt_and_the_replay_is_identical(recorded):
    env_id, home = recorded["env_id"], recorded["home"]
    listed = manifest.read(home / "envs" / f"{env_id[:16]}.files.json", env_id)
    assert listed is not None
    folder = home / "envs" / env_id[:16]
    files = {rel: e[1] for rel, e in listed["files"].items() if e[0] == manifest.FILE}
    assert "bin/python" in listed["files"] and len(files) > 100
    # the sha256 the build took from RECORD for uv's files is each file's, as any other file's
    assert {rel: sha256_file(folder / rel) for rel in files} == files
    six = six_py(recorded)
    text = six.read_text()
    edited = text.replace('__version__ = "1.16.0"', '__version__ = "1.16.9"')
    assert edited != text and len(edited) == len(text)
    six.write_text(edited)
    r = cli("env", "show", recorded["flow"], env=recorded["env"], cwd=recorded["cwd"])  # says so, and changes nothing
    assert r.code == 1 and re.search(r"DRIFT: .*site-packages/six\.py changed \(same size", r.out), r.text
    r = replay(recorded)
    assert r.code == 0 and "result: identical" in r.text, r.text[-3000:]
    assert re.search(r"is damaged \(lib/python3\.\d+/site-packages/six\.py changed", r.text), r.text[-3000:]
    assert six_py(recorded).read_text() == text


@pytest.mark.parametrize("built_env", ["removed", "damaged"])
def test_a_cached_wheel_with_bit_rot_is_fetched_again_from_the_store_on_replay(recorded, built_env):
    wheel = next((recorded["home"] / "packages").rglob("six-1.16.0-*.whl"))
    if built_env == "removed":  # the replay builds the env from the package cache
        shutil.rmtree(recorded["home"] / "envs" / recorded["env_id"][:16])
    else:  # the replay finds it damaged, and rebuilds it from the package cache
        six_py(recorded).unlink()
    rot(wheel)
    r = replay(recorded)
    assert r.code == 0 and "result: identical" in r.text, r.text[-3000:]
    assert f"{wheel.name} is damaged or gone in the package cache: fetching it again from {recorded['store']}" in r.text
    assert sha256_file(wheel) == wheel.parent.name  # the store's copy, verified into the cache
