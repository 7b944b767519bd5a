"""``repro recover``: record and push the runs Metaflow finished but repro did not record. The work:
``metaflow_repro.operations.recover``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import add_store, log
from metaflow_repro.errors import EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "A `repro run` that was stopped (or whose push failed) leaves a pending run in REPRO_HOME/pending: "
        "record each finished run (read back from Metaflow's datastore) and push it, as `repro run` would "
        "have; push each run recorded here but not pushed; drop runs that never started or did not finish."
    )
    add_store(p, "store URI (default: the store the run was going to)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations.recover import recover

    outcomes = recover(settings, args.store, log=log)
    if not outcomes:
        print("no pending runs: every run repro started here is recorded and pushed")
        return EXIT_OK
    code = EXIT_OK
    for o in outcomes:
        if o.error:
            log(f"repro: error: {o.error}")
            code = max(code, o.error_code)
        elif o.note:
            print(o.note)
        elif o.record is not None:
            where = f", pushed to {o.pushed}" if o.pushed else ""
            print(f"recovered {o.record.ref}: recorded in {o.saved}{where}")
    return code
