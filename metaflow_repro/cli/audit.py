"""``repro audit``: replay a selection of a store's recorded runs and say which no longer reproduce, and
why. The command a nightly CI job calls. The work: ``metaflow_repro.operations.audit``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from metaflow_repro.cli.common import STORE_HELP, add_flag, add_store, log
from metaflow_repro.errors import BadInput, from_os_error
from metaflow_repro.settings import REPLAY_PLACES, Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flow", default="", help="only runs of this flow (class name or identity)")
    p.add_argument("--since", default="", help="only runs recorded in the last 90d (days), 12h (hours) or 2w (weeks)")
    p.add_argument("--tag", default="", help="only runs started with this Metaflow tag (--tag)")
    p.add_argument("--sample", type=int, default=0, help="at most K runs, chosen at random (seeded by --seed)")
    p.add_argument("--seed", default="", help="--sample's seed (default: today's date, so each day samples anew)")
    p.add_argument(
        "--on",
        choices=list(REPLAY_PLACES),
        default="local",
        help="where each replay runs (batch: each one on AWS Batch)",
    )
    p.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1), help="replays at a time")
    p.add_argument("--image", help="--on docker: the container image (as `repro replay --image`)")
    p.add_argument("--html", help="also write the audit as an HTML page to this file")
    add_flag(p, "--json", help="print the audit as JSON instead of text")
    add_store(p, STORE_HELP)
    p.set_defaults(func=run)
    p.epilog = (
        "Exit codes: 0 no run that replayed identical in the previous audit has changed, 1 one has (a regression), "
        "2 bad input (no run matches), 3 the store cannot be read or a replay could not be carried out (its error says "
        "why; it is no regression, and the next audit compares with the verdict before it). Each audit is kept in "
        "the store (audits/)."
    )


def _progress(done: int, total: int, entry) -> None:
    width = 20
    bar = "#" * (width * done // total) + "-" * (width - width * done // total)
    log(f"[{bar}] {done}/{total} {entry.run}: {entry.verdict} ({entry.seconds:.1f} s)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.model.audit import Selection, parse_since
    from metaflow_repro.operations.audit import AuditOptions, audit
    from metaflow_repro.report.audit import terminal, to_html, to_json

    if args.since:
        parse_since(args.since)  # a bad --since is refused before the store is read
    if args.sample < 0:
        raise BadInput(f"--sample {args.sample}: give a number of runs (0: all)")
    selection = Selection(flow=args.flow, since=args.since, tag=args.tag, sample=args.sample, seed=args.seed)
    options = AuditOptions(selection=selection, on=args.on, jobs=args.jobs, image=args.image)
    with _stdout_to_stderr():  # what the replayed runs print is progress; stdout is the audit alone (--json)
        done = audit(settings, args.store, options, log=log, progress=_progress)
    for broken in done.broken:
        log(f"unreadable record (not audited): {broken}")
    if args.html:
        _write(Path(args.html), to_html(done.audit, done.key))
        log(f"wrote {args.html}")
    sys.stdout.write(to_json(done.audit, done.key) if args.json else terminal(done.audit, done.key))
    return done.exit_code


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 is 2 meanwhile: the Metaflow processes the replays start inherit it."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _write(path: Path, text: str) -> None:
    from metaflow_repro.fsutil import atomic_write

    try:
        atomic_write(path, text)
    except OSError as exc:
        kind = type(from_os_error(exc))
        raise kind(f"--html {path}: cannot write the audit report: {exc.strerror or exc}", path=str(path)) from None
