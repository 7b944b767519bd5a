"""gc in a loop against 4 concurrent pushes to a real S3 endpoint (moto's server): afterwards every
recorded run verifies completely (issue 11, item 4). The race runs until it did ``ENOUGH`` of each kind
of work (gc runs that deleted something, pushes, pushes killed half-way), so a loaded machine races
longer instead of less; REPRO_GC_RACE_SECONDS (default 120) caps it. A gc that deletes what a push in
flight names fails within the first few pushes (planted: the lease re-check in ``_sweep`` removed)."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from metaflow_repro.operations.gc import gc
from metaflow_repro.store import open_store
from metaflow_repro.store.snapshot import _local_objects, list_records, push, upload_one, verify
from tests.store_fakes import fake_run

SECONDS = float(os.environ.get("REPRO_GC_RACE_SECONDS", "120"))
#: the work one race does at least: a gc run lists and sweeps every unnamed key once (each a race with 4 pushes)
ENOUGH = {"gc_runs": 6, "pushes": 40, "abandoned": 10, "deleted": 1}
SEEDS = ["a", "b", "c"]  # runs share package files and code packages: pushes reuse leftovers


@pytest.mark.slow
@pytest.mark.timeout(int(SECONDS) + 600)
def test_gc_loop_against_four_concurrent_pushes_loses_nothing(tmp_path, s3_server, s3_bucket):
    uri = f"s3://{s3_bucket}/race"
    stop = threading.Event()
    errors: list[BaseException] = []
    stats = {"pushes": 0, "abandoned": 0, "gc_runs": 0, "deleted": 0}
    lock = threading.Lock()

    def pusher(worker: int) -> None:
        store = open_store(uri)
        rng = random.Random(worker)
        i = 0
        leftovers: list[str] = []
        try:
            while not stop.is_set():
                i += 1
                abandon = rng.random() < 0.3
                if abandon:
                    seed = f"orphan-{worker}-{i}"
                    leftovers.append(seed)
                elif leftovers and rng.random() < 0.6:  # a later push names what a killed one left
                    seed = leftovers.pop(0)
                else:
                    seed = rng.choice(SEEDS)
                run = fake_run(tmp_path / f"home-{worker}", run_id=f"w{worker}-{i}", seed=seed, n_packages=5)
                if abandon:  # a push killed half-way (its lease long expired): its objects stay, unnamed
                    objects = _local_objects(run.record, run.settings, {})
                    for u in objects[: len(objects) // 2]:
                        upload_one(store, u)
                    with lock:
                        stats["abandoned"] += 1
                    continue
                push(run.record, store, run.settings, jobs=4)
                with lock:
                    stats["pushes"] += 1
        except BaseException as exc:
            errors.append(exc)

    def collector() -> None:
        store = open_store(uri)
        try:
            while not stop.is_set():
                removed = gc(store, grace_seconds=0)  # no grace at all: only leases and re-checks protect
                with lock:
                    stats["gc_runs"] += 1
                    stats["deleted"] += len(removed)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(4)] + [threading.Thread(target=collector)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and not errors:
        with lock:
            if all(stats[k] >= n for k, n in ENOUGH.items()):
                break
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    store = open_store(uri)
    records = list_records(store)
    assert len(records) == stats["pushes"] and stats["pushes"] > 0 and stats["deleted"] > 0, stats
    assert all(stats[k] >= n for k, n in ENOUGH.items()), f"the race did too little in {SECONDS} s: {stats}"
    problems = {r.ref: verify(r, store) for r in records}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    print(f"gc race: {stats}")
