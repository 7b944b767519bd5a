"""What a run ran on: interpreter snapshots (content-addressed in the store) and the executor. Pure.

An ``InterpreterSnapshot`` names a tarball ``pythons/<sha256>.tar.zst`` (``.tar.gz`` for older ones and Batch's; the interpreter's install
prefix: binary, shared library and standard library, without site-packages) and says where it
was installed (``prefix``), which file in it is the interpreter (``executable``) and the digest of
its ``interpreter_facts`` (``fingerprint``), so a restored copy can be proven to be the same one.
The store keeps the same document as ``pythons/<sha256>.json``; a record carries it too.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from metaflow_repro.model import validate as v
from metaflow_repro.model.findings import Choice

SNAPSHOT_SCHEMA = "repro.python-snapshot"
_SNAPSHOT_KEYS = frozenset({"schema", "sha256", "size", "python", "prefix", "executable", "fingerprint", "compression"})
#: how a snapshot's tar is compressed: gzip (``pythons/<sha256>.tar.gz``, snapshots made before zstd ones,
#: and Batch's: its job bootstrap has only the standard library) or zstd (``pythons/<sha256>.tar.zst``)
GZIP, ZSTD = "gzip", "zstd"
_VERSION = re.compile(r"^3\.[0-9]+\.[0-9]+$")
#: an install prefix: absolute, normalized, plain components (it becomes a folder on the machine)
_PREFIX = re.compile(r"^(/[A-Za-z0-9_.+\-]+)+$")


@dataclass(frozen=True)
class InterpreterSnapshot:
    sha256: str  # of the tarball
    size: int
    python: str  # exact version, "3.11.7"
    prefix: str  # where it was installed, and is restored: "/root/.pyenv/versions/3.11.7"
    executable: str  # relative to prefix: "bin/python3.11"
    fingerprint: str  # sha256 of the interpreter's facts (probe.interpreter_facts)
    compression: str = GZIP  # GZIP or ZSTD (written only when ZSTD: older readers see what they always did)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": SNAPSHOT_SCHEMA,
            "sha256": self.sha256,
            "size": self.size,
            "python": self.python,
            "prefix": self.prefix,
            "executable": self.executable,
            "fingerprint": self.fingerprint,
        }
        if self.compression != GZIP:
            out["compression"] = self.compression
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @property
    def file_name(self) -> str:
        """The tarball's name, in the store's ``pythons/`` and REPRO_HOME's: ``<sha256>.tar.gz|.tar.zst``."""
        return f"{self.sha256}.tar.{'zst' if self.compression == ZSTD else 'gz'}"

    @property
    def interpreter_path(self) -> str:
        return posixpath.join(self.prefix, self.executable)

    @classmethod
    def from_dict(cls, d: Any, at: v.At) -> InterpreterSnapshot:
        d = v.of_type(d, dict, at)
        v.only(d, _SNAPSHOT_KEYS, at)
        if d.get("schema", SNAPSHOT_SCHEMA) != SNAPSHOT_SCHEMA:
            (at / "schema").fail(d.get("schema"), repr(SNAPSHOT_SCHEMA))
        prefix = v.need(d, "prefix", str, at)
        if not _PREFIX.match(prefix) or any(p in (".", "..") for p in prefix.split("/")[1:]):
            (at / "prefix").fail(prefix, "an absolute, normalized install prefix")
        size = v.need(d, "size", int, at)
        if isinstance(size, bool) or size < 0:
            (at / "size").fail(size, "a size in bytes")
        return cls(
            sha256=v.hex_digest(v.need(d, "sha256", str, at), 64, at / "sha256"),
            size=size,
            python=v.matching(v.need(d, "python", str, at), _VERSION, "a Python version (3.X.Y)", at / "python"),
            prefix=prefix,
            executable=v.relative_path(v.need(d, "executable", str, at), at / "executable"),
            fingerprint=v.hex_digest(v.need(d, "fingerprint", str, at), 64, at / "fingerprint"),
            compression=_compression(v.opt(d, "compression", str, GZIP, at), at / "compression"),
        )


def _compression(value: str, at: v.At) -> str:
    if value not in (GZIP, ZSTD):
        at.fail(value, f"{GZIP!r} or {ZSTD!r}")
    return value


def parse_snapshot(text: str | bytes, where: str) -> InterpreterSnapshot:
    doc = v.load_json(text, v.At(where), "an interpreter snapshot manifest", max_bytes=1 << 20)
    return InterpreterSnapshot.from_dict(doc, v.At(where))


def facts_fingerprint(facts: dict[str, Any]) -> str:
    """The digest of an interpreter's facts (what makes two interpreters the same one)."""
    import hashlib

    keep = {k: facts[k] for k in sorted(facts) if k not in ("executable", "prefix", "digest")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ExecutorKind(Choice):
    """Where a run ran."""

    LOCAL = "local"  # a process on the machine that recorded it
    DOCKER = "docker"  # a fresh container (``repro replay --on docker``)
    BATCH = "batch"  # AWS Batch


@dataclass(frozen=True)
class Executor:
    kind: ExecutorKind = ExecutorKind.LOCAL
    image: str = ""  # container image id (sha256:...), for docker and batch
    #: the store object ``images/<sha256>.tar.zst`` of the image's root file system the run ran in ("": none)
    image_sha256: str = ""
    #: the image the user named (``--image``) instead of the one the replayed record ran in ("": none)
    image_given: str = ""
    #: a registry image's manifest digest (``sha256:<hex>``), when ``image`` names one that is no store
    #: object (a Batch job's foreign image): ``<repository>@<digest>`` runs exactly it again ("": unknown)
    image_digest: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"kind": ExecutorKind(self.kind).value, "image": self.image}
        optional = (("image_sha256", self.image_sha256), ("image_given", self.image_given))
        out.update({k: x for k, x in (*optional, ("image_digest", self.image_digest)) if x})
        return out

    @classmethod
    def from_dict(cls, d: Any, at: v.At) -> Executor:
        d = v.of_type(d, dict, at)
        v.only(d, frozenset({"kind", "image", "image_sha256", "image_given", "image_digest"}), at)
        image, given = v.opt(d, "image", str, "", at), v.opt(d, "image_given", str, "", at)
        for key, value in (("image", image), ("image_given", given)):
            if value and not _IMAGE.fullmatch(value):
                (at / key).fail(value, "an image id or name")
        sha, digest = v.opt(d, "image_sha256", str, "", at), v.opt(d, "image_digest", str, "", at)
        if digest and not IMAGE_DIGEST.fullmatch(digest):
            (at / "image_digest").fail(digest, "an image digest sha256:<64 hex digits>")
        return cls(
            kind=v.choice(v.need(d, "kind", str, at), ExecutorKind, at / "kind"),
            image=image,
            image_sha256=v.hex_digest(sha, 64, at / "image_sha256") if sha else "",
            image_given=given,
            image_digest=digest,
        )


_IMAGE = re.compile(r"^[A-Za-z0-9_.:/@\-]{1,256}$")
#: a registry manifest digest, as ``<repository>@<digest>`` names an image
IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
