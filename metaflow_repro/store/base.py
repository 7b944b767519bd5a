"""The store interface. Objects are immutable: ``put`` of an existing key is skipped."""

from __future__ import annotations

import builtins
import hashlib
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.errors import InfraError


class StoreObjectMissing(InfraError):
    """A key that should be in the store is not."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # epoch seconds


class Store(ABC):
    uri: str

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or None if there is no such object."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abstractmethod
    def touch(self, key: str) -> None:
        """Refresh an object's modification time (so gc's grace period protects it again)."""

    @abstractmethod
    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        """Upload a file so that the key appears whole or not at all. ``sha256``: the file's hash,
        when the caller knows it (a backend may have the server check it)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> None:
        """Download to ``dest`` (written whole or not at all). Raises StoreObjectMissing."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    def chunks(self, key: str, size: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes as they download, ``size`` at a time, for a caller that checks them as
        they come (nothing is written here). Raises StoreObjectMissing (when first iterated). The default
        downloads to a temporary file first; backends that can stream do."""
        with tempfile.TemporaryDirectory(prefix="repro-chunks-") as tmp:
            target = Path(tmp) / "object"
            self.get_file(key, target)
            with open(target, "rb") as fh:
                yield from iter(lambda: fh.read(size), b"")

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def sha256(self, key: str) -> str | None:
        """The sha256 (hex) of an object's bytes, or None if there is no such object. The default
        downloads and hashes; backends that know a verified checksum answer without a download."""
        h = hashlib.sha256()
        with tempfile.TemporaryDirectory(prefix="repro-hash-") as tmp:
            target = Path(tmp) / "object"
            try:
                self.get_file(key, target)
            except StoreObjectMissing:
                return None
            with open(target, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()

    def require_existing(self) -> None:
        """Raise ``BadInput`` if the store does not exist at all (a typo in its URI), so a read-only
        command never reports an empty, non-existent store as fine."""
        return None  # a store that creates itself on first write (a local folder) always exists

    def abort_stale_uploads(self, older_than: float) -> builtins.list[str]:
        """Remove what interrupted uploads left (unfinished multipart uploads, partial files) that is
        older than ``older_than`` seconds; return what was removed."""
        return []

    def __str__(self) -> str:
        return self.uri
