"""Issue 22 item 14: every archive repro unpacks has one bound, the ``archive-max-bytes`` setting
(REPRO_ARCHIVE_MAX_BYTES): a code package (a run's own, and a replay's from the store), an interpreter
snapshot, an IncludeFile input. Past it the archive is refused naming it, the bound and the setting,
before the member that passes it is written, and nothing of it is left."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from metaflow_repro.adapter.codepackage import extract_tar, gunzip
from metaflow_repro.errors import EXIT_BAD_INPUT, BadInput, IntegrityError
from metaflow_repro.settings import DEFAULT_ARCHIVE_MAX_BYTES, load_settings
from tests.helpers import make_record


def _code_package(path: Path, members: dict[str, int]) -> Path:
    """A gzip'd tar of ``{name: size}`` members of zeros (they pack to almost nothing)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return path


def _claiming(path: Path, name: str, size: int) -> Path:
    """A small gzip'd tar whose one member's header claims ``size`` bytes (its body is cut short)."""
    info = tarfile.TarInfo(name)
    info.size = size
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    path.write_bytes(gzip.compress(header + bytes(4096)))
    return path


def test_a_small_code_package_claiming_a_3_gib_member_is_refused_before_it_is_written(tmp_path):
    package = _claiming(tmp_path / "code.tar.gz", "flow_data.bin", 3 << 30)
    assert package.stat().st_size < 1 << 20
    dest = tmp_path / "code"
    dest.mkdir()
    with pytest.raises(BadInput) as info:
        extract_tar(package, dest, DEFAULT_ARCHIVE_MAX_BYTES, "code package code.tar.gz of F/1")
    message = str(info.value)
    assert "code package code.tar.gz of F/1 (at member 'flow_data.bin') holds more than 2147483648 bytes" in message
    assert "REPRO_ARCHIVE_MAX_BYTES" in message and "archive-max-bytes" in message
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert list(dest.iterdir()) == []


def test_a_replay_refuses_a_code_package_past_the_setting_naming_it_and_leaves_nothing(tmp_path, monkeypatch):
    """The replay's own path (``_recorded_code``, with the settings as the command reads them): 64 MiB
    of zeros packed into ~64 KiB, with the bound set to 8 MiB; files before the one that passes it are
    not left behind either."""
    from metaflow_repro.operations.replay import _recorded_code

    home = tmp_path / "home"
    monkeypatch.setenv("REPRO_HOME", str(home))
    monkeypatch.setenv("REPRO_ARCHIVE_MAX_BYTES", str(8 << 20))
    settings = load_settings(tmp_path)
    assert settings.archive_max_bytes == 8 << 20
    package = _code_package(tmp_path / "p.tar.gz", {"flow.py": 10, "a.bin": 6 << 20, "b.bin": 64 << 20})
    sha = hashlib.sha256(package.read_bytes()).hexdigest()
    stored = settings.home.code_package(sha)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(package.read_bytes())
    record = dataclasses.replace(make_record(), code_sha256=sha, flow_file="flow.py")
    workdir = tmp_path / "replay"
    workdir.mkdir()
    with pytest.raises(BadInput, match=r"code package .* of F/1 \(at member 'b.bin'\) holds more than 8388608 bytes"):
        _recorded_code(settings, record, workdir)
    assert [p.name for p in (workdir / "code").iterdir()] == []
    # under the bound it is unpacked as before
    monkeypatch.setenv("REPRO_ARCHIVE_MAX_BYTES", str(128 << 20))
    (workdir / "code").rmdir()
    code, flow_file = _recorded_code(load_settings(tmp_path), record, workdir)
    assert flow_file == code / "flow.py" and (code / "b.bin").stat().st_size == 64 << 20


def test_an_interpreter_snapshot_is_bounded_by_the_same_setting(tmp_path, monkeypatch):
    from metaflow_repro.model.interpreter import InterpreterSnapshot
    from metaflow_repro.operations.replay import recorded_interpreter
    from metaflow_repro.store import open_store

    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("REPRO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPRO_ARCHIVE_MAX_BYTES", str(8 << 20))
    settings = load_settings(tmp_path)
    tarball = _code_package(tmp_path / "py.tar.gz", {"bin/python3.11": 16 << 20})
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    settings.home.pythons.mkdir(parents=True)
    (settings.home.pythons / f"{sha}.tar.gz").write_bytes(tarball.read_bytes())  # as if pulled already
    prefix = tmp_path / "pyenv" / "versions" / "3.11.7"
    snap = InterpreterSnapshot(sha, tarball.stat().st_size, "3.11.7", str(prefix), "bin/python3.11", "0" * 64)
    record = dataclasses.replace(make_record(), interpreters={"3.11.7": snap})
    store = open_store((tmp_path / "store").as_uri())
    with pytest.raises(IntegrityError, match="it inflates to more than 8388608 bytes"):
        recorded_interpreter(record, "3.11.7", store, settings, "F/1 Python 3.11.7", print)
    assert not prefix.exists() and not (tmp_path / "pyenv" / "versions").exists()


def test_an_included_input_is_inflated_only_up_to_the_bound(tmp_path):
    bomb = gzip.compress(bytes(64 << 20))
    assert len(bomb) < 1 << 20
    with pytest.raises(BadInput, match=r"IncludeFile contents at s3://b/x holds more than 8388608 bytes"):
        gunzip(bomb, 8 << 20, "IncludeFile contents at s3://b/x")
    with pytest.raises(BadInput, match="is not whole gzip data"):
        gunzip(bomb[:-8], 128 << 20, "IncludeFile contents at s3://b/x")
    two = gzip.compress(b"ab") + gzip.compress(b"cd")  # several members, as gzip.decompress reads them
    assert gunzip(two, 4, "x") == b"abcd"
    with pytest.raises(BadInput, match="holds more than 3 bytes"):
        gunzip(two, 3, "x")


@pytest.mark.parametrize(
    "member",
    [("../escaped.py", tarfile.REGTYPE, ""), ("up", tarfile.SYMTYPE, "../..")],
)
def test_a_code_package_member_that_leaves_its_folder_is_still_refused(tmp_path, member):
    name, kind, target = member
    package = tmp_path / "p.tar.gz"
    with tarfile.open(package, "w:gz") as tar:
        ok = tarfile.TarInfo("flow.py")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"#!"))
        bad = tarfile.TarInfo(name)
        bad.type, bad.linkname = kind, target
        tar.addfile(bad, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    dest = tmp_path / "a" / "code"
    dest.mkdir(parents=True)
    with pytest.raises(BadInput, match=r"code package p.tar.gz is unsafe or not a code package: .*nothing from it"):
        extract_tar(package, dest, DEFAULT_ARCHIVE_MAX_BYTES, "code package p.tar.gz")
    assert list(dest.iterdir()) == [] and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["code"]


def test_the_bound_in_pyproject_reaches_metaflow_s_runtime_and_the_read_back(tmp_path):
    """``[tool.repro] archive-max-bytes`` is the bound on the run side too: Metaflow's runtime (which
    extracts the run's code package) and the read-back (IncludeFile contents) read the environment only,
    so the flow's own setting must be handed to them. 4 KiB here: the run is refused naming the setting."""
    from tests.helpers import cli, write_flow

    flow = write_flow(
        tmp_path / "proj",
        """
        from metaflow import FlowSpec, IncludeFile, step

        class BoundFlow(FlowSpec):
            notes = IncludeFile("notes", default="notes.txt")

            @step
            def start(self):
                self.n = len(self.notes)
                self.next(self.end)

            @step
            def end(self):
                pass

        if __name__ == "__main__":
            BoundFlow()
        """,
    )
    (flow.parent / "notes.txt").write_text("x" * (64 << 10))
    with (flow.parent / "pyproject.toml").open("a") as f:
        f.write("archive-max-bytes = 4096\n")
    env = {"REPRO_HOME": str(tmp_path / "home"), "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "ds")}
    result = cli("run", flow, "--store", (tmp_path / "store").as_uri(), cwd=flow.parent, env=env)
    assert result.code != 0, result.text
    assert "archive-max-bytes" in result.text and "4096 bytes" in result.text, result.text[-3000:]
