"""``repro bisect``: which package changes between a recorded run's environments and another set of
locked environments change its artifacts. The work: ``metaflow_repro.operations.bisect``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import REF_HELP, STORE_HELP, add_flag, add_ref, add_store, log
from metaflow_repro.errors import EXIT_DRIFT, EXIT_INFRA, EXIT_OK, from_os_error

if TYPE_CHECKING:
    from metaflow_repro.operations.bisect import BisectResult
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Find the smallest set of package changes that changes a recorded run's artifacts: the recorded "
        "environments with subsets of the changes applied (delta debugging), each run and compared, and "
        "recorded in the store as a replay of REF (a bisection of the same pair anywhere reruns none). Exit 1 "
        "when culprits are found, 0 when the new environments change no artifact, 3 when the flow fails on them."
    )
    add_ref(p)
    new = p.add_mutually_exclusive_group(required=True)
    new.add_argument("--lock", type=Path, metavar="NEW_LOCK", help="the new environments: a lock file of the flow")
    new.add_argument("--against", metavar="REF2", help=f"the new environments: those of another run ({REF_HELP})")
    new.add_argument(
        "--upgrade",
        action="store_true",
        help="the new environments: the recorded declarations resolved again today (package index needed)",
    )
    add_store(p, STORE_HELP)
    add_flag(p, "--json", help="print the result as JSON")
    p.add_argument("--html", type=Path, metavar="PATH", help="also write the bisection as an HTML page to this file")
    add_flag(p, "--keep", help="keep the bisection's working folder (code, datastore) under REPRO_HOME/replays")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations.bisect import bisect

    result = bisect(
        args.ref,
        args.store,
        settings,
        lock_file=args.lock,
        against=args.against,
        upgrade=args.upgrade,
        keep=args.keep,
        log=log,
    )
    if args.html:
        _write_html(args.html, result)
        log(f"wrote {args.html}")
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        for i, tried in enumerate(result.tried, 1):
            names = "; ".join(map(str, tried.changes)) or "(no change)"
            print(f"[{i}] {tried.outcome.value:12} {names}: {tried.detail}" + (f" ({tried.run})" if tried.run else ""))
        print(result.summary())
    if result.failed:
        return EXIT_INFRA
    return EXIT_DRIFT if result.search.culprits else EXIT_OK


def _write_html(path: Path, result: BisectResult) -> None:
    """The page, written to a temporary name beside ``path`` and renamed into place."""
    from metaflow_repro.fsutil import atomic_write
    from metaflow_repro.report.bisect import to_html

    try:
        atomic_write(path, to_html(result))
    except OSError as exc:
        kind = type(from_os_error(exc))
        raise kind(f"--html {path}: cannot write the bisection report: {exc.strerror or exc}", path=str(path)) from None
