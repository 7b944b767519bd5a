"""``repro doctor``: one table of this machine's health (interpreters, uv, the store, TLS trust,
REPRO_HOME, conda channels, Docker, Metaflow and repro's extension). The work:
``metaflow_repro.operations.doctor``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import add_store
from metaflow_repro.errors import EXIT_DRIFT, EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "One table: installed interpreters, uv's version, whether the store answers (a local "
        "folder, or S3 head_bucket with a short timeout), where TLS certificates are trusted from "
        "(SSL_CERT_FILE, REQUESTS_CA_BUNDLE, pip's cert, the system), REPRO_HOME's health (a "
        "writable folder with free space), whether each conda channel answers (when conda-source is "
        '"conda", the default), whether a Docker daemon answers (only --on docker needs one: "not ready" '
        "is no problem), Metaflow's release and whether the conda/pypi environments Metaflow loads are "
        "repro's extension. Network checks time out in seconds. Exit 0 when everything needed is healthy, "
        "1 when something is not."
    )
    add_store(p, "store URI to check (default: REPRO_STORE or file://$REPRO_HOME/store)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from tabulate import tabulate

    from metaflow_repro.operations import doctor

    if args.store:
        settings = replace(settings, store=args.store)
    found = doctor.checks(settings)
    rows = [("ok" if c.ok else "PROBLEM" if c.needed else "not ready", c.what, c.found, c.detail) for c in found]
    print(tabulate(rows, headers=["state", "check", "found", "detail"]))
    bad = [c for c in found if not c.ok and c.needed]  # "not ready": only some commands need it
    if bad:
        print(f"\n{len(bad)} problem(s): " + "; ".join(f"{c.what}: {c.detail}" for c in bad))
        return EXIT_DRIFT
    return EXIT_OK
