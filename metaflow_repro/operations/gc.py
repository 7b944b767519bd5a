"""Garbage-collect a store: delete the objects no record names, keeping what a push in flight (a
lease) or a place's staging for a kept record's environment still needs.

The store knows records and leases; what a place staged (Batch: bootstrap manifests and the files they
name) is that place's knowledge (``Place.staged_objects``), handed to the store's gc as what else is live."""

from __future__ import annotations

from collections.abc import Sequence

from metaflow_repro import executors
from metaflow_repro.model.record import RunRecord
from metaflow_repro.store import Store, snapshot


def gc(
    store: Store, grace_seconds: float = 3600, dry_run: bool = False, stale_upload_seconds: float | None = None
) -> list[str]:
    """The keys removed (or, ``dry_run``, that would be), and the unfinished uploads aborted."""

    def staged(records: Sequence[RunRecord]) -> set[str]:
        envs = {env_id for r in records for env_id in r.envs}
        return set().union(*(place.staged_objects(store, envs) for place in executors.places().values()))

    return snapshot.gc(
        store, grace_seconds=grace_seconds, dry_run=dry_run, stale_upload_seconds=stale_upload_seconds, live=staged
    )
