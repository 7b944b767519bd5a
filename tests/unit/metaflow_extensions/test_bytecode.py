"""plugins/bytecode.py: each .pyc is written whole or not at all, and importlib reads what it writes."""

from __future__ import annotations

import errno
import io
import subprocess
import sys

import pytest

from metaflow_extensions.repro.plugins import bytecode


class _ShortFile(io.BytesIO):
    """A file whose one write stores fewer bytes than it was given, as a write on a full disk can."""

    def __init__(self, path, mode, buffering=-1):
        super().__init__()
        self.path = path

    def write(self, data):
        with open(self.path, "wb") as fh:
            return fh.write(bytes(data)[: len(data) // 2])


def test_a_short_write_is_an_error_and_leaves_no_pyc(tmp_path):
    target = tmp_path / "mod.cpython-311.pyc"
    with pytest.raises(OSError) as caught:
        bytecode.write_whole(str(target), b"x" * 1000, opener=_ShortFile)
    assert caught.value.errno == errno.ENOSPC and "500 of 1000 bytes" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # neither the .pyc nor its temporary name


def test_a_whole_write_is_renamed_into_place(tmp_path):
    target = tmp_path / "mod.cpython-311.pyc"
    bytecode.write_whole(str(target), b"x" * 1000)
    assert target.read_bytes() == b"x" * 1000 and list(tmp_path.iterdir()) == [target]


def test_a_compiled_tree_is_read_by_importlib_and_no_pyc_is_rewritten(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("VALUE = 42\n")
    (pkg / "broken.py").write_text("def (\n")  # fails at import, as it would have
    (pkg / "not.a.module.py").write_text("x = 1\n")
    assert bytecode.compile_tree(str(tmp_path)) == 1
    tag = sys.implementation.cache_tag
    assert sorted(p.name for p in (pkg / "__pycache__").iterdir()) == [f"__init__.{tag}.pyc"]
    assert bytecode.compile_tree(str(tmp_path)) == 0  # kept, not rewritten
    proc = subprocess.run(
        [sys.executable, "-I", "-B", "-v", "-c", "import sys; sys.path.insert(0, '.'); import pkg; print(pkg.VALUE)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout.strip() == "42", proc.stderr[-2000:]
    assert f"matches {pkg / '__init__.py'}" in proc.stderr  # the .pyc was used, not the source compiled


def test_folders_named_to_skip_are_not_compiled_in_any_shard(tmp_path):
    for rel in ("a.py", "pkg/b.py", "pkg/tests/test_b.py", "pkg/tests/data/c.py", "tests/d.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    bytecode.compile_with(sys.executable, [str(tmp_path)], skip=("tests",))  # one process per core, each skipping
    assert sorted(p.parent.parent.name for p in tmp_path.rglob("*.pyc")) == ["pkg", tmp_path.name]
    assert bytecode.compile_tree(str(tmp_path)) == 3  # without skip: the rest


def test_a_failed_compile_with_another_interpreter_is_its_oserror(tmp_path):
    bytecode.compile_with(sys.executable, [str(tmp_path)])  # nothing to do: fine
    (tmp_path / "mod.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").write_text("a file where the folder goes")
    with pytest.raises(OSError) as caught:
        bytecode.compile_with(sys.executable, [str(tmp_path)])
    assert caught.value.errno in (errno.EEXIST, errno.ENOTDIR) and "__pycache__" in str(caught.value)


@pytest.mark.parametrize("minor", ["3.7", "3.13"])
def test_another_interpreter_compiles_its_own_bytecode_that_it_reads(tmp_path, minor):
    from tests.helpers import require_python

    exe = require_python(minor)
    (tmp_path / "mod.py").write_text("VALUE = 7\n")
    bytecode.compile_with(str(exe), [str(tmp_path)])
    [pyc] = (tmp_path / "__pycache__").iterdir()
    assert pyc.name == f"mod.cpython-{minor.replace('.', '')}.pyc"
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import mod; print(mod.VALUE)"
    proc = subprocess.run([str(exe), "-I", "-B", "-v", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.stdout.strip() == "7" and f"matches {tmp_path / 'mod.py'}" in proc.stderr, proc.stderr[-2000:]
