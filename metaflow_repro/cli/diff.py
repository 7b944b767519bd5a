"""``repro diff``: compare two recorded runs artifact by artifact. The work: ``metaflow_repro.operations.diff``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import REF_HELP, STORE_HELP, add_flag, add_store, comparison_table
from metaflow_repro.errors import EXIT_DRIFT, EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare two recorded runs artifact by artifact: exit 0 when every artifact "
        "is identical or equivalent, 1 when one differs."
    )
    p.add_argument("ref_a", metavar="REF_A", help=f"the first run: {REF_HELP}")
    p.add_argument("ref_b", metavar="REF_B", help="the second run, compared with the first (same forms)")
    add_store(p, STORE_HELP)
    add_flag(p, "--allow-other-flow", help="compare runs of different flows (same class name, other flow files)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations.diff import diff

    found = diff(settings, args.store, args.ref_a, args.ref_b, args.allow_other_flow)
    print(f"{found.a.ref} -> {found.b.ref}")
    if found.comparison.code_changed:
        print(f"code: {found.comparison.code_note()}")
    print(comparison_table(found.comparison))
    return EXIT_OK if found.comparison.same else EXIT_DRIFT
