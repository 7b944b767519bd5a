"""``Environments``' reuse check against the file manifest, on a folder laid out like an env (no uv)."""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock

from metaflow_repro.env import manifest
from metaflow_repro.env.build import NOT_LISTED, BuiltEnv, Environments
from metaflow_repro.env.cache import PackageCache
from metaflow_repro.model.lock import PlatformLock

LOCK = PlatformLock(platform="linux-64", python="3.11.7", packages=())


def built_env(tmp_path: Path) -> tuple[Environments, BuiltEnv]:
    envs = Environments(tmp_path / "envs", PackageCache(tmp_path / "packages"), tmp_path / "uv-cache", tmp_path / "c")
    env_id = LOCK.env_id
    path = envs.path(env_id)
    (path / "lib").mkdir(parents=True)
    (path / "lib" / "six.py").write_text('__version__ = "1.16.0"\n')
    (path / NOT_LISTED[0]).write_text("{}")
    manifest.write(envs.manifest_path(env_id), manifest.take(path, env_id, NOT_LISTED))
    fp = {"python": "3.11.7", "digest": "x"}
    return envs, BuiltEnv(env_id, "linux-64", path, path / "bin" / "python", "/usr/bin/python3", fp)


def touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def stamps(envs: Environments, env_id: str) -> str:
    return manifest.read(envs.manifest_path(env_id), env_id, files=False)["stamps"]


def test_a_touched_file_is_rehashed_and_its_stamp_kept_when_no_build_holds_the_lock(tmp_path):
    envs, built = built_env(tmp_path)
    before = stamps(envs, built.env_id)
    touch(built.path / "lib" / "six.py")
    with FileLock(str(envs.path(built.env_id)) + ".lock"):  # a build holds it: checked, not written
        assert envs.damage(built, LOCK) == []
        assert stamps(envs, built.env_id) == before
    assert envs.damage(built, LOCK) == []
    assert stamps(envs, built.env_id) != before  # the fast path again from now on


def test_an_edit_is_named_and_a_removed_env_takes_its_manifest_along(tmp_path):
    envs, built = built_env(tmp_path)
    (built.path / "lib" / "six.py").write_text('__version__ = "1.16.9"\n')
    assert envs.damage(built, LOCK) == ["lib/six.py changed (same size, other bytes)"]
    envs.remove(built.env_id)
    assert not envs.manifest_path(built.env_id).exists() and not built.path.exists()


def test_an_envs_bytecode_leaves_its_packages_test_suites_out(tmp_path):
    """compile_site_packages compiles every module with the env's interpreter but those of a ``tests`` folder
    (40% of a matplotlib env's compile time; a step that imports one compiles it in memory)."""
    import sys

    from metaflow_repro.env.build import compile_site_packages

    env = tmp_path / "env"
    site = env / "lib" / "python3.11" / "site-packages"
    for rel in ("pkg/__init__.py", "pkg/core.py", "pkg/tests/__init__.py", "pkg/tests/test_core.py", "top.py"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text("VALUE = 1\n")
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to(sys.executable)
    compile_site_packages(env)
    tag = sys.implementation.cache_tag
    compiled = sorted(str(p.relative_to(site)) for p in site.rglob("*.pyc"))
    assert compiled == [
        f"__pycache__/top.{tag}.pyc",
        f"pkg/__pycache__/__init__.{tag}.pyc",
        f"pkg/__pycache__/core.{tag}.pyc",
    ]
