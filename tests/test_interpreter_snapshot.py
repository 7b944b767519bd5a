"""Interpreter snapshots: what is packed, and that nothing read back from a store is trusted before it
is proven (sha256 before extraction, members inside the prefix, the restored interpreter's
fingerprint). The end-to-end restore (a container without that Python) is in test_docker_replay.py."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from metaflow_extensions.repro.plugins.batch_bootstrap import unpack_interpreter
from metaflow_repro.env import interpreter_snapshot as snapshots
from metaflow_repro.env import pythons
from metaflow_repro.env.cache import sha256_file
from metaflow_repro.errors import BadInput, InfraError, IntegrityError
from metaflow_repro.model.interpreter import InterpreterSnapshot
from metaflow_repro.settings import Home
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
def test_a_tarball_whose_members_leave_the_prefix_is_refused_before_extraction(pyenv_root, tmp_path, members, why):
    tarball = _tarball(tmp_path / "evil.tar.gz", members)
    prefix = tmp_path / "versions" / "3.11.7"
    with pytest.raises(IntegrityError, match=why):
        snapshots.restore(_snap(tarball, prefix), tarball)
    assert not prefix.exists() and not (tmp_path / "escaped").exists()
    assert not (tmp_path / "versions").exists()  # no partial folder left behind, nor the folder made for it


def _zst(path: Path, members: list[tuple[str, bytes | str]]) -> Path:
    """The same tar, zstd'd (what snapshots are now)."""
    import gzip

    raw = gzip.decompress(_tarball(path.with_suffix(".gz"), members).read_bytes())
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    return path


def _zsnap(tarball: Path, prefix: Path) -> InterpreterSnapshot:
    return replace(_snap(tarball, prefix), compression="zstd")


@pytest.mark.parametrize("streamed", [False, True])
def test_a_zstd_snapshot_is_checked_as_it_streams_and_refused_leaving_nothing(pyenv_root, tmp_path, streamed):
    """A zstd snapshot is extracted while it downloads: every member is checked on the way, and its
    sha256 is checked before anything is renamed into place (or run): a flipped byte, bytes appended
    after the frame, a member leaving the prefix, a bomb: refused, nothing left."""
    prefix = tmp_path / "versions" / "3.11.7"
    good = _zst(tmp_path / "py.tar.zst", [("bin/python3.11", b"#!" * 1000), ("lib/x.py", b"x = 1\n" * 500)])
    snap = _zsnap(good, prefix)
    data = good.read_bytes()

    def source(body: bytes):
        if streamed:  # as the store's chunks() yields them
            return iter([body[i : i + 97] for i in range(0, len(body), 97)])
        path = tmp_path / "local.tar.zst"
        path.write_bytes(body)
        return path

    flipped = data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]
    other = zstandard.ZstdCompressor(level=1).compress(zstandard.ZstdDecompressor().decompress(data))  # same tar
    for body, why in (
        (flipped, "not a usable zstd"),
        (data + b"\0", f"the record says {snap.sha256}|not a usable zstd"),
        (other, f"the record says {snap.sha256}"),
    ):
        with pytest.raises(IntegrityError, match=why):
            snapshots.restore(snap, source(body))
        assert not prefix.exists() and not (tmp_path / "versions").exists()
    evil = _zst(tmp_path / "evil.tar.zst", [("bin/python3.11", b"x"), ("../escaped", b"x")])
    with pytest.raises(IntegrityError, match="leaves the install prefix"):
        snapshots.restore(_zsnap(evil, prefix), source(evil.read_bytes()))
    bomb = tmp_path / "bomb.tar.zst"
    bomb.write_bytes(zstandard.ZstdCompressor().compress(b"\0" * (40 << 20)))
    with pytest.raises(IntegrityError, match="inflates to more than"):
        snapshots.restore(_zsnap(bomb, prefix), source(bomb.read_bytes()), max_bytes=8 << 20)
    assert not (tmp_path / "versions").exists() and not (tmp_path / "escaped").exists()


def test_a_tarball_that_is_not_the_recorded_bytes_is_refused_before_extraction(pyenv_root, tmp_path):
    tarball = _tarball(tmp_path / "py.tar.gz", [("bin/python3.11", b"#!")])
    snap = _snap(tarball, tmp_path / "versions" / "3.11.7")
    _tarball(tarball, [("bin/python3.11", b"#! tampered")])
    with pytest.raises(IntegrityError, match=f"the record says {snap.sha256}"):
        snapshots.restore(snap, tarball)
    assert not (tmp_path / "versions").exists() or not any((tmp_path / "versions").iterdir())


def test_an_existing_prefix_with_another_interpreter_is_left_alone(pyenv_root, tmp_path):
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
    assert snap.compression == "zstd" and tarball.name == f"{snap.sha256}.tar.zst"
    with (
        zstandard.ZstdDecompressor().stream_reader(tarball.open("rb")) as raw,
        tarfile.open(fileobj=raw, mode="r|") as tar,
    ):
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
    assert not (tmp_path / "home" / "pythons").exists() or not any((tmp_path / "home" / "pythons").glob("*.tar.*"))


@pytest.fixture
def pyenv_root(tmp_path, monkeypatch) -> Path:
    """A pyenv root of the test's own: prefixes under tmp_path/versions are where interpreters go."""
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    "prefix, executable, why",
    [
        ("/etc/cron.d/repro", "bin/python3.11", "not an install folder named for Python 3.11.7"),
        ("{root}/x", "bin/python3.11", "not an install folder named for Python 3.11.7"),
        ("{root}/3.11.7", "bin/python3.11", "not inside an interpreter folder"),
        ("{root}/versions/sub/3.11.7", "bin/python3.11", "not inside an interpreter folder"),
        ("{root}/versions/3.11.7", "bin/sh", "executable 'bin/sh'"),
        ("{root}/versions/3.11.7", "bin/../../../../bin/sh", "executable"),
    ],
)
def test_a_record_whose_interpreter_lives_elsewhere_is_refused_before_anything_is_created(
    repro_home, pyenv_root, tmp_path, prefix, executable, why
):
    import dataclasses

    from metaflow_repro.operations.replay import recorded_interpreter
    from metaflow_repro.settings import load_settings
    from metaflow_repro.store import open_store
    from tests.helpers import make_record

    prefix = prefix.format(root=pyenv_root)
    snap = InterpreterSnapshot("a" * 64, 10, "3.11.7", prefix, executable, "b" * 64)
    record = dataclasses.replace(make_record(), interpreters={"3.11.7": snap})
    store = open_store((tmp_path / "store").as_uri())
    parent = Path(prefix).parent
    before = (
        {p.name for p in parent.iterdir() if p.name.startswith(f".{Path(prefix).name}.restore-")}
        if parent.is_dir()
        else None
    )

    def packed():  # the session's REPRO_HOME: other tests packed interpreters there already
        return set((repro_home / "pythons").iterdir()) if (repro_home / "pythons").is_dir() else set()

    packed_before = packed()
    with pytest.raises(BadInput, match=why) as info:
        recorded_interpreter(record, "3.11.7", store, load_settings(tmp_path), "replay", print)
    assert "interpreters.3.11.7" in str(info.value)
    assert not Path(prefix).exists()  # nor its folder, nor a hidden restore folder beside it
    assert (
        {p.name for p in parent.iterdir() if p.name.startswith(f".{Path(prefix).name}.restore-")}
        if parent.is_dir()
        else None
    ) == before
    assert packed() == packed_before  # nothing fetched
    with pytest.raises(BadInput, match=why):  # restore refuses it too, whoever calls it
        snapshots.restore(snap, tmp_path / "never-read.tar.gz")


def test_interpreters_under_pyenv_and_uv_roots_are_accepted(pyenv_root, tmp_path, monkeypatch):
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "uv"))
    for prefix in (pyenv_root / "versions" / "3.11.7", tmp_path / "uv" / "cpython-3.11.7-linux-x86_64-gnu"):
        snap = InterpreterSnapshot("a" * 64, 10, "3.11.7", str(prefix), "bin/python3.11", "b" * 64)
        assert snapshots.location_problem(snap) == ""


def test_hard_linked_files_are_packed_as_files_and_restored(pyenv_root, tmp_path):
    source = tmp_path / "source"
    (source / "lib").mkdir(parents=True)
    (source / "lib" / "a.so").write_bytes(b"\x7fELF shared")
    (source / "lib" / "b.so").hardlink_to(source / "lib" / "a.so")
    tarball = tmp_path / "py.tar.gz"
    snapshots._write_tar(source, tarball, set())
    with tarfile.open(tarball) as tar:
        assert {m.name: m.isfile() for m in tar.getmembers() if m.name.endswith(".so")} == {
            "lib/a.so": True,
            "lib/b.so": True,
        }
    prefix = pyenv_root / "versions" / "3.11.7"
    with pytest.raises(IntegrityError, match="gave no facts"):  # no interpreter in it: nothing stays
        snapshots.restore(_snap(tarball, prefix), tarball)
    assert not prefix.exists()
    unpack_interpreter([tarball.read_bytes()], sha256_file(tarball), str(prefix), "pythons/x")
    for name in ("a.so", "b.so"):
        path = prefix / "lib" / name
        assert path.is_file() and not path.is_symlink() and path.read_bytes() == b"\x7fELF shared"


def test_a_hard_link_entry_in_a_tarball_is_still_refused(pyenv_root, tmp_path):
    tarball = tmp_path / "py.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("lib/a.so")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo("lib/b.so")
        link.type, link.linkname = tarfile.LNKTYPE, "lib/a.so"
        tar.addfile(link)
    with pytest.raises(IntegrityError, match="not a file, folder or link"):
        snapshots.restore(_snap(tarball, pyenv_root / "versions" / "3.11.7"), tarball)
    assert not (pyenv_root / "versions" / "3.11.7").exists()


def test_replay_of_a_record_placing_its_interpreter_in_etc_is_bad_input_before_anything_is_pulled(repro_home, tmp_path):
    import dataclasses

    from tests.helpers import cli
    from tests.unit.model.test_record import make_record  # a record that decodes

    snap = InterpreterSnapshot("a" * 64, 10, "3.11.7", "/etc/cron.d/3.11.7", "bin/python3.11", "b" * 64)
    record_file = tmp_path / "record.json"
    record_file.write_text(dataclasses.replace(make_record(), interpreters={"3.11.7": snap}).to_json())
    (tmp_path / "store").mkdir()
    home = tmp_path / "home"  # a REPRO_HOME of its own: nothing may be pulled into it
    home.mkdir()
    r = cli("replay", record_file, "--store", (tmp_path / "store").as_uri(), env={"REPRO_HOME": str(home)}, timeout=120)
    assert r.code == 2, r.text
    assert "interpreters.3.11.7: prefix '/etc/cron.d/3.11.7' is not inside an interpreter folder" in r.text
    assert not Path("/etc/cron.d/3.11.7").exists()
    assert not (home / "pythons").exists() and not (home / "packages").exists()


def _tarball_with(path: Path, members: list[tarfile.TarInfo], bodies: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            body = bodies.get(info.name)
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return path


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def test_a_chain_of_links_that_ends_outside_the_prefix_is_refused(pyenv_root, tmp_path):
    # each link alone looks inside (x -> ., sub -> x, up -> sub/.. normalises to "."), but up resolves to
    # the prefix's parent: only the walk of the extracted tree, before it is renamed into place, sees it
    tarball = _tarball_with(tmp_path / "chain.tar.gz", [_link("x", "."), _link("sub", "x"), _link("up", "sub/..")], {})
    prefix = pyenv_root / "versions" / "3.11.7"
    with pytest.raises(IntegrityError, match="link 'up' -> 'sub/..' leaves the install prefix"):
        snapshots.restore(_snap(tarball, prefix), tarball)
    assert not (pyenv_root / "versions").exists()  # nor the folder made for it


def test_restored_files_lose_setuid_and_group_write(pyenv_root, tmp_path):
    info = tarfile.TarInfo("bin/python3.11")
    info.mode = 0o6775
    tarball = _tarball_with(tmp_path / "suid.tar.gz", [info], {"bin/python3.11": b"#!"})
    prefix = pyenv_root / "versions" / "3.11.7"
    unpack_interpreter([tarball.read_bytes()], sha256_file(tarball), str(prefix), "pythons/x")
    assert (prefix / "bin" / "python3.11").stat().st_mode & 0o7777 == 0o755


def test_a_streamed_tarball_that_is_not_the_recorded_bytes_leaves_nothing(pyenv_root, tmp_path):
    # the Batch bootstrap extracts while it downloads: the digest is known only at the end
    from metaflow_extensions.repro.plugins.batch_bootstrap import Refused, unpack_interpreter

    good = _tarball(tmp_path / "good.tar.gz", [("bin/python3.11", b"#!")])
    bad = _tarball(tmp_path / "bad.tar.gz", [("bin/python3.11", b"#! tampered"), ("lib/more", b"x" * 5000)])
    prefix = pyenv_root / "versions" / "3.11.7"
    data = bad.read_bytes()
    chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
    with pytest.raises(Refused, match=f"pythons/x has sha256 .*, the record says {sha256_file(good)}"):
        unpack_interpreter(chunks, sha256_file(good), str(prefix), "pythons/x")
    assert not (pyenv_root / "versions").exists()  # nor the folder made for it
    unpack_interpreter([good.read_bytes()], sha256_file(good), str(prefix), "pythons/x")
    assert (prefix / "bin" / "python3.11").read_bytes() == b"#!"


def test_bytes_that_are_not_a_gzip_tarball_are_refused_naming_the_object(pyenv_root, tmp_path):
    from metaflow_extensions.repro.plugins.batch_bootstrap import Refused, unpack_interpreter

    junk = b"not a tarball at all" * 100
    prefix = pyenv_root / "versions" / "3.11.7"
    import hashlib

    with pytest.raises(Refused, match="pythons/x: not a usable interpreter tarball"):
        unpack_interpreter([junk], hashlib.sha256(junk).hexdigest(), str(prefix), "pythons/x")
    assert not (pyenv_root / "versions").exists()  # nor the folder made for it


def test_a_gzip_bomb_is_refused_before_it_inflates_past_the_cap(pyenv_root, tmp_path):
    # 64 MiB of zeros packs to ~64 KiB: a store object that would fill the job's disk before the sha check
    from metaflow_extensions.repro.plugins.batch_bootstrap import Refused, _Tee, unpack_interpreter

    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        info = tarfile.TarInfo("bin/python3.11")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    prefix = pyenv_root / "versions" / "3.11.7"
    data = bomb.read_bytes()
    assert len(data) < 1 << 20
    with pytest.raises(
        Refused, match=r"pythons/x: not a usable interpreter tarball \(it inflates to more than 8388608"
    ):
        unpack_interpreter([data], sha256_file(bomb), str(prefix), "pythons/x", max_inflated=8 << 20)
    assert not (pyenv_root / "versions").exists()
    # and no single step inflates more than a chunk, whatever the ratio (the cap alone would not bound memory)

    class Sink:
        def write(self, data):
            pass

        def close(self):
            pass

    tee = _Tee([data], Sink())
    sizes = []
    while not tee.eof:
        sizes.append(len(tee._more()))
    tee.close()
    assert sum(sizes) >= 64 << 20
    assert max(sizes) <= 1 << 20


def _as_nobody(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as user nobody when we are root (root ignores folder modes, so a cleanup that only
    works as root would pass here and fail in a job running as another user)."""
    import os
    import shutil

    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        require(False, "setpriv (util-linux), to test as a non-root user")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]


def test_a_refused_tarball_with_read_only_folders_leaves_nothing_as_a_non_root_user(tmp_path):
    import os
    import shutil
    import subprocess
    import tempfile

    from metaflow_extensions.repro.plugins import batch_bootstrap

    world = Path(tempfile.mkdtemp(prefix="repro-nobody-"))  # tmp_path's parents are root's alone
    try:
        os.chmod(world, 0o777)
        tarball = world / "ro.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            folder = tarfile.TarInfo("lib/python3.11")
            folder.type, folder.mode = tarfile.DIRTYPE, 0o555
            tar.addfile(folder)
            body = tarfile.TarInfo("lib/python3.11/os.py")
            body.size, body.mode = 2, 0o444
            tar.addfile(body, io.BytesIO(b"#!"))
        script = world / "batch_bootstrap.py"
        shutil.copy(batch_bootstrap.__file__, script)
        prefix = world / "pyenv" / "versions" / "3.11.7"  # pyenv/ and versions/ are made by this call
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import batch_bootstrap as b\n"
            "data = open(sys.argv[2], 'rb').read()\n"
            "try:\n"
            "    b.unpack_interpreter([data], '0' * 64, sys.argv[3], 'pythons/x')\n"
            "except b.Refused as exc:\n"
            "    print(exc)\n"
        )
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        proc = subprocess.run(
            _as_nobody([python, "-B", "-c", code, str(world), str(tarball), str(prefix)]),
            capture_output=True,
            text=True,
        )
        assert "nothing was extracted" in proc.stdout, proc.stdout + proc.stderr
        # neither the staging folder (read-only inside) nor the pyenv/versions folders made for it stay
        assert sorted(p.name for p in world.iterdir()) == ["batch_bootstrap.py", "ro.tar.gz"], list(world.rglob("*"))
    finally:
        shutil.rmtree(world, ignore_errors=True)


def test_a_prefix_another_process_restored_meanwhile_is_kept_and_the_copy_removed(pyenv_root, tmp_path):
    from metaflow_extensions.repro.plugins.batch_bootstrap import unpack_interpreter

    tarball = _tarball(tmp_path / "py.tar.gz", [("bin/python3.11", b"#! mine")])
    prefix = pyenv_root / "versions" / "3.11.7"
    data = tarball.read_bytes()

    def racing():  # the other restore finishes while this one streams
        yield data[:100]
        (prefix / "bin").mkdir(parents=True)
        (prefix / "bin" / "python3.11").write_bytes(b"#! theirs")
        yield data[100:]

    assert unpack_interpreter(racing(), sha256_file(tarball), str(prefix), "pythons/x") is False
    assert (prefix / "bin" / "python3.11").read_bytes() == b"#! theirs"
    assert [p.name for p in (pyenv_root / "versions").iterdir()] == ["3.11.7"]  # no staging folder left


class _FlakyS3:
    """boto3's S3 client as the job's restore uses it (get_object, a streamed body), whose first
    ``breaks`` streams fail midway the way botocore reports a connection reset while reading."""

    def __init__(self, data: bytes, breaks: int):
        self.data, self.breaks, self.calls = data, breaks, 0

    def get_object(self, Bucket, Key):
        import botocore.exceptions

        self.calls += 1
        data, broken = self.data, self.calls <= self.breaks

        class Body:
            def iter_chunks(self, size):
                yield data[:100]
                if broken:
                    raise botocore.exceptions.ResponseStreamingError(error="connection reset by peer")
                yield data[100:]

            def close(self):
                pass

        return {"Body": Body()}


def _store(client) -> object:
    """The job's store (batch_bootstrap._Store) of s3://bucket/p, talking to ``client``."""
    from metaflow_extensions.repro.plugins.batch_bootstrap import _Store

    store = _Store("s3://bucket/p")
    store._client = client
    return store


def _job_snap(tarball: Path, prefix: Path) -> dict:
    return {
        "prefix": str(prefix),
        "executable": "bin/python3.11",
        "key": "pythons/x.tar.gz",
        "sha256": sha256_file(tarball),
    }


def test_a_stream_that_breaks_midway_is_fetched_once_more_and_then_named(pyenv_root, tmp_path):
    from metaflow_extensions.repro.plugins.batch_bootstrap import Failed, _restore_interpreter

    tarball = _tarball(tmp_path / "py.tar.gz", [("bin/python3.11", b"#!"), ("lib/x", b"x" * 5000)])
    prefix = pyenv_root / "versions" / "3.11.7"
    s3 = _FlakyS3(tarball.read_bytes(), breaks=1)
    assert _restore_interpreter(_store(s3), _job_snap(tarball, prefix)) == str(prefix / "bin" / "python3.11")
    assert s3.calls == 2 and (prefix / "lib" / "x").read_bytes() == b"x" * 5000
    other = pyenv_root / "versions" / "3.11.8"
    with pytest.raises(Failed, match="cannot fetch store object pythons/x.tar.gz from s3://bucket: .*connection reset"):
        _restore_interpreter(_store(_FlakyS3(tarball.read_bytes(), breaks=2)), _job_snap(tarball, other))
    assert not other.exists() and [p.name for p in (pyenv_root / "versions").iterdir()] == ["3.11.7"]


def test_a_restore_that_fails_for_another_reason_says_what_it_is(pyenv_root, tmp_path, monkeypatch):
    from metaflow_extensions.repro.plugins.batch_bootstrap import Failed, _restore_interpreter

    tarball = _tarball(tmp_path / "py.tar.gz", [("bin/python3.11", b"#!")])
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no tar
    with pytest.raises(Failed) as failed:
        _restore_interpreter(
            _store(_FlakyS3(tarball.read_bytes(), breaks=0)), _job_snap(tarball, pyenv_root / "versions" / "3.11.7")
        )
    assert "cannot restore the interpreter at" in str(failed.value) and "'tar'" in str(failed.value)
    assert "cannot fetch" not in str(failed.value)


def _cached_snap(tarball: Path, prefix: Path, tmp_path: Path) -> dict:
    """The manifest's interpreter entry with the files the host lists for the snapshot."""
    from metaflow_repro.executors.batch import snapshot_files
    from metaflow_repro.settings import Home

    snap = _job_snap(tarball, prefix)
    home = Home(tmp_path / "host-home")
    home.pythons.mkdir(parents=True)
    return {**snap, "files": snapshot_files(tarball, snap["sha256"], home)}


def test_the_instance_cache_restores_an_interpreter_once_and_links_later_jobs_to_it(pyenv_root, tmp_path):
    """A Batch instance's jobs share the cache: the first restores the verified snapshot there (not at the
    prefix), every later job (a fresh container: no prefix) checks it and links the prefix to it, without
    the store."""
    from metaflow_extensions.repro.plugins.batch_bootstrap import _restore_interpreter

    tarball = _tarball(tmp_path / "py.tar.gz", [("bin/python3.11", b"#!"), ("lib/x", b"x" * 5000)])
    prefix = pyenv_root / "versions" / "3.11.7"
    cache = tmp_path / "instance-cache"
    s3 = _FlakyS3(tarball.read_bytes(), breaks=0)
    snap = _cached_snap(tarball, prefix, tmp_path)
    assert set(snap["files"]) == {"bin", "bin/python3.11", "lib", "lib/x"}  # folders GNU tar makes, too
    assert _restore_interpreter(_store(s3), snap, str(cache)) == str(prefix / "bin" / "python3.11")
    cached = cache / "pythons" / snap["sha256"] / "1" / "prefix"
    assert prefix.is_symlink() and prefix.resolve() == cached and (prefix / "lib" / "x").read_bytes() == b"x" * 5000
    prefix.unlink()  # the next job's container
    assert _restore_interpreter(_store(s3), snap, str(cache)) == str(prefix / "bin" / "python3.11")
    assert s3.calls == 1 and prefix.resolve() == cached
    assert [p.name for p in (cache / "pythons" / snap["sha256"]).iterdir()] == ["1"]  # no private folder left


@pytest.mark.parametrize(
    "change, named",
    [
        ("edit", "lib/x changed"),  # same size, modification time put back
        ("add", "lib/evil.pth was added"),
        ("remove", "lib/x is missing"),
        ("relink", "bin/python3 is not the link it was"),
    ],
)
def test_a_cached_interpreter_that_is_not_the_snapshot_is_named_and_made_again(
    pyenv_root, tmp_path, capsys, change, named
):
    """Any job of the instance can write to the cache, so a cached tree is used only if its files are the
    snapshot's (sha256 by sha256, as the host listed them): else the job warns naming the first difference,
    restores a new generation from the store and links to it; the old one is left (jobs may run from it)."""
    from metaflow_extensions.repro.plugins.batch_bootstrap import _restore_interpreter

    tarball = _tarball(
        tmp_path / "py.tar.gz",
        [("bin/python3.11", b"#!"), ("lib/x", b"x" * 5000), ("bin/python3", "->python3.11")],
    )
    prefix = pyenv_root / "versions" / "3.11.7"
    cache = tmp_path / "instance-cache"
    s3 = _FlakyS3(tarball.read_bytes(), breaks=0)
    snap = _cached_snap(tarball, prefix, tmp_path)
    _restore_interpreter(_store(s3), snap, str(cache))
    prefix.unlink()
    first = cache / "pythons" / snap["sha256"] / "1" / "prefix"
    if change == "edit":
        before = (first / "lib" / "x").stat()
        (first / "lib" / "x").write_bytes(b"y" * 5000)
        os.utime(first / "lib" / "x", ns=(before.st_atime_ns, before.st_mtime_ns))
    elif change == "add":
        (first / "lib" / "evil.pth").write_text("import os\n")
    elif change == "remove":
        (first / "lib" / "x").unlink()
    else:
        (first / "bin" / "python3").unlink()
        (first / "bin" / "python3").symlink_to("/bin/sh")
    assert _restore_interpreter(_store(s3), snap, str(cache)) == str(prefix / "bin" / "python3.11")
    err = capsys.readouterr().err
    assert named in err and "making it again" in err, err
    second = cache / "pythons" / snap["sha256"] / "2" / "prefix"
    assert s3.calls == 2 and prefix.resolve() == second and (prefix / "lib" / "x").read_bytes() == b"x" * 5000
    assert first.is_dir()  # left to the jobs that may run from it
    prefix.unlink()
    assert _restore_interpreter(_store(s3), snap, str(cache)) == str(prefix / "bin" / "python3.11")
    assert s3.calls == 2 and prefix.resolve() == second  # the next job: the new generation, checked


def test_a_cache_that_cannot_be_written_gives_a_private_copy(pyenv_root, tmp_path, capsys):
    from metaflow_extensions.repro.plugins.batch_bootstrap import _restore_interpreter

    tarball = _tarball(tmp_path / "py.tar.gz", [("bin/python3.11", b"#!")])
    prefix = pyenv_root / "versions" / "3.11.7"
    cache = tmp_path / "a-file"
    cache.write_text("not a folder")
    s3 = _FlakyS3(tarball.read_bytes(), breaks=0)
    assert _restore_interpreter(_store(s3), _cached_snap(tarball, prefix, tmp_path), str(cache)) == str(
        prefix / "bin" / "python3.11"
    )
    assert "cannot be used for the interpreter" in capsys.readouterr().err
    assert prefix.is_dir() and not prefix.is_symlink()


class _FilesS3:
    """boto3's S3 client as a job uses it, serving ``objects`` ({key: path}) and counting fetches."""

    def __init__(self, objects: dict[str, Path]):
        self.objects, self.fetched = objects, []

    def download_file(self, bucket, key, dest):
        key = key.split("/", 1)[1]  # the store's prefix
        self.fetched.append(key)
        Path(dest).write_bytes(self.objects[key].read_bytes())


def test_a_jobs_env_is_built_once_into_the_instance_cache_and_a_build_that_does_not_check_stays_private(
    tmp_path, capsys, monkeypatch
):
    """batch_bootstrap.main with real uv and a real wheel (the interpreter is this machine's, so it is not
    restored): the first job builds the env into the cache and links the env's path to it; the next job
    links without fetching anything; a build that is not what the manifest lists is not kept: the job warns
    and builds a private env at the env's path."""
    import hashlib
    import json
    import shutil

    from metaflow_extensions.repro.plugins import batch_bootstrap as bb
    from metaflow_repro.env.uvtool import uv_bin
    from metaflow_repro.executors.batch import env_files
    from metaflow_repro.settings import Home
    from tests.helpers import make_wheel

    python = "/root/.pyenv/versions/3.11.7/bin/python3.11"
    if not Path(python).exists():
        pytest.skip("needs pyenv's 3.11.7")
    wheel = make_wheel(tmp_path / "wheels", "tinypkg", "1.0")
    uv = Path(uv_bin())
    env_path = tmp_path / "home" / "envs" / "e1"
    objects = {"tools/uv": uv, "packages/tinypkg.whl": wheel}
    package = {"name": "tinypkg", "path": str(wheel), "url": wheel.as_uri(), "sha256": sha256_file(wheel)}
    manifest = {
        "env_id": "e" * 64,
        "env_path": str(env_path),
        "marker_name": ".repro-env.json",
        "marker": {"env_id": "e" * 64},
        "venv_python": python,
        "interpreter": {"prefix": "/root/.pyenv/versions/3.11.7", "executable": "bin/python3.11", "sha256": "0" * 64},
        "uv": {"key": "tools/uv", "sha256": sha256_file(uv)},
        "packages": [{**package, "key": "packages/tinypkg.whl"}],
    }
    cache = tmp_path / "instance-cache"
    monkeypatch.setattr(bb, "WORK", str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    # what the host lists: the files of an env built the same way (the job's own private build, here)
    bb._build(str(uv), python, str(env_path), manifest, str(env_path / ".repro-env.json"), str(tmp_path / "uvc"))
    manifest["files"] = env_files(env_path, Home(tmp_path / "host-home"))
    shutil.rmtree(env_path)

    def job(manifest: dict) -> _FilesS3:
        data = json.dumps(manifest).encode()
        sha = hashlib.sha256(data).hexdigest()
        (cache / "manifests").mkdir(parents=True, exist_ok=True)
        (cache / "manifests" / f"{sha}.json").write_bytes(data)  # as a job before this one kept it
        s3 = _FilesS3(objects)
        store = bb._Store("s3://bucket/p")
        store._client = s3
        monkeypatch.setattr(bb, "_Store", lambda uri: store)
        assert bb.main(["bootstrap", "s3://bucket/p", sha, str(cache)]) == 0
        return s3

    first = job(manifest)
    assert env_path.is_symlink() and "kept in the instance cache" in capsys.readouterr().err
    assert sorted(first.fetched) == ["packages/tinypkg.whl", "tools/uv"]
    assert (env_path / "lib" / "python3.11" / "site-packages" / "tinypkg" / "__init__.py").exists()
    env_path.unlink()  # the next job's container
    second = job(manifest)
    assert second.fetched == [] and "from the instance cache" in capsys.readouterr().err
    env_path.unlink()
    wrong = dict(manifest, files={k: v for k, v in manifest["files"].items() if not k.endswith("__init__.py")})
    job(wrong)
    err = capsys.readouterr().err
    assert "is not what the manifest lists" in err and "tinypkg/__init__.py was added" in err, err
    assert env_path.is_dir() and not env_path.is_symlink() and (env_path / ".repro-env.json").exists()
    assert not list((cache / "envs").rglob(".make.*"))  # nothing private left in the cache
    # the marker (what the task's fingerprint check reads) is not listed by the host: it must be the manifest's
    shutil.rmtree(env_path)
    (marker,) = cache.glob("envs/*/1/env/.repro-env.json")
    marker.write_text(json.dumps({"env_id": "e" * 64, "fingerprint": "another"}))
    job(manifest)
    assert "has another marker; making a private copy" in capsys.readouterr().err
    assert env_path.is_dir() and not env_path.is_symlink()
