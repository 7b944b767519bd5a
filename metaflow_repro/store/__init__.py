"""Stores: where snapshots live. One interface (``Store``), two backends (file://, s3://)."""

from __future__ import annotations

from metaflow_repro.errors import BadInput
from metaflow_repro.store.base import Store, StoreObjectMissing
from metaflow_repro.store.local import LocalStore


def open_store(uri: str) -> Store:
    if uri.startswith("s3://"):
        from .s3 import S3Store

        return S3Store(uri)
    if uri.startswith("file://") or "://" not in uri:
        return LocalStore(uri)
    raise BadInput(f"unsupported store {uri!r}: use file:///path/to/folder or s3://bucket/prefix")


__all__ = ["LocalStore", "Store", "StoreObjectMissing", "open_store"]
