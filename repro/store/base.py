"""The store interface. Objects are immutable: ``put`` of an existing key is skipped."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from repro.errors import InfraError


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
    def put_file(self, key: str, path: Path) -> None:
        """Upload a file so that the key appears whole or not at all."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> None:
        """Download to ``dest`` (written whole or not at all). Raises StoreObjectMissing."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def __str__(self) -> str:
        return self.uri
