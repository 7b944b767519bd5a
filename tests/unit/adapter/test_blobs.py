"""Artifact blobs read from a Metaflow datastore (metaflow_repro.adapter.blobs): each is checked against its sha1
before anyone unpickles it. Metaflow's own local datastore in a temporary folder holds them."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from metaflow_repro.adapter import blobs
from metaflow_repro.errors import InfraError, IntegrityError


def _datastore(root):
    from metaflow.datastore import FlowDataStore
    from metaflow.plugins import DATASTORES

    local = next(d for d in DATASTORES if d.TYPE == "local")
    return FlowDataStore("F", storage_impl=local, ds_root=str(root))


def test_verify_returns_the_bytes_that_match_and_refuses_others_naming_both_sha1s():
    sha = hashlib.sha1(b"pickled").hexdigest()
    assert blobs.verify_sha1(b"pickled", sha, "x") == b"pickled"
    with pytest.raises(IntegrityError) as err:
        blobs.verify_sha1(b"pickled!", sha, "F/1/start/1 artifact x")
    got = hashlib.sha1(b"pickled!").hexdigest()
    assert str(err.value) == (
        f"F/1/start/1 artifact x: blob does not match its recorded sha1 {sha} (got {got}); it was not unpickled"
    )


def test_blobs_are_loaded_by_sha1_once_each(tmp_path):
    keys = [r.key for r in _datastore(tmp_path).ca_store.save_blobs([b"one", b"two"])]
    got = blobs.load("F", "local", str(tmp_path), [keys[1], keys[0], keys[1]])
    assert got == {keys[0]: b"one", keys[1]: b"two"}


def test_a_blob_changed_in_the_datastore_is_refused_before_it_is_unpickled(tmp_path):
    (key,) = [r.key for r in _datastore(tmp_path).ca_store.save_blobs([b"one"])]
    stored = tmp_path / "F" / "data" / key[:2] / key
    assert stored.is_file()
    stored.write_bytes(gzip.compress(b"planted"))
    with pytest.raises(IntegrityError, match=f"F artifact {key}: blob does not match its recorded sha1"):
        blobs.load("F", "local", str(tmp_path), [key])


def test_an_unknown_datastore_or_a_missing_blob_is_an_infrastructure_error(tmp_path):
    with pytest.raises(InfraError, match="unknown Metaflow datastore type 'ftp'"):
        blobs.load("F", "ftp", str(tmp_path), ["0" * 40])
    with pytest.raises(InfraError, match=f"cannot read artifacts of F from local datastore {tmp_path}: "):
        blobs.load("F", "local", str(tmp_path), ["0" * 40])
