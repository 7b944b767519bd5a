"""metaflow_repro.containers.stored, the parts without a daemon: what a root file system says of itself
(Debian packages, the archive's Release date, pip packages, the system Python) and the zstd object
made of it, hashed on the way (the tar's sha256 is the image layer's diff_id)."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
import zstandard

from metaflow_repro.containers import stored

STATUS = """Package: bash
Status: install ok installed
Version: 5.2.15-2+b7

Package: gone
Status: deinstall ok config-files
Version: 1.0

Package: libstdc++6
Status: install ok installed
Multi-Arch: same
Version: 12.2.0-14+deb12u1
Description: GNU Standard C++ Library v3
 Version: not this one
"""
RELEASE = "Origin: Debian\nSuite: stable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n"


def _rootfs(path):
    with tarfile.open(path, "w") as tar:
        for name, text in (
            ("./var/lib/dpkg/status", STATUS),
            ("./var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_Release", RELEASE),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
        for folder in ("./usr/local/lib/python3.11/dist-packages/boto3-1.44.18.dist-info",):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        link = tarfile.TarInfo("./usr/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, "python3.11"
        tar.addfile(link)


def test_the_root_file_system_says_what_is_installed(tmp_path):
    _rootfs(tmp_path / "rootfs.tar")
    facts = stored._facts(tmp_path / "rootfs.tar")
    assert facts["packages"] == ["bash=5.2.15-2+b7", "libstdc++6=12.2.0-14+deb12u1"]  # not what was removed
    assert facts["date"] == "Sat, 11 Jul 2026 10:16:37 UTC" and facts["suite"] == "bookworm"
    assert facts["pip"] == ["boto3==1.44.18"] and facts["python"] == "3.11"


def test_the_object_decompresses_to_the_tar_and_both_hashes_are_right(tmp_path):
    _rootfs(tmp_path / "rootfs.tar")
    raw, sha = stored._compress(tmp_path / "rootfs.tar", tmp_path / "obj")
    data = (tmp_path / "obj").read_bytes()
    assert sha == hashlib.sha256(data).hexdigest()
    assert raw == hashlib.sha256((tmp_path / "rootfs.tar").read_bytes()).hexdigest()
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read() == (tmp_path / "rootfs.tar").read_bytes()


def test_a_docker_save_stream_is_read_as_a_file():
    chunks = stored._Chunks(iter([b"ab", b"", b"cde", b"f"]))
    assert chunks.read(3) == b"abc" and chunks.read(-1) == b"def" and chunks.read(2) == b""


def test_an_object_that_inflates_past_its_manifest_or_is_not_zstd_is_refused(tmp_path):
    from metaflow_repro.errors import IntegrityError
    from metaflow_repro.store.images import ImageManifest

    obj = tmp_path / "obj"
    obj.write_bytes(zstandard.ZstdCompressor().compress(b"\0" * (4 << 20)))
    manifest = ImageManifest("a" * 64, 1, "b" * 64, 1 << 20, "0", "bookworm", "", "3.11")
    with pytest.raises(IntegrityError, match="inflates to more than the 1048576 bytes"):
        stored._inflate(obj, tmp_path / "rootfs.tar", manifest, "images/x.tar.zst")
    obj.write_bytes(b"not zstd at all")
    with pytest.raises(IntegrityError, match="not a usable zstd image"):
        stored._inflate(obj, tmp_path / "rootfs.tar", manifest, "images/x.tar.zst")


class _OneLayerDaemon:
    """A Docker client holding ``ref`` as an image of one layer, which cannot `docker save` (no ``api``):
    a publish that packs the image fails."""

    def __init__(self, layer):
        image = type("Image", (), {"attrs": {"RootFS": {"Layers": [f"sha256:{layer}"]}}, "labels": {}})()
        self.images = type("Images", (), {"get": lambda _self, ref: image})()


def test_a_fresh_home_takes_the_stores_object_of_the_same_layer_instead_of_packing_it(tmp_path):
    """A fresh REPRO_HOME (CI) whose daemon holds repro's image: the store's object of that root file system
    is fetched (verified) and named, never packed again (docker save + zstd: 7 s, and an 88 MB upload)."""
    from metaflow_repro.settings import Home
    from metaflow_repro.store import LocalStore, layout
    from metaflow_repro.store.images import ImageManifest

    layer, body = "1" * 64, b"the zstd object"
    sha = hashlib.sha256(body).hexdigest()
    store = LocalStore(str(tmp_path / "store"))
    other = ImageManifest("2" * 64, 3, "9" * 64, 10, "0", "bookworm", "", "3.11")  # another layer's
    store.put_bytes(layout.image_manifest(other.sha256), other.to_json().encode())
    store.put_bytes(layout.image_manifest("3" * 64), b"not a manifest")
    manifest = ImageManifest(sha, len(body), layer, 10, "0", "bookworm", "", "3.11")
    store.put_bytes(layout.image(sha), body)
    store.put_bytes(layout.image_manifest(sha), manifest.to_json().encode())
    home, said = Home(tmp_path / "home"), []
    assert (
        stored.publish(_OneLayerDaemon(layer), "repro-batch-job:1", None, home, said.append, look_in=store) == manifest
    )
    assert (home.images / f"{sha}.tar.zst").read_bytes() == body and "fetching it" in said[-1]
    assert stored.publish(_OneLayerDaemon(layer), "repro-batch-job:1", None, home, said.append) == manifest  # kept
    with pytest.raises(AttributeError):  # no such object in the store: packed (this daemon cannot save)
        stored.publish(_OneLayerDaemon("4" * 64), "x:1", None, home, said.append, look_in=store)
    store.put_bytes(layout.image(sha), b"the zstd objecT")  # corrupt, same size: said, and packed here
    home = Home(tmp_path / "home2")
    with pytest.raises(AttributeError):
        stored.publish(_OneLayerDaemon(layer), "repro-batch-job:1", None, home, said.append, look_in=store)
    assert "corrupt" in said[-2] and "packing" in said[-1] and not (home.images / f"{sha}.tar.zst").exists()
