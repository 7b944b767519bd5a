"""Strict mode (issue 23, item 5, for files): a step that read anything a replay cannot give back is a
finding, naming what it read, unless the flow's ``hermetic-allow`` globs accept it. Pure: it reads the
record only (``RunRecord.reads``, ``RunRecord.data_files``)."""

from __future__ import annotations

import fnmatch

from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.model.record import RunRecord
from metaflow_repro.model.validate import cap


def allowed(path: str, allow: tuple[str, ...]) -> bool:
    """Whether a glob of ``allow`` accepts ``path`` (an absolute path, or one relative to the flow's folder)."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in allow)


def _outside(record: RunRecord, allow: tuple[str, ...]) -> list[Finding]:
    out = []
    for step, reads in record.reads.items():
        if reads.unwatched:
            out.append(Finding(Kind.NOT_HERMETIC, f"{reads.describe(step)}; strict mode cannot vouch for it", step))
            continue
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


def findings(record: RunRecord, allow: tuple[str, ...] = ()) -> list[Finding]:
    """What fails each step in strict mode: reads a replay cannot give back that ``allow`` does not accept."""
    return _outside(record, allow) + _not_kept(record, allow)
