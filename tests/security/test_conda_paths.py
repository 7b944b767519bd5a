"""Issue 22 item 1: a conda package's info documents must not make rattler write or delete outside the env.

``check_archive`` used to read tar member names only. A package whose ``info/paths.json`` named
``../../../../<a file>`` made rattler delete that file (the build then failed "failed to link"), from a
channel and from a hostile store record alike, and ``repro store verify`` called that record ok. Now
paths.json, link.json's entry points, has_prefix, files and the archive's links are resolved by repro
itself (``env/conda_meta``) before rattler sees a package, for each package and for an env's packages
together, and ``repro store verify`` runs the same checks on a record's conda packages."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from metaflow_repro.env import conda
from metaflow_repro.env.cache import PackageCache
from metaflow_repro.env.fetch import add_file
from metaflow_repro.errors import IntegrityError
from metaflow_repro.model.lock import Package, PlatformLock, read_lock
from metaflow_repro.model.record import StepRecord
from metaflow_repro.settings import load_settings
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.snapshot import pull, push, verify
from metaflow_repro.testing.conda_channel import Entry, Meta, index, write_package
from tests.helpers import cli
from tests.store_fakes import fake_run, settings_for

KEEP = b"the user's file, which no package may touch\n"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "outside" / "important.txt"
    path.parent.mkdir()
    path.write_bytes(KEEP)
    return path


def escape_to(victim: Path) -> str:
    """A relative path from any prefix to ``victim`` (more '..' than any prefix is deep)."""
    return "../" * 40 + str(victim).lstrip("/")


def paths_json(*items: tuple[str, bytes]) -> bytes:
    paths = [
        {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(d).hexdigest(), "size_in_bytes": len(d)}
        for p, d in items
    ]
    return json.dumps({"paths": paths, "paths_version": 1}).encode()


#: json.loads raises RecursionError on it, out of scan_archive (and all of ``repro store verify``)
DEEP = b"[" * 100000


def padded(doc: bytes) -> bytes:
    """``doc`` with trailing spaces past conda.MAX_INFO_BYTES: valid JSON, which repro did not read."""
    return doc + b" " * (conda.MAX_INFO_BYTES + 1 - len(doc))


def unchecked(folder: Path, how: str, victim: Path) -> tuple[Path, str]:
    """A package whose paths.json repro could not check (too large, given twice, nested too deep), read by
    rattler all the same; (archive, what the refusal names)."""
    ok = Entry("share/evil/ok.txt", b"ok\n")
    generic = Meta(f"evil-{how}", "1.0", "repro_0", "noarch", noarch="generic")
    evil, clean = paths_json((escape_to(victim), b"pwned\n")), paths_json(("share/evil/ok.txt", b"ok\n"))
    if how == "oversized":  # skipped unread: none of its paths were checked
        return write_package(folder, generic, [ok], info={"info/paths.json": padded(evil)}), "more than the"
    if how == "twice":  # the evil one first, the clean one (which repro kept) last
        twice = [Entry("info/paths.json", clean)]
        return write_package(folder, generic, [ok], twice, info={"info/paths.json": evil}), "2 times"
    if how == "twice-large":  # the clean one first, the evil one too large to read
        return write_package(folder, generic, [ok], [Entry("info/paths.json", padded(evil))]), "2 times"
    doc = {"deep-paths": "info/paths.json", "deep-link": "info/link.json", "deep-index": "info/index.json"}[how]
    return write_package(folder, generic, [ok], info={doc: DEEP}), f"{doc} is not JSON (nested deeper than"


def hostile(folder: Path, how: str, victim: Path) -> tuple[Path, str]:
    """A package whose ``how`` leads outside the prefix, written into channel ``folder``; (archive, what the
    refusal names)."""
    escape, ok = escape_to(victim), Entry("share/evil/ok.txt", b"ok\n")
    generic = Meta(f"evil-{how}", "1.0", "repro_0", "noarch", noarch="generic")
    if how in UNCHECKED:
        return unchecked(folder, how, victim)
    if how == "paths":  # the package: rattler deleted the file, then failed to link
        return write_package(folder, generic, [ok], info={"info/paths.json": paths_json(("share/evil/ok.txt", b"ok\n"), (escape, b"pwned\n"))}), "info/paths.json"  # fmt: skip
    if how == "entry":  # rattler writes bin/<command>
        meta = Meta("evil-entry", "1.0", "pyh_repro_0", "noarch", ["python"], "python", [f"{escape} = os:getcwd"])
        return write_package(folder, meta, [ok]), "info/link.json entry point"
    if how == "prefix":
        return write_package(folder, generic, [ok], info={"info/has_prefix": f"/opt/b text {escape}\n".encode()}), "info/has_prefix"  # fmt: skip
    assert how == "link"  # lexically inside (d/.. is the prefix), but d is the prefix itself: d/up is its parent
    return write_package(folder, generic, [ok, Entry("d", link="."), Entry("d/up", link="..")]), "leaves the prefix"


def conda_package(archive: Path) -> Package:
    """The lock's entry, from the file name (NAME-VERSION-BUILD.tar.bz2): its index.json may be hostile."""
    data = archive.read_bytes()
    name, version, build = archive.name.removesuffix(".tar.bz2").rsplit("-", 2)
    return Package(
        name,
        version,
        "file:///channel",
        archive.name,
        f"file:///channel/noarch/{archive.name}",
        hashlib.sha256(data).hexdigest(),
        len(data),
        subdir="noarch",
        build=build,
        md5=hashlib.md5(data).hexdigest(),
    )


def conda_record(home: Path, archives: list[Path]):
    """A run record (in ``home``) whose one env is a conda env of ``archives``, their files in the cache."""
    run = fake_run(home, n_packages=0)
    cache = PackageCache(run.settings.home.packages)
    packages = tuple(conda_package(a) for a in archives)
    for pkg, archive in zip(packages, archives):
        add_file(cache, pkg, archive)
    pl = PlatformLock("linux-64", "3.11.7", packages)
    steps = {"start": StepRecord(spec_id="a" * 64, env_id=pl.env_id, disabled=False)}
    return dataclasses.replace(run.record, envs={pl.env_id: pl}, steps=steps), run.settings, pl


UNCHECKED = ["oversized", "twice", "twice-large", "deep-paths", "deep-link", "deep-index"]
HOW = ["paths", "entry", "prefix", "link", *UNCHECKED]


@pytest.mark.parametrize("how", HOW)
def test_store_verify_flags_a_record_naming_a_package_that_writes_outside(tmp_path, victim, how):
    archive, words = hostile(tmp_path / "channel", how, victim)
    record, settings, _ = conda_record(tmp_path / "home", [archive])
    store = LocalStore(str(tmp_path / "store"))
    push(record, store, settings)
    problems = verify(record, store)
    key = layout.package(conda_package(archive).sha256, archive.name)
    assert len(problems) == 1 and problems[0].startswith(key) and words in problems[0], problems
    r = cli("store", "verify", "--store", store.uri, env={"REPRO_HOME": str(tmp_path / "home")})
    assert r.code == 1 and key in r.out and words in r.out, r.text  # it called such a record ok


def test_store_verify_flags_an_env_whose_packages_escape_only_together(tmp_path):
    """Each package alone stays inside; linked into one prefix, one writes through the other's link."""
    ok = Entry("share/x.txt", b"x\n")
    base = write_package(
        tmp_path / "ch", Meta("base", "1", "0", "noarch", noarch="generic"), [ok, Entry("share/root", link="..")]
    )
    up = write_package(tmp_path / "ch", Meta("up", "1", "0", "noarch", noarch="generic"), [Entry("share/root/up", link="..")])  # fmt: skip
    assert conda.archive_problems(base) == [] and conda.archive_problems(up) == []
    record, settings, pl = conda_record(tmp_path / "home", [base, up])
    store = LocalStore(str(tmp_path / "store"))
    push(record, store, settings)
    problems = verify(record, store)
    assert len(problems) == 1 and pl.env_id[:12] in problems[0] and "'share/root/up'" in problems[0], problems


@pytest.mark.parametrize("how", HOW)
def test_a_package_pulled_from_a_hostile_record_is_refused_before_rattler_and_the_file_survives(tmp_path, victim, how):
    archive, words = hostile(tmp_path / "channel", how, victim)
    record, settings, pl = conda_record(tmp_path / "home", [archive])
    store = LocalStore(str(tmp_path / "store"))
    push(record, store, settings)
    fresh = settings_for(tmp_path / "fresh-home")
    pull(record, store, fresh)  # sha256-verified: the bytes are the record's, the record is hostile
    cache = PackageCache(fresh.home.packages)
    files = {p.sha256: cache.check(p) for p in pl.packages}
    prefix = tmp_path / "env"
    with pytest.raises(IntegrityError, match="refused") as err:
        conda.install(pl, prefix, files, fresh.home.conda_pkgs, "step 'start'")
    assert words in str(err.value) and archive.name in str(err.value)
    assert victim.read_bytes() == KEEP and not prefix.exists()


# -- from a channel, through the command line -----------------------------------------------------------

FLOW = """
from metaflow import FlowSpec, conda, step


class EvilFlow(FlowSpec):
    @conda(libraries=LIBRARIES)
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    EvilFlow()
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["paths", "entry"])
def test_env_build_refuses_a_channel_package_that_writes_outside_and_the_file_survives(
    tmp_path, conda_channel, victim, how
):
    channel = tmp_path / "channel"
    shutil.copytree(conda_channel, channel, ignore=shutil.ignore_patterns(".wheels", ".tmp"))
    archive, words = hostile(channel, how, victim)
    index(channel)
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text(f'[tool.repro]\nconda-source = "conda"\nchannels = ["{channel}"]\n')
    (root / "flow.py").write_text(FLOW.replace("LIBRARIES", json.dumps({f"evil-{how}": "1.0"})))
    r = cli("lock", root / "flow.py", cwd=root)
    assert r.code == 0, r.text
    r = cli("env", "build", root / "flow.py", "--step", "start", cwd=root)
    assert r.code == 3 and archive.name in r.err and words in r.err and "refused" in r.err, r.text
    assert victim.read_bytes() == KEEP
    (pl,) = read_lock(root / "flow.repro.lock").steps["start"].platforms.values()
    assert not (load_settings(root).home.envs / pl.env_id[:16]).exists()  # no partial env left behind
