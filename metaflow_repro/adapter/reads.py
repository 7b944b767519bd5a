"""Files the steps read, on the host (issue 23, items 1, 2 and 4).

Each task reports what it opened for reading (``metaflow_extensions/repro/plugins/reads.py``, task
metadata ``protocol.META_READS``). Here those reports become the record's ``data_files`` (files of the
flow's folder the code package lacks: hashed, and copied content-addressed into ``REPRO_HOME/inputs``
up to ``input-max-bytes`` per run, so a push stores them and a replay gives them back) and ``reads``
(files elsewhere on the host and the network endpoints the step contacted, per step: listed, never kept).

A task's report is checked like a stored record: it came from the user's code's process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.errors import InfraError
from metaflow_repro.model import validate as v
from metaflow_repro.model.record import DataFile, StepReads, absolute_path, data_file_path, host_port
from metaflow_repro.paths import OutsideRoot, inside
from metaflow_repro.settings import Home


@dataclass
class _StepSeen:
    """One step's reports, merged over its tasks."""

    flow: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    unlisted: int = 0  # files past the tasks' lists (their counts less what they listed)
    unwatched: bool = False
    hosts: list[str] = field(default_factory=list)  # network endpoints elsewhere
    hosts_unlisted: int = 0
    loopback: list[str] = field(default_factory=list)  # network endpoints on this machine
    loopback_unlisted: int = 0


def task_report(metadata: dict[str, str], where: v.At) -> dict[str, Any]:
    """One task's report ({} when it reported none), its shape checked."""
    text = metadata.get(protocol.META_READS)
    if not text:
        return {}
    try:
        report = json.loads(text)
    except ValueError:
        raise InfraError(f"{where.where}: {where.path} is unreadable JSON") from None
    v.of_type(report, dict, where)
    for key in (protocol.READS_FLOW, protocol.READS_OUTSIDE):
        v.list_of(v.opt(report, key, list, [], where), where / key, v.string)
    for key in (protocol.READS_HOSTS, protocol.READS_LOOPBACK):
        v.list_of(v.opt(report, key, list, [], where), where / key, v.string)
    for key in (
        protocol.READS_FLOW_COUNT,
        protocol.READS_OUTSIDE_COUNT,
        protocol.READS_HOSTS_COUNT,
        protocol.READS_LOOPBACK_COUNT,
    ):
        v.opt(report, key, int, 0, where)
    v.opt(report, protocol.READS_WATCHED, bool, True, where)
    return report


def merge(tasks_by_step: dict[str, list[dict[str, Any]]], where: str) -> dict[str, _StepSeen]:
    """step -> what its tasks read (steps with no report are absent)."""
    out: dict[str, _StepSeen] = {}
    for step, tasks in tasks_by_step.items():
        for task in tasks:
            report = task_report(task.get("metadata", {}), v.At(where, f"{step}.{protocol.META_READS}"))
            if report:
                _add(out.setdefault(step, _StepSeen()), report)
    return out


def _add(seen: _StepSeen, report: dict[str, Any]) -> None:
    if not report.get(protocol.READS_WATCHED, True):
        seen.unwatched = True
        return
    seen.flow.extend(p for p in report.get(protocol.READS_FLOW, []) if p not in seen.flow)
    # what the record could not hold (a path with a control character, a host no record spells) is
    # counted, not listed: it must not keep a finished run from being recorded
    outside = [p for p in report.get(protocol.READS_OUTSIDE, []) if _fits(p, absolute_path)]
    seen.outside.extend(p for p in outside if p not in seen.outside)
    seen.unlisted += max(0, report.get(protocol.READS_OUTSIDE_COUNT, 0) - len(outside))
    hosts = [h for h in report.get(protocol.READS_HOSTS, []) if _fits(h, host_port)]
    loopback = [h for h in report.get(protocol.READS_LOOPBACK, []) if _fits(h, host_port)]
    seen.hosts.extend(h for h in hosts if h not in seen.hosts)
    seen.loopback.extend(h for h in loopback if h not in seen.loopback)
    seen.hosts_unlisted += max(0, report.get(protocol.READS_HOSTS_COUNT, 0) - len(hosts))
    seen.loopback_unlisted += max(0, report.get(protocol.READS_LOOPBACK_COUNT, 0) - len(loopback))


def _fits(value: str, check: Callable[[Any, v.At], str]) -> bool:
    try:
        check(value, v.At("a task's report", ""))
    except v.Invalid:
        return False
    return True


def step_reads(seen: dict[str, _StepSeen]) -> dict[str, StepReads]:
    """The record's ``reads``: per step, the files elsewhere on the host and the network endpoints it
    contacted (steps that read and contacted none are absent)."""
    out = {}
    n = protocol.READS_MAX_PATHS
    for step, s in seen.items():
        contacted = s.hosts or s.loopback or s.hosts_unlisted or s.loopback_unlisted
        if s.outside or s.unwatched or s.unlisted or contacted:
            out[step] = StepReads(
                files=tuple(s.outside[:n]),
                files_count=len(s.outside) + s.unlisted,
                unwatched=s.unwatched,
                hosts=tuple(s.hosts[:n]),
                hosts_count=len(s.hosts) + s.hosts_unlisted,
                loopback=tuple(s.loopback[:n]),
                loopback_count=len(s.loopback) + s.loopback_unlisted,
            )
    return out


def package_files(package: Path) -> set[str]:
    """The files a code package holds (paths relative to its root); empty if there is no package here."""
    if not package.is_file():
        return set()
    with tarfile.open(package, "r:*") as tar:
        return {os.path.normpath(m.name) for m in tar.getmembers() if m.isfile()}


def data_files(
    seen: dict[str, _StepSeen], flow_dir: Path, package: Path, home: Home, max_bytes: int
) -> dict[str, DataFile]:
    """The record's ``data_files``: each flow-folder file a step read and the package lacks, hashed now;
    kept in ``home``'s inputs (content-addressed) while the run's total stays within ``max_bytes``."""
    in_package = package_files(package)
    read_by: dict[str, list[str]] = {}
    for step, s in seen.items():
        for rel in s.flow:
            if os.path.normpath(rel) not in in_package:
                read_by.setdefault(rel, []).append(step)
    out, kept = {}, 0
    for rel, steps in sorted(read_by.items()):
        found = _hashed(flow_dir, rel)
        if found is None:
            continue
        sha, size, path = found
        stored = kept + size <= max_bytes
        if stored:
            kept += size
            _keep(path, home.input_blob(sha), sha)
        out[rel] = DataFile(sha256=sha, size=size, read_by=tuple(steps), stored=stored)
    return out


def _hashed(flow_dir: Path, rel: str) -> tuple[str, int, Path] | None:
    """(sha256, size, file) of a data file, None when it is no file of the flow's folder any more."""
    try:
        data_file_path(rel, v.At("a step's reads", rel))
        path = inside(flow_dir, rel, "a data file a step read")
    except (v.Invalid, OutsideRoot):
        return None
    if not path.is_file():
        return None
    sha, size = _sha256(path)
    return sha, size, path


def _sha256(path: Path | str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _keep(path: Path, target: Path, sha: str) -> None:
    """Copy ``path`` to ``target`` (named by its sha256) unless it is there: through a temporary name,
    and only if the copy still has that sha256 (the file may change under us)."""
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".data-", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        if _sha256(tmp)[0] != sha:
            raise InfraError(f"{path} changed while repro was recording it; run again")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def collect(
    tasks_by_step: dict[str, list[dict[str, Any]]],
    flow_dir: Path,
    package: Path,
    home: Home,
    max_bytes: int,
    where: str,
) -> tuple[dict[str, DataFile], dict[str, StepReads]]:
    """(data_files, reads) of a run from its tasks' reports (``RunInspection.task_reports()``)."""
    seen = merge(tasks_by_step, where)
    return data_files(seen, flow_dir, package, home, max_bytes), step_reads(seen)
