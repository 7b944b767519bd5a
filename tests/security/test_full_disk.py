"""Issue 22 item 5: a full disk does not poison later runs. REPRO_HOME on a small tmpfs (root only): a run
on the full file system fails with exit 3 naming it and its free space (not as a failed step), and once
space is freed the next run works, whatever truncated bytecode a full disk left: in ``REPRO_HOME/pycache``
(no longer used) or beside an env's sources (its manifest sees it: the env is rebuilt). Tasks write no
bytecode; what repro compiles ahead is written whole or fails the build (``plugins/bytecode.py``)."""

from __future__ import annotations

import errno
import importlib._bootstrap_external as bootstrap
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require
from tests.security.lostflow import Run

pytestmark = pytest.mark.slow


@pytest.fixture
def small_home(tmp_path):
    """A 300 MB tmpfs to hold REPRO_HOME, unmounted at the end."""
    require(os.geteuid() == 0, "root (to mount a tmpfs for REPRO_HOME)")
    home = tmp_path / "home"
    home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(home)], capture_output=True)
    require(mounted.returncode == 0, f"mount -t tmpfs ({mounted.stderr.decode().strip()})")
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the file system is full; the file."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with open(folder / "filler-tail", "wb", buffering=0) as fh:  # the last bytes too
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def _truncated_pyc(source: Path, prefix: Path | None) -> None:
    """A .pyc for ``source`` in the bytecode cache ``prefix`` (PYTHONPYCACHEPREFIX; None: beside it) as a
    full disk leaves it: a valid header, then the first bytes of the code only."""
    code = compile(source.read_bytes(), str(source), "exec")
    st = source.stat()
    data = bootstrap._code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size)
    saved = sys.pycache_prefix
    sys.pycache_prefix = str(prefix) if prefix else None
    try:
        target = Path(importlib.util.cache_from_source(str(source)))
    finally:
        sys.pycache_prefix = saved
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[:24])


def test_a_full_disk_is_exit_3_naming_it_and_poisons_no_later_run(tmp_path, small_home):
    run = Run(tmp_path)
    run.env["REPRO_HOME"] = str(small_home)
    assert run.start().finish() == 0, run.text

    filler = _fill(small_home)
    full = Run(tmp_path)
    full.env["REPRO_HOME"] = str(small_home)
    code = full.start().finish()
    text = "".join(full.output)
    assert code == 3, text[-3000:]
    assert "No space left on device" in text and f"the file system at {small_home}" in text, text[-3000:]
    assert "MB free" in text and "AWS Batch" not in text and "Traceback" not in text, text[-3000:]

    filler.unlink()
    (small_home / "filler-tail").unlink()
    # what a full disk left in the bytecode cache: truncated .pyc files of Metaflow's modules (from the
    # code package tasks import it from) and of the step's library
    sources = [
        *small_home.glob("code/*/.mf_code/metaflow/*.py"),
        *small_home.glob("envs/*/lib/python3*/site-packages/requests/*.py"),
    ]
    assert len(sources) > 20
    for source in sources:
        _truncated_pyc(source, small_home / "pycache")
    # and beside the env's sources, where tasks read the bytecode its build compiled
    for source in small_home.glob("envs/*/lib/python3*/site-packages/requests/*.py"):
        _truncated_pyc(source, None)
    again = Run(tmp_path)
    again.env["REPRO_HOME"] = str(small_home)
    assert again.start().finish() == 0, again.text
    assert "marshal data" not in "".join(again.output)
    assert "is damaged" in "".join(again.output) and "requests/__pycache__" in "".join(again.output)


@pytest.fixture
def full_fs(tmp_path):
    """A 1 MB tmpfs, filled up."""
    require(os.geteuid() == 0, "root (to mount a tmpfs)")
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    require(mounted.returncode == 0, f"mount -t tmpfs ({mounted.stderr.decode().strip()})")
    try:
        _fill(folder)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.timeout(60)
def test_enospc_names_the_file_system_and_what_the_write_needed(full_fs):
    from metaflow_repro.errors import EXIT_INFRA, InfraError, from_os_error
    from metaflow_repro.fsutil import atomic_write
    from metaflow_repro.operations.run import check_space
    from metaflow_repro.settings import Home, Settings

    target = full_fs / "record.json"
    with pytest.raises(OSError) as caught:
        atomic_write(target, "x" * 5000)
    error = from_os_error(caught.value)
    assert error.exit_code == EXIT_INFRA and str(target) in str(error) and "writing 5000 bytes" in str(error)
    assert f"the file system at {full_fs} has 0.0 MB free of 1 MB" in str(error)
    assert not list(full_fs.glob(".record.json.*")) and not target.exists()  # nothing half written

    settings = Settings(home=Home(full_fs), store="")
    # REPRO_HOME is full, but a step that failed for its own reason is a failed step: root writes into
    # reserved blocks, so free space alone is no evidence (issue 22 item 10)
    check_space(settings, "run F/1 failed", "ZeroDivisionError: division by zero")
    check_space(settings, "run F/1 failed")
    said = "OSError: [Errno 28] No space left on device: '/x/y'"  # what the failed step said
    with pytest.raises(InfraError, match=f"run F/1 failed: no space left on device; the file system at {full_fs}"):
        check_space(settings, "run F/1 failed", said)


@pytest.mark.timeout(60)
def test_bytecode_compiled_on_a_full_disk_fails_and_leaves_no_pyc(full_fs):
    from metaflow_extensions.repro.plugins import bytecode

    (full_fs / "filler").unlink()
    (full_fs / "mod.py").write_text("X = %r\n" % ("x" * 3000))  # bigger than what is left once refilled
    _fill(full_fs)
    with pytest.raises(OSError) as caught:
        bytecode.compile_with(sys.executable, [str(full_fs)])
    assert caught.value.errno == errno.ENOSPC and "__pycache__" in str(caught.value.filename), caught.value
    assert not [p for p in full_fs.rglob("*") if ".pyc" in p.name]  # no .pyc, whole or not, nor its temporary
