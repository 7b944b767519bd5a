"""Container images in the store: a root file system as ``images/<sha256>.tar.zst`` (the zstd'd tar
``docker import`` reads) and its manifest ``images/<sha256>.json`` beside it.

The object is named by the sha256 of its own bytes; the manifest says what is inside: the sha256 and
size of the uncompressed tar (the image's one layer, as Docker names it: its ``diff_id``), the recipe
key it was built from, the Debian suite and the date of the package archive's release file it was
built against, every Debian package with its version, the pip packages and the system Python. A record
of a run made in a container names the object (``Executor.image_sha256``), so a replay months later
imports these bytes instead of what debootstrap would build that day.

A manifest read from the store is untrusted input: decoded strictly here, and the object it describes is
used only once its bytes hash to the name the record gives.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from metaflow_repro.env.cache import sha256_file
from metaflow_repro.errors import IntegrityError
from metaflow_repro.model import validate as v
from metaflow_repro.store import layout
from metaflow_repro.store.base import Store, StoreObjectMissing

SCHEMA = "repro.image"
_KEYS = frozenset(
    {
        "schema",
        "sha256",
        "size",
        "rootfs_sha256",
        "rootfs_size",
        "recipe",
        "suite",
        "release_date",
        "python",
        "packages",
        "pip",
    }
)
_RECIPE = re.compile(r"[0-9a-f]{1,64}")
_WORD = re.compile(r"[A-Za-z0-9_.:+~\-]{1,100}")
_DATE = re.compile(r"[A-Za-z0-9 ,:+\-]{0,64}")
_PYTHON = re.compile(r"3\.[0-9]{1,2}")
#: a Debian package with its version (name=version), a pip pin (name==version)
_PACKAGE = re.compile(r"[A-Za-z0-9_.+\-]{1,100}==?[A-Za-z0-9_.:+~\-]{1,100}")
MAX_MANIFEST_BYTES = 1 << 20
#: the largest root file system an image object may inflate to (repro's base image: 250 MB)
MAX_ROOTFS_BYTES = 16 << 30


@dataclass(frozen=True)
class ImageManifest:
    sha256: str  # of the .tar.zst object
    size: int  # of the object
    rootfs_sha256: str  # of the uncompressed tar: the image layer's diff_id once imported
    rootfs_size: int
    recipe: str  # the recipe key the image was built from
    suite: str  # the Debian suite (bookworm)
    release_date: str  # the Date of the suite's Release file it was built against
    python: str  # the image's system python3, major.minor
    packages: tuple[str, ...] = ()  # every Debian package, name=version
    pip: tuple[str, ...] = ()  # pip packages added for repro's bootstrap code, name==version

    def to_json(self) -> str:
        doc: dict[str, Any] = {"schema": SCHEMA, **asdict(self)}
        doc["packages"], doc["pip"] = list(self.packages), list(self.pip)
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def parse_manifest(data: bytes | str, where: str) -> ImageManifest:
    """A manifest from the store or REPRO_HOME, every field checked (``BadInput`` naming ``where``)."""
    at = v.At(where)
    doc = v.load_json(data, at, "an image manifest", max_bytes=MAX_MANIFEST_BYTES)
    doc = v.of_type(doc, dict, at)
    v.only(doc, _KEYS, at)
    if doc.get("schema") != SCHEMA:
        (at / "schema").fail(doc.get("schema"), SCHEMA)

    def size(key: str) -> int:
        n = v.need(doc, key, int, at)
        if isinstance(n, bool) or not 0 <= n <= MAX_ROOTFS_BYTES:
            (at / key).fail(n, f"a size in bytes, at most {MAX_ROOTFS_BYTES}")
        return n

    def word(key: str, pattern: re.Pattern[str], what: str) -> str:
        value = v.need(doc, key, str, at)
        if not pattern.fullmatch(value):  # fullmatch: "$" would let a newline end it
            (at / key).fail(value, what)
        return value

    def packages(key: str) -> tuple[str, ...]:
        items = v.list_of(v.opt(doc, key, list, [], at), at / key, v.string)
        for i, item in enumerate(items):
            if not _PACKAGE.fullmatch(item):
                (at / key / str(i)).fail(item, "name=version")
        return tuple(items)

    return ImageManifest(
        sha256=v.hex_digest(v.need(doc, "sha256", str, at), 64, at / "sha256"),
        size=size("size"),
        rootfs_sha256=v.hex_digest(v.need(doc, "rootfs_sha256", str, at), 64, at / "rootfs_sha256"),
        rootfs_size=size("rootfs_size"),
        recipe=word("recipe", _RECIPE, "a recipe key"),
        suite=word("suite", _WORD, "a Debian suite"),
        release_date=word("release_date", _DATE, "a date"),
        python=word("python", _PYTHON, "a Python major.minor"),
        packages=packages("packages"),
        pip=packages("pip"),
    )


def push_image(store: Store, path: Path, manifest: ImageManifest, log=lambda m: None) -> bool:
    """Put the object ``path`` (whose sha256 the manifest gives) and its manifest in the store, unless
    both are there already. True: something was uploaded.

    The object is written before its manifest, and the manifest only once the object is there whole, so
    a manifest with these bytes beside an object of the right size says a push finished: the object is
    then not downloaded again to be hashed (88 MB, on every `--on docker` replay). Its bytes are proven
    where they are used: an import hashes them first (exit 3 naming the key), and `repro store verify`."""
    key, mkey = layout.image(manifest.sha256), layout.image_manifest(manifest.sha256)
    body = manifest.to_json().encode()
    try:
        same = store.get_bytes(mkey) == body
    except StoreObjectMissing:
        same = False
    info = store.stat(key)
    if same and info is not None and info.size == manifest.size:
        return False
    if info is None or info.size != manifest.size or store.sha256(key) != manifest.sha256:
        log(f"pushing the image {manifest.sha256[:12]} ({manifest.size / 1e6:.0f} MB) to {store.uri}/{key}")
        store.put_file(key, path, sha256=manifest.sha256)
    store.put_bytes(mkey, body)
    return True


def read_manifest(store: Store, sha256: str) -> ImageManifest:
    """The manifest of image object ``sha256`` in the store, checked; it must describe that object
    (else ``IntegrityError``, exit 3, naming it)."""
    key = layout.image_manifest(sha256)
    manifest = parse_manifest(store.get_bytes(key), f"{store.uri}/{key}")
    if manifest.sha256 != sha256:
        raise IntegrityError(
            f"store object {store.uri}/{key} is corrupt: it describes the image {manifest.sha256}, not {sha256}; "
            "it was not used",
            path=f"{store.uri}/{key}",
        )
    return manifest


def fetch_image(store: Store, sha256: str, dest: Path) -> ImageManifest:
    """Download the image object ``sha256`` to ``dest``, hashed before it is renamed into place: a
    corrupt object is an ``IntegrityError`` (exit 3) naming its key, and nothing is kept."""
    manifest = read_manifest(store, sha256)
    key = layout.image(sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        target = Path(tmp) / "object"
        store.get_file(key, target)
        got = sha256_file(target)
        if got != sha256:
            raise IntegrityError(
                f"store object {store.uri}/{key} is corrupt: sha256 {got}, the record says {sha256}; "
                "the image was not imported",
                path=f"{store.uri}/{key}",
            )
        target.replace(dest)
    return manifest


def object_problem(store: Store, key: str, sha256: str) -> str | None:
    """What `repro store verify` says of an image manifest ``key`` of object ``sha256`` (None: fine)."""
    try:
        read_manifest(store, sha256)
    except StoreObjectMissing:
        return f"{key}: missing"
    except (v.Invalid, IntegrityError) as exc:
        return f"{key}: {exc}"
    return None
