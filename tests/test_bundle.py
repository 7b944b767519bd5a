"""Portable replay bundles, for real (issue 24 item 3): two recorded runs of one flow, bundled; a bundle
replays `identical` with its store and REPRO_HOME gone, under `unshare -n`; a bundle with one byte of a
package member flipped is refused naming the member; an import into a store holding the other run
writes only what differs."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.helpers import SCENARIOS, cli, require_netns

pytestmark = pytest.mark.slow
NO_INDEX = {"REPRO_INDEX_URL": "http://127.0.0.1:9/simple", "UV_OFFLINE": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of LinearFlow, each pushed to a store of its own, and a bundle of each."""
    work = tmp_path_factory.mktemp("bundle")
    env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_FROZEN": "1",
    }
    proj = work / "proj"  # a project of its own: the code package holds the flow and its lock only
    proj.mkdir()
    for name in ("linear.py", "linear.repro.lock"):
        shutil.copy(SCENARIOS / name, proj / name)
    (proj / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    out = {"work": work, "env": env}
    for name in ("first", "second"):
        store = (work / name).as_uri()
        r = cli("run", proj / "linear.py", "--store", store, env=env, cwd=proj)
        assert r.code == 0, r.text[-4000:]
        bundle = work / f"{name}.repro"
        b = cli("bundle", "LinearFlow/latest", "--store", store, "-o", bundle, env=env, cwd=work)
        assert b.code == 0, b.text[-3000:]
        assert re.search(r"bundled LinearFlow/\d+ into .* \d+ objects, [\d.]+ MB \(its parts: [\d.]+ MB", b.out)
        out[name] = bundle
    return out


def test_a_bundle_replays_identical_with_no_store_nor_home_and_no_network(runs):
    require_netns()
    work, bundle = runs["work"], runs["first"]
    portable = work / "elsewhere" / "run.repro"
    portable.parent.mkdir()
    shutil.copy(bundle, portable)
    shutil.rmtree(work / "first")  # the store is gone
    home = work / "fresh-home"  # and REPRO_HOME: nothing of the recording machine is reachable
    env = {**os.environ, **runs["env"], **NO_INDEX, "REPRO_HOME": str(home), "REPRO_STORE": (work / "none").as_uri()}
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "metaflow_repro", "replay", str(portable)],
        capture_output=True,
        text=True,
        env=env,
        cwd=portable.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "replaying from bundle" in proc.stdout and "result: identical" in proc.stdout
    assert "rebuilding env" in proc.stderr and "resolving" not in proc.stderr
    assert not (work / "none").exists()  # no store was made or read
    assert not (home / "tmp").exists()  # the private store went with the scratch folder


def _flip_in_package(bundle: Path, dest: Path) -> str:
    """A copy of ``bundle`` with one byte of its first package member flipped (recompressed, so the
    stream itself is sound): the member's name."""
    raw = zstandard.ZstdDecompressor().stream_reader(bundle.read_bytes(), read_across_frames=True).read()
    data = bytearray(raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("packages/"))
    data[member.offset_data + member.size // 2] ^= 0x01
    dest.write_bytes(zstandard.ZstdCompressor().compress(bytes(data)))
    return member.name


def test_one_byte_flipped_in_a_package_member_is_refused_naming_it(runs):
    work, env = runs["work"], runs["env"]
    bad = work / "flipped.repro"
    name = _flip_in_package(runs["second"], bad)
    store = work / "target"
    for args in (("bundle", "verify", bad), ("store", "import", bad, "--store", store.as_uri()), ("replay", bad)):
        r = cli(*args, env=env, cwd=work)
        assert r.code == 3, (args, r.text[-2000:])
        assert f"member {name} is corrupt" in r.err, r.err
    assert not store.exists()  # nothing was written: every member is checked before the first write
    ok = cli("bundle", "verify", runs["second"], env=env, cwd=work)
    assert ok.code == 0 and "ok: run LinearFlow/" in ok.out, ok.text


def test_bundles_share_nothing_on_disk_and_dedupe_on_import(runs):
    work, env = runs["work"], runs["env"]
    store = work / "second"  # holds the second run only
    r = cli("store", "import", runs["first"], "--store", store.as_uri(), env=env, cwd=work)
    assert r.code == 0, r.text
    written, there = map(int, re.search(r"(\d+) object\(s\) written, (\d+) already there", r.out).groups())
    # the same flow: its package files, lock, interpreter snapshot and code are there already
    assert "packages: 0 uploaded" in r.err and "locks: 0 uploaded" in r.err and "pythons: 0 uploaded" in r.err
    assert there >= 8 and written <= 3, r.err
    again = cli("store", "import", runs["first"], "--store", store.as_uri(), env=env, cwd=work)
    assert again.code == 0 and "0 object(s) written" in again.out, again.text
    assert len(list((store / "runs").glob("LinearFlow@*/*/record.json"))) == 2
    verified = cli("store", "verify", "--store", store.as_uri(), env=env, cwd=work)
    assert verified.code == 0, verified.text


def test_a_bundle_replays_in_a_container(runs, request, tmp_path):
    """`--on docker`: the container sees the private store (a folder under REPRO_HOME/tmp/<owner>, whose
    name holds '@' and '+') and nothing else of the host."""
    request.getfixturevalue("base_image")  # a Docker daemon and repro's base image (skips without one)
    r = cli("replay", runs["second"], "--on", "docker", env={**runs["env"], "REPRO_HOME": str(tmp_path / "h")})
    assert r.code == 0, r.text[-6000:]
    assert "replaying from bundle" in r.out and "result: identical" in r.out
