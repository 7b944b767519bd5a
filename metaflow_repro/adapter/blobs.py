"""Artifact blobs (pickles) from a Metaflow datastore, verified against their sha1 before anyone
unpickles them."""

from __future__ import annotations

import hashlib

from metaflow_repro.errors import InfraError, IntegrityError


def verify_sha1(data: bytes, sha1: str, what: str) -> bytes:
    got = hashlib.sha1(data).hexdigest()
    if got != sha1:
        raise IntegrityError(f"{what}: blob does not match its recorded sha1 {sha1} (got {got}); it was not unpickled")
    return data


def load(flow: str, ds_type: str | None, ds_root: str | None, shas) -> dict[str, bytes]:
    """{sha1: pickled bytes} read from the datastore of a run; each verified."""
    from metaflow.datastore import FlowDataStore
    from metaflow.plugins import DATASTORES

    impls = [d for d in DATASTORES if ds_type == d.TYPE]
    if not impls:
        raise InfraError(f"unknown Metaflow datastore type {ds_type!r}")
    fds = FlowDataStore(flow, storage_impl=impls[0], ds_root=ds_root)
    wanted = sorted(set(shas))
    out = {}
    try:
        for key, blob in fds.ca_store.load_blobs(wanted):
            out[key] = verify_sha1(blob, key, f"{flow} artifact {key}")
    except IntegrityError:
        raise
    except Exception as exc:
        raise InfraError(
            f"cannot read artifacts of {flow} from {ds_type} datastore {ds_root}: {type(exc).__name__}: {exc}"
        ) from None
    return out
