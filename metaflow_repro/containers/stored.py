"""Images in the store: the root file system a container ran in, pushed as ``images/<sha256>.tar.zst``
with its manifest (``store/images``), and imported back into a Docker daemon from those exact bytes.

``publish`` takes an image of one layer (what `repro image build` makes: ``docker import`` of a
root file system) out of the daemon (``docker save``), checks that the layer's bytes hash to the
image's ``diff_id``, compresses it with zstd and reads its manifest from the bytes themselves (Debian
packages from ``var/lib/dpkg/status``, the archive's ``Date`` from the suite's Release file, the pip
packages' ``.dist-info`` folders). The object is kept in ``REPRO_HOME/images/<sha256>.tar.zst`` (an
index file per layer makes the next publish a lookup) and pushed unless the store has it.

``ensure`` is the other way: the image of a recorded object, found in the daemon by its layer (any
tag: the same bytes are the same user space), else downloaded, verified (a corrupt object is exit 3
naming its key), decompressed and imported as ``repro-image:<sha256[:24]>``, whose one layer must then be
the manifest's ``rootfs_sha256``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from metaflow_repro.containers import image as images
from metaflow_repro.errors import InfraError, IntegrityError, ReproError
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.settings import Home
from metaflow_repro.store import Store, layout
from metaflow_repro.store import images as stored
from metaflow_repro.store.base import StoreObjectMissing
from metaflow_repro.store.images import ImageManifest

REPOSITORY = "repro-image"
LABEL_OBJECT = "org.repro.image"
ZSTD_LEVEL = 3  # 250 MB of root file system: ~0.6 s on two cores, ~88 MB
_CHUNK = 1 << 20
_DIST_INFO = re.compile(
    r"^\./usr/local/lib/python3\.[0-9]+/dist-packages/([A-Za-z0-9_.]+)-([A-Za-z0-9_.+]+)\.dist-info/$"
)


@dataclass(frozen=True)
class StoredImage:
    ref: str  # what to run in the daemon
    python: str  # its system python3, major.minor
    sha256: str  # the store object


def layer_of(client, ref: str) -> str | None:
    """The hex digest of the image's one layer (its diff_id); None if it has more than one."""
    layers = client.images.get(ref).attrs.get("RootFS", {}).get("Layers") or []
    return layers[0].split(":", 1)[1] if len(layers) == 1 and layers[0].startswith("sha256:") else None


def publish(
    client, ref: str, store: Store | None, home: Home, log=print, look_in: Store | None = None
) -> ImageManifest | None:
    """The image ``ref`` as a store object, made once per layer here and pushed to ``store`` (if any)
    unless it has it. None: an image of more than one layer (a registry image), which is not kept.
    ``look_in``: a store whose object of that layer is fetched (verified) rather than packed again (a
    fresh REPRO_HOME: `docker save` + zstd of 250 MB, then an upload the store never needed)."""
    layer = layer_of(client, ref)
    if layer is None:
        return None
    found = _local(home, layer) or (in_store(look_in, layer, home, log) if look_in is not None else None)
    manifest = found or _make(client, ref, layer, home, log)
    if store is not None:
        stored.push_image(store, home.images / f"{manifest.sha256}.tar.zst", manifest, log=log)
    return manifest


def _local(home: Home, layer: str) -> ImageManifest | None:
    index = home.images / f"layer-{layer}"
    if not index.is_file():
        return None
    sha = index.read_text().strip()
    obj, meta = home.images / f"{sha}.tar.zst", home.images / f"{sha}.json"
    if not (re.fullmatch(r"[0-9a-f]{64}", sha) and obj.is_file() and meta.is_file()):
        return None
    manifest = stored.parse_manifest(meta.read_bytes(), str(meta))
    if manifest.rootfs_sha256 != layer or obj.stat().st_size != manifest.size:
        return None
    return manifest


def in_store(store: Store, layer: str, home: Home, log) -> ImageManifest | None:
    """The image object of ``store`` whose root file system is ``layer`` (found by its manifests, each
    checked), fetched into ``REPRO_HOME/images`` (hashed before it is kept) and indexed by its layer; None
    when the store has none whole. A corrupt object is said and passed over (the caller packs it again,
    and a push replaces it)."""
    for info in store.list(layout.prefix(layout.Kind.IMAGE_MANIFEST)):
        key = layout.parse_as(info.key, layout.Kind.IMAGE_MANIFEST)
        if key is None:
            continue
        try:
            manifest = stored.read_manifest(store, key.digest)
        except (ReproError, StoreObjectMissing):  # unreadable, invalid or corrupt: not this one
            continue
        found = store.stat(layout.image(manifest.sha256))
        if manifest.rootfs_sha256 != layer or found is None or found.size != manifest.size:
            continue
        log(f"the root file system {layer[:12]} is the image object {manifest.sha256[:12]} of {store.uri}: fetching it")
        try:
            stored.fetch_image(store, manifest.sha256, home.images / f"{manifest.sha256}.tar.zst")
        except (IntegrityError, StoreObjectMissing) as exc:  # corrupt, or gone since it was listed
            log(f"{exc}; packing the image here instead")
            return None
        atomic_write(home.images / f"{manifest.sha256}.json", manifest.to_json(), mode=0o644)
        atomic_write(home.images / f"layer-{layer}", manifest.sha256 + "\n", mode=0o644)
        return manifest
    return None


def _make(client, ref: str, layer: str, home: Home, log) -> ImageManifest:
    img = client.images.get(ref)
    log(f"packing the root file system of {ref} ({layer[:12]}) for the store")
    home.images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.images, prefix=".pack-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _save_layer(client, ref, rootfs)
        compressed = Path(tmp) / "object"
        raw_sha, sha = _compress(rootfs, compressed)
        if raw_sha != layer:
            raise InfraError(f"docker save of {ref}: its layer hashes to {raw_sha}, not its diff_id {layer}")
        facts = _facts(rootfs)
        manifest = ImageManifest(
            sha256=sha,
            size=compressed.stat().st_size,
            rootfs_sha256=raw_sha,
            rootfs_size=rootfs.stat().st_size,
            recipe=img.labels.get(images.LABEL_KEY, "") or "0",
            suite=facts["suite"],
            release_date=facts["date"],
            python=img.labels.get(images.LABEL_PYTHON) or facts["python"],
            packages=tuple(facts["packages"]),
            pip=tuple(facts["pip"]),
        )
        compressed.replace(home.images / f"{sha}.tar.zst")
    atomic_write(home.images / f"{sha}.json", manifest.to_json(), mode=0o644)
    atomic_write(home.images / f"layer-{layer}", sha + "\n", mode=0o644)
    return manifest


class _Chunks:
    """A file-like object over a generator of byte chunks (docker save's stream)."""

    def __init__(self, chunks):
        self.chunks, self.buffer = iter(chunks), bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buffer) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        n = len(self.buffer) if n < 0 else min(n, len(self.buffer))
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out


def _save_layer(client, ref: str, dest: Path) -> None:
    """The one layer of ``ref``'s `docker save` archive, written to ``dest``."""
    with tarfile.open(fileobj=_Chunks(client.api.get_image(ref)), mode="r|") as archive:  # type: ignore[call-overload]
        for member in archive:
            if member.isreg() and (member.name.endswith("/layer.tar") or member.name.startswith("blobs/sha256/")):
                body = archive.extractfile(member)
                assert body is not None, "a regular member has a body"
                with open(dest, "wb") as out:
                    shutil.copyfileobj(body, out, _CHUNK)
                if member.size > (64 << 10) or member.name.endswith("/layer.tar"):
                    return
    raise InfraError(f"docker save of {ref} holds no layer")


def _compress(src: Path, dest: Path) -> tuple[str, str]:
    """zstd ``src`` into ``dest``: (sha256 of src, sha256 of dest)."""
    raw, out = hashlib.sha256(), hashlib.sha256()

    class _Hashing:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data) -> int:
            out.update(data)
            return self.fh.write(data)

    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with (
        open(src, "rb") as fin,
        open(dest, "wb") as fout,
        compressor.stream_writer(_Hashing(fout), closefd=False) as writer,  # type: ignore[arg-type]
    ):
        for block in iter(lambda: fin.read(_CHUNK), b""):
            raw.update(block)
            writer.write(block)
    return raw.hexdigest(), out.hexdigest()


def _facts(rootfs: Path) -> dict:
    """What the root file system says of itself: suite and Release date, Debian packages, pip packages."""
    facts: dict = {"suite": images.SUITE, "date": "", "python": "", "packages": [], "pip": []}
    with tarfile.open(rootfs) as tar:
        for member in tar:
            name = member.name
            if m := _DIST_INFO.match(name + ("/" if member.isdir() else "")):
                facts["pip"].append(f"{m.group(1).replace('_', '-').lower()}=={m.group(2)}")
            elif member.isreg() and name == "./var/lib/dpkg/status":
                facts["packages"] = _dpkg(_read(tar, member))
            elif member.isreg() and name.startswith("./var/lib/apt/lists/") and name.endswith("_Release"):
                facts.update(_release(_read(tar, member)))
            elif member.issym() and name == "./usr/bin/python3":
                facts["python"] = member.linkname.rsplit("python", 1)[-1]
    facts["pip"].sort()
    return facts


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    body = tar.extractfile(member)
    return body.read(16 << 20).decode(errors="replace") if body else ""


def _dpkg(status: str) -> list[str]:
    out = []
    for para in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") and fields.get("Version") and "installed" in fields.get("Status", ""):
            out.append(f"{fields['Package']}={fields['Version']}")
    return sorted(out)


def _release(text: str) -> dict[str, str]:
    fields = dict(line.split(": ", 1) for line in text.splitlines()[:40] if ": " in line and not line.startswith(" "))
    return {k: fields[f].strip() for k, f in (("suite", "Codename"), ("date", "Date")) if fields.get(f)}


def _inflate(obj: Path, rootfs: Path, manifest: ImageManifest, where: str) -> None:
    """The object's tar, never larger than its manifest says (a record may name a zstd bomb)."""
    written = 0
    with open(obj, "rb") as fin, open(rootfs, "wb") as fout:
        reader = zstandard.ZstdDecompressor().stream_reader(fin, read_size=_CHUNK)
        try:
            for block in iter(lambda: reader.read(_CHUNK), b""):
                written += len(block)
                if written > manifest.rootfs_size:
                    raise IntegrityError(
                        f"{where}: it inflates to more than the {manifest.rootfs_size} bytes its manifest says; "
                        "it was not imported",
                        path=where,
                    )
                fout.write(block)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{where}: not a usable zstd image ({exc}); it was not imported", path=where) from None


def ensure(client, store: Store, sha256: str, home: Home, log=print) -> StoredImage:
    """The image of store object ``sha256`` in the daemon: found by its layer, or imported from the
    store's bytes (verified first)."""
    manifest = stored.read_manifest(store, sha256)
    for img in client.images.list():
        if (img.attrs.get("RootFS", {}).get("Layers") or []) == [f"sha256:{manifest.rootfs_sha256}"]:
            ref = img.tags[0] if img.tags else img.id
            return StoredImage(ref, img.labels.get(images.LABEL_PYTHON) or manifest.python, sha256)
    log(f"the Docker daemon lacks the image {sha256[:12]} the run ran in: importing it from {store.uri}")
    home.images.mkdir(parents=True, exist_ok=True)
    obj = home.images / f"{sha256}.tar.zst"
    with tempfile.TemporaryDirectory(dir=home.images, prefix=".import-") as tmp:
        stored.fetch_image(store, sha256, obj)  # hashed before it is kept: exit 3 naming the key
        rootfs = Path(tmp) / "rootfs.tar"
        _inflate(obj, rootfs, manifest, f"{store.uri}/{layout.image(sha256)}")
        ref = f"{REPOSITORY}:{sha256[:24]}"
        client.api.import_image_from_file(
            str(rootfs),
            repository=REPOSITORY,
            tag=sha256[:24],
            changes=[
                f"ENV PATH={images.SYSTEM_PATH}",
                f"LABEL {images.LABEL_KEY}={manifest.recipe}",
                f"LABEL {images.LABEL_PYTHON}={manifest.python}",
                f"LABEL {LABEL_OBJECT}={sha256}",
                'CMD ["python3"]',
            ],
        )
    if layer_of(client, ref) != manifest.rootfs_sha256:
        client.images.remove(ref, force=True)
        raise IntegrityError(
            f"{store.uri}: the image {sha256} does not unpack to the root file system its manifest names "
            f"({manifest.rootfs_sha256}); it was removed from the daemon",
            path=str(obj),
        )
    atomic_write(home.images / f"{sha256}.json", manifest.to_json(), mode=0o644)
    atomic_write(home.images / f"layer-{manifest.rootfs_sha256}", sha256 + "\n", mode=0o644)
    return StoredImage(ref, manifest.python, sha256)
