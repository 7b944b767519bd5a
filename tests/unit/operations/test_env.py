"""``refetch_from``: a replay's second source of package files, the store's verified copy."""

from __future__ import annotations

import hashlib

import pytest

from metaflow_repro.env.cache import PackageCache
from metaflow_repro.model.lock import Package
from metaflow_repro.operations.env import refetch_from
from metaflow_repro.settings import Home, Settings
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.snapshot import StoreObjectCorrupt


def test_a_lost_package_file_comes_back_from_the_store_verified(tmp_path):
    data = b"wheel bytes\n" * 100
    pkg = Package(
        "six", "1.16.0", "pypi", "six-1.16.0-py3-none-any.whl", "", hashlib.sha256(data).hexdigest(), len(data)
    )
    store = LocalStore(str(tmp_path / "store"))
    store.put_bytes(layout.package(pkg.sha256, pkg.file), data)
    settings = Settings(home=Home(tmp_path / "home"), store=store.uri)
    said: list[str] = []
    refetch_from(store, settings, said.append)(pkg, "replay of F/1")
    cache = PackageCache(settings.home.packages)
    assert cache.path(pkg).read_bytes() == data and cache.verify(pkg)
    assert said and "six-1.16.0-py3-none-any.whl" in said[0] and store.uri in said[0]
    cache.path(pkg).unlink()
    store.put_bytes(layout.package(pkg.sha256, pkg.file), data[:-1] + b"!")  # the store's copy rotted too
    with pytest.raises(StoreObjectCorrupt, match="is corrupt"):
        refetch_from(store, settings, said.append)(pkg, "replay of F/1")
    assert not cache.path(pkg).exists()
