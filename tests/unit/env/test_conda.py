"""Conda packages in the lock model, and the archive checks that run before rattler sees a file
(pure logic and small archives written here; no channel, no solver)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from metaflow_repro.env.conda import archive_problems, channel_url, check_archive, install, match_specs
from metaflow_repro.errors import BadInput, IntegrityError
from metaflow_repro.model import validate as v
from metaflow_repro.model.lock import Package, PlatformLock
from metaflow_repro.model.spec import EnvSpec
from metaflow_repro.testing.conda_channel import Entry, Meta, wheel_depends, write_package
from tests.helpers import SHA, pkg

MD5 = "0123456789abcdef0123456789abcdef"
CONDA = Package(
    "six",
    "1.16.0",
    "file:///ch",
    "six-1.16.0-py_0.tar.bz2",
    "file:///ch/noarch/six-1.16.0-py_0.tar.bz2",
    SHA,
    10,
    subdir="noarch",
    build="py_0",
    md5=MD5,
)


def test_conda_fields_round_trip_and_pypi_entries_stay_as_they_were():
    d = CONDA.as_dict()
    assert (d["subdir"], d["build"], d["md5"]) == ("noarch", "py_0", MD5)
    assert Package.from_dict(d, v.At("lock")) == CONDA and CONDA.is_conda and CONDA.channel == "file:///ch"
    plain = pkg("six", "1.16.0")
    assert set(plain.as_dict()) == {"name", "version", "source", "file", "url", "sha256", "size"}  # old locks
    assert not plain.is_conda and plain.channel == ""
    pl = PlatformLock(
        "linux-64",
        "3.11.7",
        (CONDA,),
        virtual_packages=("__glibc=2.36=0", "__unix=0=0"),
        name_map=(("pytorch", "torch"),),
    )
    back = PlatformLock.from_dict(pl.to_dict(), "lock")
    assert back == pl and back.is_conda and back.to_dict()["name_map"] == {"pytorch": "torch"}
    # the extra fields do not change the env id of a PyPI env (committed locks keep their ids)
    old = PlatformLock("linux-64", "3.11.7", (plain,))
    assert set(old.to_dict()) == {"env_id", "platform", "python", "packages"}


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d.update(md5="xyz"), "md5"),
        (lambda d: d.pop("build"), "build"),
        (lambda d: d.update(subdir="../x"), "subdir"),
    ],
)
def test_a_bad_conda_field_is_named(edit, field):
    d = CONDA.as_dict()
    edit(d)
    with pytest.raises(v.Invalid, match=field):
        Package.from_dict(d, v.At("lock"))


def _archive(tmp_path: Path, extra: list[Entry]) -> Path:
    return write_package(tmp_path, Meta("x", "1", "0", "noarch", noarch="generic"), [Entry("share/x", b"x")], extra)


@pytest.mark.parametrize(
    "member, words",
    [
        (Entry("../escaped", b"!"), "'..' component"),
        (Entry("/etc/evil", b"!"), "absolute path"),
        (Entry("share/link", link="../../../etc/passwd"), "leaves the prefix"),
        (Entry("share/abs-link", link="/etc/passwd"), "absolute path"),
    ],
)
def test_archive_members_outside_the_prefix_are_found(tmp_path, member, words):
    problems = archive_problems(_archive(tmp_path, [member]))
    assert len(problems) == 1 and words in problems[0], problems


def test_a_clean_archive_with_an_inner_link_passes(tmp_path):
    assert archive_problems(_archive(tmp_path, [Entry("share/inner", link="x")])) == []


def _tar(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


INDEX = json.dumps({"name": "x", "version": "1", "build": "0", "noarch": "generic", "subdir": "noarch"}).encode()
INFO_TAR = {"info/index.json": INDEX, "info/paths.json": json.dumps({"paths": [{"_path": "share/x"}]}).encode()}


def _dot_conda(tmp_path: Path, inners: list[tuple[str, bytes]]) -> Path:
    """A ``.conda`` zip of ``inners`` (name, bytes; the same name may come twice)."""
    out = tmp_path / "x-1-0.conda"
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name, and writes it
        zf.writestr("metadata.json", b'{"conda_pkg_format_version": 2}')
        for name, data in inners:
            zf.writestr(name, data)
    return out


def _zst(entries: dict[str, bytes]) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(_tar(entries))


EVIL_INFO = {**INFO_TAR, "info/paths.json": b'{"paths": [{"_path": "../../x"}]}'}
PKG_TAR = {"share/x": b"x"}


@pytest.mark.parametrize(
    "inners, words",
    [
        ([("info-x.tar.zst", INFO_TAR), ("pkg-x.tar.zst", PKG_TAR)], ""),  # the clean package
        # zipfile opens the last of a name (the clean one), another reader may take the first
        ([("info-x.tar.zst", EVIL_INFO), ("info-x.tar.zst", INFO_TAR), ("pkg-x.tar.zst", PKG_TAR)], "more than once"),
        # the package's files hold a second paths.json, extracted into the same folder
        ([("info-x.tar.zst", INFO_TAR), ("pkg-x.tar.zst", {"info/paths.json": b'{"paths": []}'})], "2 times"),
        ([("info-x.tar.zst", INFO_TAR), ("pkg-x.tar.zst", b"\x28\xb5\x2f\xfd garbage")], "is not zstd"),
    ],
)
def test_a_dot_conda_zip_holding_a_document_twice_or_broken_is_refused(tmp_path, inners, words):
    parts = [(name, data if isinstance(data, bytes) else _zst(data)) for name, data in inners]
    problems = archive_problems(_dot_conda(tmp_path, parts))
    assert (len(problems) == 1 and words in problems[0]) if words else problems == [], problems


def test_a_dot_conda_zip_that_zipfile_cannot_open_is_refused_not_a_crash(tmp_path):
    """An encrypted member: zipfile raises RuntimeError (which no check caught) where a reader wants a password."""
    out = tmp_path / "x-1-0.conda"
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("info-x.tar.zst", _zst(INFO_TAR))
    data = bytearray(out.read_bytes())  # zipfile writes no encrypted member: set the flag in both its headers
    for at in (data.index(b"PK\x03\x04") + 6, data.index(b"PK\x01\x02") + 8):
        data[at] |= 0x1
    out.write_bytes(bytes(data))
    problems = archive_problems(out)
    assert len(problems) == 1 and "cannot be read" in problems[0] and "encrypted" in problems[0], problems


def test_channel_urls_and_match_specs(tmp_path):
    (tmp_path / "chan").mkdir()
    assert channel_url("./chan", tmp_path) == (tmp_path / "chan").as_uri()
    assert channel_url("conda-forge", tmp_path) == "https://conda.anaconda.org/conda-forge"
    assert channel_url("https://example.org/ch/", tmp_path) == "https://example.org/ch"
    with pytest.raises(BadInput, match="no such folder"):
        channel_url("./missing", tmp_path)
    spec = EnvSpec(
        "F", "s", "conda", "conda", "3.11", libraries=(("six", "1.16.0"),), implicit=(("requests", "2.32.3"),)
    )
    assert match_specs(spec) == ["python 3.11.*", "requests ==2.32.3", "six ==1.16.0"]


def test_wheel_requirements_become_conda_depends():
    meta = (
        "Name: x\nVersion: 1\nRequires-Dist: numpy (>=1.19.5)\nRequires-Dist: scipy~=1.6\n"
        "Requires-Dist: pytest; extra == 'tests'\nRequires-Dist: tomli; python_version < '3.11'\n"
        "Requires-Dist: Typing_Extensions>=4; python_version < '3.13'\n"
    )
    assert wheel_depends(meta, "3.11.7") == ["numpy >=1.19.5", "scipy >=1.6,<2", "typing-extensions >=4"]
    assert json.dumps(wheel_depends(meta, "3.13.0")) == '["numpy >=1.19.5", "scipy >=1.6,<2"]'


def test_conda_names_served_from_pypi_are_mapped_only_for_conda_declarations():
    from metaflow_repro.env.pypi import name_map, requirements_in

    libs = (("py-xgboost", "2.1.1"), ("pytorch", "2.5.1"), ("scikit-learn", "1.5.2"))
    conda = EnvSpec("F", "s", "conda", "pypi", "3.11.7", libraries=libs)
    assert name_map(conda) == {"py-xgboost": "xgboost", "pytorch": "torch"}  # scikit-learn: same name
    assert requirements_in(conda) == "xgboost==2.1.1\ntorch==2.5.1\nscikit-learn==1.5.2\n"
    pypi = EnvSpec("F", "s", "pypi", "pypi", "3.11.7", libraries=libs)  # @pypi names are PyPI names
    assert name_map(pypi) == {} and requirements_in(pypi).startswith("py-xgboost==2.1.1\n")


def _conda_package(archive: Path) -> Package:
    data = archive.read_bytes()
    return Package(
        "samename", "1.0", "file:///ch", archive.name, archive.as_uri(), hashlib.sha256(data).hexdigest(), len(data),
        subdir="noarch", build="0", md5=hashlib.md5(data).hexdigest(),
    )  # fmt: skip


def test_rattlers_package_cache_never_serves_another_archive_of_the_same_name(tmp_path):
    """Pins the assumption conda.install relies on: one rattler cache (REPRO_HOME/conda-pkgs) is shared
    by every env, and an extracted package is reused only for the archive (sha256) it came from."""
    meta = Meta("samename", "1.0", "0", "noarch", noarch="generic")
    a = write_package(tmp_path / "a", meta, [Entry("share/x.txt", b"AAA\n")])
    b = write_package(tmp_path / "b", meta, [Entry("share/x.txt", b"BBB\n")])
    for archive, prefix in ((a, tmp_path / "pa"), (b, tmp_path / "pb")):
        pkg = _conda_package(archive)
        lock = PlatformLock("linux-64", "3.11.7", (pkg,))
        install(lock, prefix, {pkg.sha256: archive}, tmp_path / "cache", "step 's'")
    assert (tmp_path / "pa" / "share" / "x.txt").read_text() == "AAA\n"
    assert (tmp_path / "pb" / "share" / "x.txt").read_text() == "BBB\n"


PYTHON_SPECS = [
    ("3.11.7", "python ==3.11.7"),
    ("3.11", "python 3.11.*"),
    ("==3.10.*", "python ==3.10.*"),
    ("3.10.*", "python ==3.10.*"),
    (">=3.10,<3.11", "python <3.11,>=3.10"),
    ("===3.11.7", "python ==3.11.7"),
]


@pytest.mark.parametrize("request_, expected", PYTHON_SPECS)
def test_python_requests_become_match_specs(request_, expected):
    """PEP 440 specifiers (issue 10 item 3) reach the conda solver in conda's syntax, never '====3.10.*'."""
    from metaflow_repro.env.conda import python_match_spec

    assert python_match_spec(request_) == expected


def test_rattler_reads_the_python_match_specs():
    """The solver's own parser accepts them (in a process of its own, as repro runs rattler)."""
    code = "import os, sys, rattler\nfor s in sys.argv[1:]: rattler.MatchSpec(s)\nsys.stdout.flush(); os._exit(0)"
    proc = subprocess.run([sys.executable, "-c", code, *(e for _, e in PYTHON_SPECS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_verdict_from_before_the_info_checks_is_not_trusted_and_a_new_one_is_reused(tmp_path):
    """Package caches filled before paths.json was checked hold a stamp of the member-only check: the
    archive is read again. The new verdict is kept with its meta, so the next install reads nothing."""
    meta = Meta("old", "1.0", "0", "noarch", noarch="generic")
    evil = {"info/paths.json": json.dumps({"paths": [{"_path": "../../x", "path_type": "hardlink"}]}).encode()}
    archive = write_package(tmp_path / "ch", meta, [Entry("share/x", b"x")], info=evil)
    pkg = _conda_package(archive)
    (archive.parent / ".members-checked").write_text(pkg.sha256)  # the old stamp, beside the old index copy
    (archive.parent / ".index.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"info/paths.json: '../../x' has a '..' component"):
        check_archive(pkg, archive, "step 's'")
    good = write_package(tmp_path / "ok", meta, [Entry("share/x", b"x")])
    good_pkg = _conda_package(good)
    first = check_archive(good_pkg, good, "step 's'")
    good.write_bytes(b"not read again: the cache checks the sha256 before every use, the verdict is kept")
    assert check_archive(good_pkg, good, "step 's'") == first
