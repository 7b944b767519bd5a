"""Verify: re-hash every object the records of a store name, and (asked for) every file of the local
package cache, evicting damaged ones so they are fetched again when next needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metaflow_repro.model.record import RunRecord, replay_problems
from metaflow_repro.operations.records import listing, load
from metaflow_repro.settings import Settings
from metaflow_repro.store import Store
from metaflow_repro.store.snapshot import verify, verify_cache


@dataclass(frozen=True)
class CacheCheck:
    evicted: list[Path]  # damaged files, removed
    checked: int


@dataclass(frozen=True)
class StoreCheck:
    """Records that could not be read (key, why), and each readable record's problems (none: intact)."""

    broken: list[tuple[str, str]]
    results: list[tuple[str, list[str]]]

    @property
    def bad(self) -> int:
        """How many records are unreadable or have problems."""
        return len(self.broken) + sum(1 for _, problems in self.results if problems)


def check_cache(settings: Settings) -> CacheCheck:
    evicted, checked = verify_cache(settings)
    return CacheCheck(evicted, checked)


def check_store(store: Store, ref: str | None = None) -> StoreCheck:
    """One run (``ref``) or every run of the store. The store must exist: a typo in its URI must not
    pass as an empty, healthy store."""
    store.require_existing()
    if ref:
        records, broken = [load(store, ref)], []
    else:
        found = listing(store)
        records, broken = found.records, found.broken
    return StoreCheck(broken, [(r.ref, record_problems(r, store)) for r in records])


def record_problems(record: RunRecord, store: Store) -> list[str]:
    """What replay would refuse in the record itself (``replay_problems``: the very check replay makes
    before it fetches anything), then every object it names that is missing or damaged."""
    return [f"cannot be replayed: {p}" for p in replay_problems(record)] + verify(record, store)
