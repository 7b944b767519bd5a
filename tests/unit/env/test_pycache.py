"""An env's bytecode packed once as a deterministic object, and restored into another build of the env:
every member checked, each header's time rewritten so that Python uses the restored ``.pyc``."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import zstandard

from metaflow_extensions.repro.plugins import bytecode
from metaflow_repro.env import pycache
from metaflow_repro.settings import Home

PY = "%d.%d.%d" % sys.version_info[:3]
SITE = "lib/python%d.%d/site-packages" % sys.version_info[:2]
TAG = sys.implementation.cache_tag
SOURCES = {"pkg/__init__.py": "X = 1\n", "pkg/mod.py": "def f():\n    return 42\n", "top.py": "import pkg.mod\n"}


def make_env(root, when, compiled=True):
    """A built env's site-packages: sources stamped ``when`` (as uv stamps them), compiled beside them."""
    site = root / SITE
    for rel, text in SOURCES.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (when, when))
    if compiled:
        bytecode.compile_tree(str(site))
    return root


def pycs(env):
    return sorted(p for p in env.rglob("*.pyc"))


def test_two_packs_of_the_same_env_are_the_same_object_and_the_second_packs_nothing(tmp_path):
    home = Home(tmp_path / "home")
    one = make_env(tmp_path / "env", 1_600_000_000)
    assert len(pycs(one)) == 3
    first = pycache.pack_bytes(one)
    shutil.rmtree(one)
    two = make_env(tmp_path / "env", 1_700_000_000)  # the env rebuilt (its path is its id's): other stamps
    assert pycache.pack_bytes(two) == first
    sha = pycache.pack(one, "e" * 64, home)
    obj = pycache.object_path(home, sha)
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == sha
    os.utime(obj, (1, 1))
    assert pycache.pack(two, "e" * 64, home) == sha and obj.stat().st_mtime == 1  # known: not packed again
    assert pycache.pack(make_env(tmp_path / "none", 1, compiled=False), "f" * 64, home) == ""
    with tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompress(obj.read_bytes(), 1 << 24))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.type) for m in members} == {(0, 0, 0, tarfile.REGTYPE)}
    assert members[0].name == f"{SITE}/__pycache__/top.{TAG}.pyc"


def test_a_restored_pyc_is_the_packed_one_stamped_with_its_source_and_python_uses_it(tmp_path):
    home = Home(tmp_path / "home")
    sha = pycache.pack(make_env(tmp_path / "built", 1_600_000_000), "e" * 64, home)
    env = make_env(tmp_path / "replayed", 1_700_000_123, compiled=False)
    assert pycache.restore(env, pycache.object_path(home, sha), sha, PY, "here") == 3
    for pyc in pycs(env):
        source = pyc.parent.parent / (pyc.name.split(".")[0] + ".py")
        data = pyc.read_bytes()
        assert int.from_bytes(data[8:12], "little") == 1_700_000_123
        assert data[12:] == (tmp_path / "built" / pyc.relative_to(env)).read_bytes()[12:]
        assert int.from_bytes(data[12:16], "little") == source.stat().st_size
    proc = subprocess.run(
        [sys.executable, "-v", "-c", "import top"],
        env={**os.environ, "PYTHONPATH": str(env / SITE), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    used = [line for line in proc.stderr.splitlines() if "code object from" in line and str(env) in line]
    assert len(used) == 3, proc.stderr[-3000:]  # every module read from its restored .pyc, none recompiled
    assert "stale" not in proc.stderr


def _object(tmp_path, members):
    """A bytecode object holding ``members`` (name -> bytes, or a TarInfo): (path, sha256)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = zstandard.ZstdCompressor().compress(raw.getvalue())
    path = tmp_path / "object.tar.zst"
    path.write_bytes(blob)
    return path, hashlib.sha256(blob).hexdigest()


def _pyc(size):
    return bytes(4) + bytes(4) + bytes(4) + size.to_bytes(4, "little") + b"code"


def _link(name):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


MOD = f"{SITE}/pkg/__pycache__/mod.{TAG}.pyc"
MOD_SIZE = len(SOURCES["pkg/mod.py"])


@pytest.mark.parametrize(
    "name, data, problem",
    [
        (MOD, _link(MOD), "not a regular file"),
        (f"{SITE}/pkg/__pycache__/../__pycache__/mod.{TAG}.pyc", _pyc(MOD_SIZE), "plain relative path"),
        (f"/{MOD}", _pyc(MOD_SIZE), "plain relative path"),
        (f"lib/python3.1/other/pkg/__pycache__/mod.{TAG}.pyc", _pyc(MOD_SIZE), "under its site-packages"),
        (f"{SITE}/pkg/mod.{TAG}.pyc", _pyc(MOD_SIZE), "in a __pycache__ folder"),
        (f"{SITE}/pkg/__pycache__/gone.{TAG}.pyc", _pyc(MOD_SIZE), "has no source"),
        (f"{SITE}/pkg/__pycache__/mod.cpython-27.pyc", _pyc(MOD_SIZE), "this env's Python"),
        (f"{SITE}/pkg/__pycache__/mod.{TAG}.pyc", _pyc(MOD_SIZE + 1), "its size differs"),
        (f"{SITE}/pkg/__pycache__/mod.{TAG}.pyc", b"\0\0\0\0\1\0\0\0" + bytes(8), "timestamp-based"),
    ],
)
def test_a_hostile_member_refuses_the_whole_object_and_nothing_is_written(tmp_path, name, data, problem):
    env = make_env(tmp_path / "env", 1_700_000_000, compiled=False)
    good = f"{SITE}/pkg/__pycache__/__init__.{TAG}.pyc"
    path, sha = _object(tmp_path, {good: _pyc(len(SOURCES["pkg/__init__.py"])), name: data})
    with pytest.raises(pycache.BadBytecode, match=problem) as err:
        pycache.restore(env, path, sha, PY, "flow F")
    assert err.value.exit_code == 2 and "flow F" in str(err.value)
    assert pycs(env) == [] and not any(p.name.endswith(".tmp") for p in env.rglob("*"))


def test_an_object_that_is_not_its_sha256_is_corrupt_and_not_used(tmp_path):
    env = make_env(tmp_path / "env", 1_700_000_000, compiled=False)
    path, sha = _object(tmp_path, {MOD: _pyc(MOD_SIZE)})
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(pycache.CorruptBytecode, match=sha) as err:
        pycache.restore(env, path, sha, PY, "flow F")
    assert err.value.exit_code == 3 and pycs(env) == []


@pytest.mark.parametrize("link", ["pkg", "pkg/__pycache__", "pkg/mod.py"])
def test_a_link_in_the_built_env_is_never_written_through(tmp_path, link):
    """A folder leading out of the env, a ``__pycache__`` that is a link, a source that is one: refused."""
    outside = make_env(tmp_path / "outside", 1_700_000_000, compiled=False) / SITE / link
    env = make_env(tmp_path / "env", 1_700_000_000, compiled=False)
    target = env / SITE / link
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    if not outside.exists():
        outside.mkdir()
    target.symlink_to(outside)
    path, sha = _object(tmp_path, {MOD: _pyc(MOD_SIZE)})
    with pytest.raises(pycache.BadBytecode, match="symbolic link|not a plain folder|has no source"):
        pycache.restore(env, path, sha, PY, "flow F")
    assert list((tmp_path / "outside").rglob("*.pyc")) == []


def test_a_pack_leaves_out_what_a_restore_would_refuse_so_its_own_object_always_restores(tmp_path):
    """A ``.pyc`` a wheel ships for another Python, one whose source is gone, one of another source: left
    out (the wheel's own come back with the wheel), so the env's object restores into its rebuild."""
    env = make_env(tmp_path / "env", 1_600_000_000)
    cache = env / SITE / "pkg" / "__pycache__"
    (cache / "mod.cpython-27.pyc").write_bytes(_pyc(MOD_SIZE))
    (cache / f"gone.{TAG}.pyc").write_bytes(_pyc(1))
    (cache / f"__init__.{TAG}.opt-1.pyc").write_bytes(_pyc(99))
    home = Home(tmp_path / "home")
    sha = pycache.pack(env, "e" * 64, home)
    rebuilt = make_env(tmp_path / "rebuilt", 1_700_000_000, compiled=False)
    assert pycache.restore(rebuilt, pycache.object_path(home, sha), sha, PY, "here") == 3
