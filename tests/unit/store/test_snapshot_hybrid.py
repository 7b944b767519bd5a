"""push_hybrid_record: a `repro bisect` hybrid's record lands with what it names that the store lacks
(its environments' locks and package files, its code package) uploaded from this machine, never moves
`latest`, and is refused whole when it names an object neither the store nor this machine has."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from metaflow_repro.env.cache import PackageCache
from metaflow_repro.errors import InfraError
from metaflow_repro.model.record import Hybrid
from metaflow_repro.settings import load_settings
from metaflow_repro.store import layout, open_store
from metaflow_repro.store.snapshot import named_objects, push_hybrid_record
from tests.unit.model.test_record import ENV, make_record


def test_a_hybrid_lands_with_the_objects_only_this_machine_has(tmp_path):
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    store = open_store(f"file://{tmp_path / 'store'}")
    code = b"code package bytes"
    sha = hashlib.sha256(code).hexdigest()
    settings.home.code_package(sha).parent.mkdir(parents=True, exist_ok=True)
    settings.home.code_package(sha).write_bytes(code)
    record = replace(make_record(), run_id="2", code_sha256=sha, replay_of="MyFlow/1", hybrid=Hybrid("ab" * 32))
    numpy, requests = sorted(ENV.packages, key=lambda p: p.name)
    store.put_bytes(layout.package(requests.sha256, requests.file), b"the bisected run's")
    store.put_bytes(layout.artifact("1" * 40), b"the bisected run's")
    key = layout.record(layout.flow_dir(record.flow, record.identity), "2")
    with pytest.raises(InfraError, match=f"cannot record MyFlow/2 in .*: missing packages/.*/{numpy.file}"):
        push_hybrid_record(record, store, settings)  # numpy is neither there nor in the package cache here
    assert not store.exists(key)
    data = b"numpy wheel"
    numpy = replace(numpy, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    PackageCache(settings.home.packages).admit(numpy, lambda path: path.write_bytes(data))
    env = replace(ENV, packages=(requests, numpy))
    record = replace(record, envs={env.env_id: env})
    assert push_hybrid_record(record, store, settings) == key
    assert all(store.exists(k) for k in named_objects(record))
    assert (
        store.get_bytes(layout.code(sha)) == code and store.get_bytes(layout.package(numpy.sha256, numpy.file)) == data
    )
    assert not store.exists(layout.latest(layout.flow_dir(record.flow, record.identity)))  # never a baseline


def test_what_only_the_store_has_is_leased_and_looked_for_again_before_the_record(tmp_path):
    """A hybrid names objects only the store has (the bisected run's): they are in the push's lease, and one
    that a gc deleted before the lease landed is caught before the record, which would otherwise name it."""
    import json

    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    store = open_store(f"file://{tmp_path / 'store'}")
    record = replace(make_record(), run_id="2", replay_of="MyFlow/1", hybrid=Hybrid("ab" * 32))
    for k in named_objects(record):
        store.put_bytes(k, b"the bisected run's")
    artifact = layout.artifact("1" * 40)
    leases: list[list[str]] = []
    put = store.put_bytes

    def racing_gc(key, data, *args, **kwargs):
        if key.startswith("leases/"):
            leases.append(json.loads(data)["keys"])
            store.delete(artifact)  # gc swept it just before the lease landed
        return put(key, data, *args, **kwargs)

    store.put_bytes = racing_gc  # type: ignore[method-assign]
    key = layout.record(layout.flow_dir(record.flow, record.identity), "2")
    with pytest.raises(InfraError, match=f"{artifact} disappeared from it during the push"):
        push_hybrid_record(record, store, settings)
    assert not store.exists(key)
    assert artifact in leases[0] and layout.package(ENV.packages[0].sha256, ENV.packages[0].file) in leases[0]
