"""The objects steps read with ``metaflow.S3``, on the host (issue 23, item 3).

Each task reports the objects it read (``metaflow_extensions/repro/plugins/s3_reads.py``, task metadata
``protocol.META_S3_READS``): URL, version id, ETag, size, sha256 of the bytes read. Here:

- ``collect`` turns those reports into the record's ``s3_inputs`` (per step) and keeps the bytes, up to
  what is left of ``input-max-bytes`` after the data files: each object is downloaded again (its
  recorded version when it has one), hashed, and kept content-addressed in ``REPRO_HOME/inputs`` only if
  it is the sha256 the step read; a push then stores it as an ``inputs/`` object;
- ``serving_folder`` lays a replay's verified copies out for its tasks (``protocol.S3_INPUTS_VAR``);
- ``current`` HEADs each recorded URL now, for input drift.

A task's report is checked like a stored record (``model/record.step_s3``): it came from the user's
code's process. S3 is reached with the store's client settings (``store/s3.S3Store``: timeouts, retries,
``AWS_ENDPOINT_URL_S3``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.errors import InfraError
from metaflow_repro.model import validate as v
from metaflow_repro.model.record import RunRecord, S3Input, StepS3, s3_input, step_s3
from metaflow_repro.settings import Home

Log = Callable[[str], None]


def task_report(metadata: dict[str, str], at: v.At) -> StepS3:
    """One task's report (empty when it read nothing), checked."""
    text = metadata.get(protocol.META_S3_READS)
    if not text:
        return StepS3()
    try:
        report = json.loads(text)
    except ValueError:
        raise InfraError(f"{at.where}: {at.path} is unreadable JSON") from None
    if not isinstance(report, dict) or not isinstance(report.get(protocol.S3_OBJECTS, []), list):
        return step_s3(report, at)  # not the shape the task writes: refused, named
    # an object the record could not hold (a URL S3 takes but the record's codec refuses) is counted, not
    # listed: it must not keep a finished run from being recorded
    objects: dict[str, S3Input] = {}
    for i, entry in enumerate(report.get(protocol.S3_OBJECTS, [])):
        try:
            got = s3_input(entry, at / "objects" / str(i))
        except v.Invalid:
            continue
        objects.setdefault(got.url, got)
    count = report.get(protocol.S3_COUNT, 0)
    count = count if isinstance(count, int) and not isinstance(count, bool) else 0
    return StepS3(
        objects=tuple(objects.values()), count=max(count, len(report.get(protocol.S3_OBJECTS, [])), len(objects))
    )


def merge(tasks_by_step: dict[str, list[dict[str, Any]]], where: str) -> dict[str, StepS3]:
    """step -> the objects its tasks read (each URL once, the first task's; steps that read none are absent)."""
    out = {}
    for step, tasks in tasks_by_step.items():
        objects: dict[str, S3Input] = {}
        unlisted = 0
        for task in tasks:
            got = task_report(task.get("metadata", {}), v.At(where, f"{step}.{protocol.META_S3_READS}"))
            unlisted += got.count - len(got.objects)
            for o in got.objects:
                if o.url not in objects or (o.sha256 and not objects[o.url].sha256):
                    objects[o.url] = o
        if objects or unlisted:
            listed = tuple(objects.values())[: protocol.S3_MAX_OBJECTS]
            out[step] = StepS3(objects=listed, count=len(objects) + unlisted)
    return out


def _client(bucket: str, clients: dict[str, Any]) -> Any:
    """A boto3 client with the store's settings (one per bucket)."""
    if bucket not in clients:
        from metaflow_repro.store.s3 import S3Store

        clients[bucket] = S3Store(f"s3://{bucket}").client
    return clients[bucket]


def _split(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


def keep(
    steps: dict[str, StepS3], home: Home, budget: int, log: Log, fetch: Callable[[S3Input, Path], None] | None = None
) -> dict[str, StepS3]:
    """``steps`` with ``stored`` set on each object whose bytes are now in ``home``'s inputs: fetched
    again (``fetch``; by default from S3), in URL order, while their total stays within ``budget``, and
    only if they are the bytes the step read."""
    fetch = fetch or _downloader({})
    wanted: dict[str, S3Input] = {}
    for s in steps.values():
        for o in s.objects:
            if o.sha256 and o.url not in wanted:
                wanted[o.url] = o
    kept: set[str] = set()
    used = 0
    for url, o in sorted(wanted.items()):
        if o.sha256 in kept:
            continue
        if used + o.size > budget:
            log(f"{url} ({o.size} bytes) is past input-max-bytes: recorded (sha256, ETag), not kept")
            continue
        if _fetch_verified(o, home.input_blob(o.sha256), fetch, log):
            kept.add(o.sha256)
            used += o.size
    return {
        step: replace(s, objects=tuple(replace(o, stored=o.sha256 in kept) for o in s.objects))
        for step, s in steps.items()
    }


def _downloader(clients: dict[str, Any]) -> Callable[[S3Input, Path], None]:
    def fetch(o: S3Input, dest: Path) -> None:
        bucket, key = _split(o.url)
        extra = {"VersionId": o.version} if o.version else {}
        _client(bucket, clients).download_file(bucket, key, str(dest), ExtraArgs=extra)

    return fetch


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_verified(o: S3Input, target: Path, fetch: Callable[[S3Input, Path], None], log: Log) -> bool:
    """Whether ``target`` now holds the bytes ``o`` names (fetched through a temporary name, checked)."""
    if target.is_file() and sha256_file(target) == o.sha256:
        return True
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".s3-", dir=target.parent)
    os.close(fd)
    try:
        try:
            fetch(o, Path(tmp))
        except Exception as exc:  # any failure: the object is recorded, not kept
            log(f"{o.url}: its bytes could not be fetched again ({type(exc).__name__}: {exc}); recorded, not kept")
            return False
        if sha256_file(tmp) != o.sha256:
            log(f"{o.url} changed since the step read it: recorded (sha256, ETag), its bytes not kept")
            return False
        os.replace(tmp, target)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def collect(
    tasks_by_step: dict[str, list[dict[str, Any]]], home: Home, budget: int, where: str, log: Log
) -> dict[str, StepS3]:
    """The record's ``s3_inputs`` from the tasks' reports (``RunInspection.task_reports()``), bytes kept."""
    steps = merge(tasks_by_step, where)
    return keep(steps, home, budget, log) if steps else {}


def serving_folder(record: RunRecord, blobs: dict[str, Path], folder: Path) -> Path | None:
    """Lay out the verified bytes ``blobs`` (url -> file) for the replay's tasks: each as a file named by
    its sha256 in ``folder``, and the manifest they read (``protocol.S3_MANIFEST``); None when none."""
    if not blobs:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    objects = record.s3_objects()
    manifest = {}
    for url, blob in sorted(blobs.items()):
        o = objects[url]
        target = folder / o.sha256
        if not target.exists():
            shutil.copyfile(blob, target)
        manifest[url] = {
            protocol.S3_SHA256: o.sha256,
            protocol.S3_SIZE: o.size,
            protocol.S3_ETAG: o.etag,
            protocol.S3_VERSION: o.version,
            protocol.S3_FILE: o.sha256,
        }
    # a listing read (get_recursive) is answered from here only if nothing the steps read is missing
    complete = not record.s3_not_kept() and all(s.count == len(s.objects) for s in record.s3_inputs.values())
    (folder / protocol.S3_COMPLETE).unlink(missing_ok=True)
    if complete:
        (folder / protocol.S3_COMPLETE).write_text("")
    tmp = folder / f".{protocol.S3_MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, sort_keys=True))
    os.replace(tmp, folder / protocol.S3_MANIFEST)
    return folder


def current(record: RunRecord) -> dict[str, tuple[str, str] | str | None]:
    """url -> (ETag, version id) of each object the record's steps read, as S3 has it now; None: gone; a
    text: why S3 could not be asked (no access, unreachable), for that object alone."""
    from botocore.exceptions import BotoCoreError, ClientError

    clients: dict[str, Any] = {}
    out: dict[str, tuple[str, str] | str | None] = {}
    for url in sorted(record.s3_objects()):
        bucket, key = _split(url)
        try:
            resp = _client(bucket, clients).head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                out[url] = None
                continue
            out[url] = f"S3 refused the question: {exc}"
            continue
        except BotoCoreError as exc:
            out[url] = f"S3 could not be reached: {exc}"
            continue
        version = resp.get("VersionId") or ""
        out[url] = ((resp.get("ETag") or "").strip('"'), "" if version == "null" else version)
    return out
