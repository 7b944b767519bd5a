"""Portable replay bundles (``metaflow_repro.store.bundle``, the format): write one from a run in a store
(`repro bundle REF -o run.repro`), check one (`repro bundle verify`), load one into a store (`repro store
import`), and replay one with no store (`repro replay run.repro`): it is verified and imported into a
private ``file://`` store in this process's scratch folder (``REPRO_HOME/tmp/<owner>``), replayed from
there, and that store is removed after."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from metaflow_repro.errors import BadInput
from metaflow_repro.model.interpreter import ExecutorKind
from metaflow_repro.model.record import RunRecord
from metaflow_repro.operations.records import load, open_named
from metaflow_repro.operations.replay import ReplayResult, replay
from metaflow_repro.settings import Settings
from metaflow_repro.store import Store, layout
from metaflow_repro.store.bundle import Contents, Manifest, closure, read, write
from metaflow_repro.store.local import LocalStore
from metaflow_repro.store.snapshot import PushResult, Upload, push_objects

Log = Callable[[str], None]


@dataclass(frozen=True)
class Bundled:
    record: RunRecord
    path: Path
    manifest: Manifest
    size: int  # the bundle's bytes on disk
    seconds: float

    @property
    def parts(self) -> int:
        """The sum of its members' sizes (what a store holds for the run)."""
        return self.manifest.size


@dataclass(frozen=True)
class Imported:
    record: RunRecord
    store: str  # the store's URI
    result: PushResult  # objects written and skipped (already there), by kind

    @property
    def written(self) -> int:
        return sum(self.result.uploaded.values())

    @property
    def skipped(self) -> int:
        return sum(self.result.skipped.values())


def bundle(
    ref: str, store_uri: str | None, settings: Settings, output: Path, with_image: bool = False, log: Log = print
) -> Bundled:
    """Write the closure of run ``ref`` (from the store) to ``output``: the objects a push uploads, each
    checked against the record, then the record; with ``with_image``, the run's image object too."""
    started = time.monotonic()
    output = Path(output)
    if output.is_dir():
        raise BadInput(f"{output} is a folder; give the bundle's file name, e.g. -o {output / 'run.repro'}")
    if not output.parent.is_dir():
        raise BadInput(f"{output.parent} does not exist; create it first or give another -o")
    store = open_named(settings, store_uri)
    store.require_existing()
    record = load(store, ref)
    extra = image_keys(record, store, log) if with_image else ()
    with tempfile.TemporaryDirectory(prefix="repro-bundle-") as tmp:
        manifest = write(output, closure(record, store, Path(tmp), extra))
    return Bundled(record, output, manifest, output.stat().st_size, time.monotonic() - started)


def image_keys(record: RunRecord, store: Store, log: Log) -> tuple[str, ...]:
    """``--with-image``: a run made in a container names its image (``executor.image_sha256``), which is
    part of its closure already (and so of every bundle of it); a run made here names none, said."""
    digest = record.executor.image_sha256
    if not digest and record.executor.image and record.executor.kind is ExecutorKind.BATCH:
        log(
            f"--with-image: run {record.ref} ran on AWS Batch in {record.executor.image}, a registry's image, not one "
            "of repro's in the store: the bundle holds none (a replay of it on Batch pulls it from its registry)"
        )
        return ()
    if not digest:
        log(f"--with-image: run {record.ref} ran in no container image; the bundle holds none")
        return ()
    keys = (layout.image(digest), layout.image_manifest(digest))
    missing = [key for key in keys if not store.exists(key)]
    if missing:
        raise BadInput(f"store {store.uri} lacks {', '.join(missing)}, the image run {record.ref} ran in")
    return keys


def verify(path: Path) -> Contents:
    """Every member of the bundle checked (``store.bundle.read``); raises on the first problem."""
    return read(_existing(path))


def import_bundle(path: Path, store: Store, log: Log = print) -> Imported:
    """Load a verified bundle into ``store`` as a push would: objects already there with these bytes are
    skipped, the others written under a lease, the record last (``latest`` moves as for a push)."""
    with tempfile.TemporaryDirectory(prefix="repro-import-") as tmp:
        contents = read(_existing(path), Path(tmp))
        uploads = [
            Upload(m.key.split("/", 1)[0], m.key, contents.files[m.key], m.sha256, m.size)
            for m in contents.manifest.members
            if m.key != contents.manifest.record
        ]
        result = push_objects(contents.record, store, uploads, log=lambda m: None)
    log(f"imported {contents.record.ref} into {store.uri}: {result.summary()}")
    return Imported(contents.record, store.uri, result)


def import_into(path: Path, store_uri: str | None, settings: Settings, log: Log = print) -> Imported:
    """`repro store import`: into the store named (else the settings' store)."""
    return import_bundle(path, open_named(settings, store_uri), log)


def replay_bundle(
    path: Path,
    settings: Settings,
    on: str = ExecutorKind.LOCAL.value,
    log: Log = print,
    extra_args: tuple[str, ...] = (),
    keep: bool = False,
    image: str | None = None,
) -> ReplayResult:
    """Replay the run a bundle holds, with no store: imported into a private store in the scratch folder,
    replayed from there (``replay``), that store removed after. The replay's record is kept in REPRO_HOME."""
    with tempfile.TemporaryDirectory(prefix="repro-bundle-store-") as tmp:
        store = LocalStore(tmp)
        log(f"replaying from bundle {path}: verifying it and loading it into a private store ({store.uri})")
        imported = import_bundle(path, store, log)
        record = imported.record
        ref = f"{layout.flow_dir(record.flow, record.identity)}/{record.run_id}"
        result = replay(ref, store.uri, settings, on=on, log=log, extra_args=extra_args, keep=keep, image=image)
    return replace(result, recorded="")  # that store is gone: the record saved in REPRO_HOME is what stays


def _existing(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such bundle file")
    return path
