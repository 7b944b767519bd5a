"""Batch staging (repro.executors.batch._put_missing) on a real folder store: an object this host
verified (or uploaded) costs one stat while it stays as verified; one rewritten since is hashed again,
and a same-size corrupt one is replaced with the verified local copy (as `repro push` does)."""

from __future__ import annotations

import hashlib
import os

from repro.executors.batch import StagingLedger, _put_missing
from repro.settings import Home
from repro.store import LocalStore


class CountingStore(LocalStore):
    """A folder store that counts how often an object's bytes are hashed (read whole)."""

    hashed = 0

    def sha256(self, key):
        self.hashed += 1
        return super().sha256(key)


def test_a_verified_object_is_hashed_once_and_a_same_size_corrupt_one_is_replaced(tmp_path):
    data = b"a package file\n" * 100
    sha = hashlib.sha256(data).hexdigest()
    local = tmp_path / "six-1.16.0-py2.py3-none-any.whl"
    local.write_bytes(data)
    store = CountingStore(str(tmp_path / "store"))
    key = f"packages/sha256/{sha[:2]}/{sha}/{local.name}"
    logs: list[str] = []
    ledger = StagingLedger(Home(tmp_path / "home"), logs.append)

    _put_missing(store, key, local, sha, ledger)  # uploaded: known from now on
    _put_missing(store, key, local, sha, ledger)
    assert store.hashed == 0 and (tmp_path / "store" / key).read_bytes() == data

    # another host (or a new REPRO_HOME) stages the same object: hashed once, then known
    other = StagingLedger(Home(tmp_path / "other-home"))
    _put_missing(store, key, local, sha, other)
    _put_missing(store, key, local, sha, other)
    assert store.hashed == 1 and not other.replaced

    # same size, other bytes, written later: no longer what the ledger verified -> hashed and replaced
    path = tmp_path / "store" / key
    path.write_bytes(data[:-1] + b"X")
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 5))
    _put_missing(store, key, local, sha, ledger)
    assert path.read_bytes() == data
    assert ledger.replaced == [key] and any(f"{key} is corrupt" in m and "replaced" in m for m in logs)
    _put_missing(store, key, local, sha, ledger)
    assert store.hashed == 2  # the replacement is known again
