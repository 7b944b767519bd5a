"""Strict mode (issue 23, item 5): a step that read anything a replay cannot give back (files outside the
snapshot, network endpoints it contacted) is a finding, naming what it read, unless the flow's
``hermetic-allow`` entries accept it: path globs for files; ``host``, ``host:port`` or globs of either for
endpoints; objects read with ``metaflow.S3`` the snapshot could not keep. Pure: it reads the record only
(``RunRecord.reads``, ``RunRecord.data_files``, ``RunRecord.s3_inputs``)."""

from __future__ import annotations

import fnmatch

from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.model.record import RunRecord, StepReads
from metaflow_repro.model.validate import cap


def allowed(path: str, allow: tuple[str, ...]) -> bool:
    """Whether a glob of ``allow`` accepts ``path`` (an absolute path, or one relative to the flow's folder)."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in allow)


def host_allowed(endpoint: str, allow: tuple[str, ...]) -> bool:
    """Whether an entry of ``allow`` accepts ``endpoint`` ("host:port", "[v6]:port" or "host"): an entry
    naming the host alone accepts every port, one with a port that port only; globs either way."""
    host = endpoint
    if endpoint.startswith("["):
        host = endpoint[: endpoint.find("]") + 1]
    elif endpoint.count(":") == 1:
        host = endpoint.split(":", 1)[0]
    names = {endpoint.lower(), host.lower(), host.strip("[]").lower()}
    patterns = {p.lower() for p in allow}
    globs = [p for p in patterns if not p.startswith("[")]  # "[::1]:8765" names an IPv6 endpoint: no glob
    return bool(names & patterns) or any(fnmatch.fnmatchcase(n, p) for p in globs for n in names)


def _hosts(step: str, reads: StepReads, allow: tuple[str, ...]) -> list[Finding]:
    refused = [h for h in reads.all_hosts() if not host_allowed(h, allow)]
    unlisted = reads.hosts_count + reads.loopback_count - len(reads.hosts) - len(reads.loopback)
    if not refused and not unlisted:
        return []
    more = f" and {unlisted} more not listed" if unlisted else ""
    return [
        Finding(
            Kind.NOT_HERMETIC,
            f"{step} contacted {len(refused) + unlisted} network endpoint(s), which a replay cannot give back: "
            f"{cap(refused, limit=10)}{more} (allow them with [tool.repro] hermetic-allow: host, host:port or a glob)",
            step,
            subject="hosts",
        )
    ]


def _outside(record: RunRecord, allow: tuple[str, ...]) -> list[Finding]:
    out = []
    for step, reads in record.reads.items():
        if reads.unwatched:
            out.append(Finding(Kind.NOT_HERMETIC, f"{reads.describe(step)}; strict mode cannot vouch for it", step))
            continue
        out += _hosts(step, reads, allow)
        refused = [f for f in reads.files if not allowed(f, allow)]
        unlisted = reads.files_count - len(reads.files)  # not listed by the task: none can be allowed
        if refused or unlisted:
            more = f" and {unlisted} more not listed" if unlisted else ""
            out.append(
                Finding(
                    Kind.NOT_HERMETIC,
                    f"{step} read {len(refused) + unlisted} file(s) outside the snapshot, which a replay cannot "
                    f"give back: {cap(refused, limit=10)}{more} (allow them with [tool.repro] hermetic-allow)",
                    step,
                    subject="files",
                )
            )
    return out


def _not_kept(record: RunRecord, allow: tuple[str, ...]) -> list[Finding]:
    out = []
    for path in record.data_files_not_kept():
        if allowed(path, allow):
            continue
        f = record.data_files[path]
        for step in f.read_by:
            out.append(
                Finding(
                    Kind.NOT_HERMETIC,
                    f"{step} read {path} ({f.size} bytes), larger than input-max-bytes: the snapshot has only its "
                    "sha256, a replay cannot give it back (raise input-max-bytes, or allow it with hermetic-allow)",
                    step,
                    subject=path,
                )
            )
    return out


def _s3_not_kept(record: RunRecord, allow: tuple[str, ...]) -> list[Finding]:
    """Objects read with ``metaflow.S3`` whose bytes the snapshot lacks (their traffic is no host contact:
    a kept one is given back to a replay)."""
    out = []
    for url in record.s3_not_kept():
        if allowed(url, allow):
            continue
        for step, reads in sorted(record.s3_inputs.items()):
            if any(o.url == url for o in reads.objects):
                out.append(
                    Finding(
                        Kind.NOT_HERMETIC,
                        f"{step} read {url} with metaflow.S3, but the snapshot has only its sha256 (larger than "
                        "input-max-bytes, or it changed before it could be kept): a replay reads it from S3 as it is "
                        "then (raise input-max-bytes, or allow it with hermetic-allow)",
                        step,
                        subject=url,
                    )
                )
    return out


def _s3_unlisted(record: RunRecord) -> list[Finding]:
    """Objects a step read past what its record lists (counted only): no replay can give those back."""
    return [
        Finding(
            Kind.NOT_HERMETIC,
            f"{step} read {s3.count - len(s3.objects)} more object(s) with metaflow.S3 than the record lists; a "
            "replay reads them from S3 as it is then (none of them can be allowed: they are not named)",
            step,
            subject="metaflow.S3",
        )
        for step, s3 in sorted(record.s3_inputs.items())
        if s3.count > len(s3.objects)
    ]


def findings(record: RunRecord, allow: tuple[str, ...] = ()) -> list[Finding]:
    """What fails each step in strict mode: reads a replay cannot give back that ``allow`` does not accept."""
    return _outside(record, allow) + _not_kept(record, allow) + _s3_not_kept(record, allow) + _s3_unlisted(record)
