"""What an interpreter snapshot (the one Batch stages for a pushed run) leaves out."""

from __future__ import annotations

from pathlib import PurePosixPath

from metaflow_repro.env.interpreter_snapshot import _excluded


def test_an_interpreter_snapshot_leaves_out_packages_tests_and_the_static_library():
    # Batch stages the one snapshot a pushed run names (interpreter_snapshot.pack): its exclusions
    site = PurePosixPath("lib/python3.11/site-packages")
    skip = {site, PurePosixPath("lib/python3.11/test")}

    def left_out(rel: str) -> bool:
        return _excluded(PurePosixPath(rel), skip)

    assert left_out("lib/python3.11/site-packages/numpy/__init__.py")
    assert left_out("lib/python3.11/test/test_os.py")
    assert left_out("lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11.a")
    assert left_out("lib/python3.11/__pycache__/os.cpython-311.opt-1.pyc")
    assert left_out("bin/pip3")  # installed there by a package
    assert not left_out("lib/python3.11/config-3.11-x86_64-linux-gnu/Makefile")
    assert not left_out("lib/python3.11/os.py")
    assert not left_out("lib/python3.11/__pycache__/os.cpython-311.pyc")
    assert not left_out("bin/python3.11")
    assert not left_out("lib/libpython3.11.so.1.0")
