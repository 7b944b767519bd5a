"""Interpreter snapshots: what is packed, and that nothing read back from a store is trusted before it
is proven (sha256 before extraction, members inside the prefix, the restored interpreter's
fingerprint). The end-to-end restore (a container without that Python) is in test_docker_replay.py."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from repro.env import interpreter_snapshot as snapshots
from repro.env import pythons
from repro.env.cache import sha256_file
from repro.errors import BadInput, InfraError, IntegrityError
from repro.model.interpreter import InterpreterSnapshot
from repro.settings import Home
from tests.helpers import require


def _tarball(path: Path, members: list[tuple[str, bytes | str]]) -> Path:
    """A tar.gz: (name, bytes) files, (name, "->target") symlinks."""
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            if isinstance(body, str):
                info.type, info.linkname = tarfile.SYMTYPE, body[2:]
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return path


def _snap(tarball: Path, prefix: Path) -> InterpreterSnapshot:
    return InterpreterSnapshot(
        sha256=sha256_file(tarball),
        size=tarball.stat().st_size,
        python="3.11.7",
        prefix=str(prefix),
        executable="bin/python3.11",
        fingerprint="0" * 64,
    )


@pytest.mark.parametrize(
    "members, why",
    [
        ([("bin/python3.11", b"x"), ("../escaped", b"x")], "leaves the install prefix"),
        ([("bin/python3.11", b"x"), ("/etc/evil", b"x")], "leaves the install prefix"),
        ([("bin/python3", "->/usr/bin/python3")], "leaves the install prefix"),
        ([("lib/up", "->../../../etc/passwd")], "leaves the install prefix"),
    ],
)
def test_a_tarball_whose_members_leave_the_prefix_is_refused_before_extraction(tmp_path, members, why):
    tarball = _tarball(tmp_path / "evil.tar.gz", members)
    prefix = tmp_path / "versions" / "3.11.7"
    with pytest.raises(IntegrityError, match=why):
        snapshots.restore(_snap(tarball, prefix), tarball)
    assert not prefix.exists() and not (tmp_path / "escaped").exists()
    assert [p.name for p in (tmp_path / "versions").iterdir()] == []  # no partial folder left behind


def test_a_tarball_that_is_not_the_recorded_bytes_is_refused_before_extraction(tmp_path):
    tarball = _tarball(tmp_path / "py.tar.gz", [("bin/python3.11", b"#!")])
    snap = _snap(tarball, tmp_path / "versions" / "3.11.7")
    _tarball(tarball, [("bin/python3.11", b"#! tampered")])
    with pytest.raises(IntegrityError, match=f"the record says {snap.sha256}"):
        snapshots.restore(snap, tarball)
    assert not (tmp_path / "versions").exists() or not any((tmp_path / "versions").iterdir())


def test_an_existing_prefix_with_another_interpreter_is_left_alone(tmp_path):
    prefix = tmp_path / "versions" / "3.11.7"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "keep-me").write_text("mine")
    tarball = _tarball(tmp_path / "py.tar.gz", [("bin/python3.11", b"#!")])
    with pytest.raises(InfraError, match="is not the recorded interpreter"):
        snapshots.restore(_snap(tarball, prefix), tarball)
    assert [p.name for p in (prefix / "bin").iterdir()] == ["keep-me"]


@pytest.mark.slow
def test_pack_keeps_the_interpreter_and_its_stdlib_without_site_packages(tmp_path):
    interp = pythons.probe(sys.executable)
    assert interp is not None
    snap, tarball = snapshots.pack(interp, Home(tmp_path / "home"))
    assert snap.sha256 == sha256_file(tarball) and snap.python == interp.version
    assert Path(snap.prefix) == Path(sys.base_prefix) and (Path(snap.prefix) / snap.executable).is_file()
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    stdlib = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}"
    assert snap.executable in names and f"{stdlib}/os.py" in names and f"{stdlib}/json/__init__.py" in names
    assert [n for n in names if "site-packages/" in n] == []  # the folder is there, empty
    assert not [n for n in names if n.startswith(f"{stdlib}/test/") or "/idle_test/" in n or n.endswith(".opt-1.pyc")]
    assert f"{stdlib}/json/__pycache__/__init__.cpython-{sys.version_info[0]}{sys.version_info[1]}.pyc" in names
    again, _ = snapshots.pack(interp, Home(tmp_path / "home"))  # packed once: remembered
    assert again == snap
    # the restored copy of the running interpreter is accepted where it is (same fingerprint)
    assert snapshots.restore(snap, tarball).version == interp.version


def test_a_system_python_is_never_packed_whole(tmp_path):
    system = Path("/usr/bin/python3")
    interp = pythons.probe(str(system)) if system.is_file() else None
    require(interp, "a system python3 (/usr/bin/python3)")
    with pytest.raises(BadInput, match="system's Python"):
        snapshots.pack(interp, Home(tmp_path / "home"))
    assert not (tmp_path / "home" / "pythons").exists() or not any((tmp_path / "home" / "pythons").glob("*.tar.gz"))
