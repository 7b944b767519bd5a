"""Damaged environments and package files repair themselves (issue 11, items 7 and 8): a cached file
with bit rot under an unchanged stamp is evicted and fetched anew once; a file deleted from a built
env gets it rebuilt instead of reused; `repro env build --repair` re-hashes every file."""

from __future__ import annotations

import os

from metaflow_repro.env.cache import PackageCache
from tests.helpers import cli, write_flow
from tests.test_build import env_paths, run_in

FLOW = """
    from metaflow import FlowSpec, step, pypi
    class {name}(FlowSpec):
        @pypi(packages={{"six": "{six}"}})
        @step
        def start(self):
            self.next(self.end)
        @step
        def end(self):
            pass
"""


def six_file(home, lock_text: str, version: str):
    from metaflow_repro.model.lock import Package

    name = f"six-{version}-py2.py3-none-any.whl"
    sha = lock_text.split(f'file = "{name}"')[1].split('sha256 = "')[1][:64]
    return PackageCache(home / "packages").path(Package("six", version, "pypi", name, "", sha, 0))


def test_bit_rot_under_a_kept_stamp_is_evicted_and_the_build_retries_once(tmp_path):
    home = tmp_path / "home"
    env = {"REPRO_HOME": str(home)}
    path = write_flow(tmp_path / "p", FLOW.format(name="RotFlow", six="1.16.0"))
    assert cli("lock", path, env=env).code == 0
    r = cli("env", "build", path, "--step", "start", env=env)
    assert r.code == 0, r.text
    built = env_paths(r.out)["start"]
    target = six_file(home, path.with_name("flow.repro.lock").read_text(), "1.16.0")
    st = target.stat()
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(target, "r+b") as fh:  # same inode and size, mtime put back: the stamp still matches
        fh.write(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    (built / ".repro-env.json").unlink()  # force an install from the cache
    r = cli("env", "build", path, "--step", "start", env=env)
    assert r.code == 0, r.text
    assert "do not match their sha256" in r.err and "retrying once" in r.err
    assert run_in(built, "import six").returncode == 0


def test_a_file_deleted_from_a_built_env_gets_it_rebuilt_and_repair_rehashes(tmp_path):
    home = tmp_path / "home"
    env = {"REPRO_HOME": str(home)}
    path = write_flow(tmp_path / "p", FLOW.format(name="DamagedFlow", six="1.16.0"))
    r = cli("env", "build", path, "--step", "start", env=env)
    assert r.code == 0, r.text
    built = env_paths(r.out)["start"]
    six_py = next(built.glob("lib/python3*/site-packages/six.py"))
    six_py.unlink()
    r = cli("env", "build", path, "--step", "start", env=env)
    assert r.code == 0 and "damaged" in r.err and "built env" in r.out, r.text
    assert run_in(built, "import six").returncode == 0
    # same size, other bytes, the stamp put back (bit rot, or meant): only --repair (a full re-hash) sees it;
    # a same-size edit that leaves its modification time is seen by any build (tests/security/test_env_reuse.py)
    text, st = six_py.read_bytes(), six_py.stat()
    with open(six_py, "r+b") as fh:  # same inode
        fh.write(text.replace(b"import", b"IMPORT", 1))
    os.utime(six_py, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = cli("env", "build", path, "--step", "start", env=env)
    assert r.code == 0 and "reused env" in r.out, r.text
    r = cli("env", "build", path, "--step", "start", "--repair", env=env)
    assert r.code == 0 and "six.py changed" in r.err and "built env" in r.out, r.text
    assert run_in(built, "import six").returncode == 0
