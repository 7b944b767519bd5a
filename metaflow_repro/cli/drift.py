"""``repro drift``: spec, resolution, runtime and input drift of flows (exit 1 on any). The work:
``metaflow_repro.operations.drift``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import FLOW_HELP, add_flag, add_store, capped_lines, log
from metaflow_repro.errors import EXIT_DRIFT, EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument("--against", metavar="REF", help="also compare the lock with the environments of a recorded run")
    add_store(p)
    add_flag(p, "--no-resolve", help="skip re-resolving (no network)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations.drift import drift

    status = EXIT_OK
    for found in drift(settings, args.flow, args.against, args.store, resolve=not args.no_resolve, log=log):
        if found.findings:
            status = EXIT_DRIFT
            print(f"{found.path}: drift found")
            print("\n".join(capped_lines([f"  {finding.kind}: {finding.line()}" for finding in found.findings])))
        else:
            print(f"{found.path}: no drift")
    return status
