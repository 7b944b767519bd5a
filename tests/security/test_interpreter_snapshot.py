"""Issue 22 item 2: a hostile interpreter snapshot. Its interpreter is run only in the staging folder it
was extracted into (isolated, a minimal environment, a timeout) and must have the recorded fingerprint
there before anything is renamed to the prefix pyenv and later replays look in; on any failure nothing
of it stays. The gzip stream is read to its end: a cut trailer, a wrong CRC or bytes after it are refused.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import tarfile
import time
from pathlib import Path

import pytest

from metaflow_extensions.repro.plugins.batch_bootstrap import Refused, unpack_interpreter
from metaflow_repro.env import interpreter_snapshot as snapshots
from metaflow_repro.env import pythons
from metaflow_repro.env.cache import sha256_file
from metaflow_repro.errors import EXIT_INFRA, IntegrityError
from metaflow_repro.model.interpreter import InterpreterSnapshot, facts_fingerprint
from metaflow_repro.settings import Home


@pytest.fixture
def pyenv_root(tmp_path, monkeypatch) -> Path:
    """A pyenv root of the test's own: prefixes under tmp_path/versions are where interpreters go."""
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    return tmp_path


def _script_tarball(path: Path, script: str) -> Path:
    """A valid interpreter tarball whose ``bin/python3.11`` is a shell script."""
    with tarfile.open(path, "w:gz") as tar:
        for name, body, mode in (("bin/python3.11", script.encode(), 0o755), ("lib/python3.11/os.py", b"", 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), mode
            tar.addfile(info, io.BytesIO(body))
    return path


def _snap(tarball: Path, prefix: Path, fingerprint: str = "0" * 64) -> InterpreterSnapshot:
    return InterpreterSnapshot(
        sha256=sha256_file(tarball),
        size=tarball.stat().st_size,
        python="3.11.7",
        prefix=str(prefix),
        executable="bin/python3.11",
        fingerprint=fingerprint,
    )


def _left(versions: Path) -> list[str]:
    return sorted(p.name for p in versions.iterdir()) if versions.is_dir() else []


def test_a_hostile_interpreter_runs_only_in_staging_with_a_bare_environment_and_nothing_stays(
    pyenv_root, tmp_path, monkeypatch
):
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("REPRO_TEST_SECRET", "do-not-leak")
    script = f'#!/bin/sh\n{{ echo "argv0=$0"; echo "cwd=$(pwd)"; env; }} >> {seen}\necho "not json"\nexit 1\n'
    tarball = _script_tarball(tmp_path / "evil.tar.gz", script)
    prefix = pyenv_root / "versions" / "3.11.7"
    snap = _snap(tarball, prefix)
    with pytest.raises(IntegrityError, match="run in the staging folder, gave no facts") as first:
        snapshots.restore(snap, tarball)
    assert first.value.exit_code == EXIT_INFRA
    assert "nothing was extracted" in str(first.value)
    ran = seen.read_text()
    argv0 = next(line for line in ran.splitlines() if line.startswith("argv0="))
    assert "/versions/.3.11.7.restore-" in argv0 and argv0.endswith("/bin/python3.11"), ran
    assert "REPRO_TEST_SECRET" not in ran and "HOME=" not in ran, ran
    assert not prefix.exists() and _left(pyenv_root / "versions") == []  # not the tree, nor a staging folder
    # a later replay restores again (and refuses again): it never finds a tree it would leave alone and use
    with pytest.raises(IntegrityError, match="gave no facts"):
        snapshots.restore(snap, tarball)
    assert not prefix.exists()


def test_a_hostile_interpreter_that_answers_with_other_facts_leaves_nothing(pyenv_root, tmp_path):
    facts = '{"python": "3.11.7", "implementation": "cpython"}'
    tarball = _script_tarball(tmp_path / "liar.tar.gz", f"#!/bin/sh\necho '{facts}'\n")
    prefix = pyenv_root / "versions" / "3.11.7"
    with pytest.raises(IntegrityError, match="does not have the recorded fingerprint 000000000000"):
        snapshots.restore(_snap(tarball, prefix), tarball)
    assert not prefix.exists() and _left(pyenv_root / "versions") == []


def test_a_hostile_interpreter_that_hangs_is_killed_with_what_it_started(pyenv_root, tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    script = f"#!/bin/sh\nsleep 300 &\necho $! > {pid_file}\nsleep 300\n"
    tarball = _script_tarball(tmp_path / "slow.tar.gz", script)
    prefix = pyenv_root / "versions" / "3.11.7"
    monkeypatch.setattr(pythons, "STAGED_TIMEOUT", 2.0)
    started = time.monotonic()
    with pytest.raises(IntegrityError, match=r"did not answer within 2 s"):
        snapshots.restore(_snap(tarball, prefix), tarball)
    assert time.monotonic() - started < 30
    assert not prefix.exists() and _left(pyenv_root / "versions") == []
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the background process the staged interpreter started still runs"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda data: data[:-8], "the gzip stream is cut short"),  # no CRC, no length
        (lambda data: data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:], "incorrect data check"),
        (lambda data: data + b"trailing bytes", "bytes follow the end of the gzip stream"),
    ],
    ids=["cut-trailer", "wrong-crc", "trailing-bytes"],
)
def test_a_gzip_stream_that_is_not_whole_is_refused_and_leaves_nothing(pyenv_root, tmp_path, damage, why):
    # the record's sha256 is that of the damaged bytes (a hostile or careless record): only the stream says
    tarball = _script_tarball(tmp_path / "py.tar.gz", "#!/bin/sh\nexit 1\n")
    data = damage(tarball.read_bytes())
    import hashlib

    prefix = pyenv_root / "versions" / "3.11.7"
    with pytest.raises(Refused, match=why):
        unpack_interpreter([data], hashlib.sha256(data).hexdigest(), str(prefix), "pythons/x")
    assert not prefix.exists() and not (pyenv_root / "versions").exists()


@pytest.mark.slow
def test_a_real_interpreter_is_proven_in_staging_and_placed(tmp_path, monkeypatch, repro_home):
    """The same path with the interpreter running these tests: packed (once per session's REPRO_HOME),
    restored at another prefix of its version (the fingerprint does not name the prefix), proven in its
    staging folder (its shared library found there), renamed into place and usable."""
    interp = pythons.probe(sys.executable)
    assert interp is not None
    snap, tarball = snapshots.pack(interp, Home(repro_home))  # from where it is installed
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    pyenv_root = tmp_path
    prefix = pyenv_root / "versions" / interp.version
    moved = dataclasses.replace(snap, prefix=str(prefix))  # the same snapshot (zstd) restored elsewhere
    restored = snapshots.restore(moved, tarball)
    assert restored.path == str(prefix / snap.executable) and restored.version == interp.version
    assert facts_fingerprint(restored.facts) == snap.fingerprint
    assert _left(pyenv_root / "versions") == [interp.version]  # no staging folder left
    assert os.access(restored.path, os.X_OK)


def test_a_replay_pulling_a_hostile_snapshot_from_the_store_refuses_it_every_time(tmp_path, monkeypatch):
    """The replay's own path (``recorded_interpreter``: pulled from a store, verified, restored): exit 3
    each time, and never a tree at the prefix that a later replay would call "left alone" and pyenv use."""
    import dataclasses

    from metaflow_repro.operations.replay import recorded_interpreter
    from metaflow_repro.settings import load_settings
    from metaflow_repro.store import layout, open_store
    from tests.unit.model.test_record import make_record

    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("REPRO_HOME", str(tmp_path / "home"))
    tarball = _script_tarball(tmp_path / "evil.tar.gz", f"#!/bin/sh\ntouch {tmp_path / 'ran'}\nexit 1\n")
    prefix = tmp_path / "pyenv" / "versions" / "3.11.7"
    snap = _snap(tarball, prefix)
    store = open_store((tmp_path / "store").as_uri())
    store.put_file(layout.python_snapshot(snap.sha256), tarball)
    record = dataclasses.replace(make_record(), interpreters={"3.11.7": snap})
    settings = load_settings(tmp_path)
    for _ in range(2):
        with pytest.raises(IntegrityError, match="gave no facts") as info:
            recorded_interpreter(record, "3.11.7", store, settings, "MyFlow/1 Python 3.11.7", lambda m: None)
        assert info.value.exit_code == EXIT_INFRA and "left alone" not in str(info.value)
        assert not prefix.exists() and _left(tmp_path / "pyenv" / "versions") == []
    assert (tmp_path / "ran").exists()  # it did run: in the staging folder only
