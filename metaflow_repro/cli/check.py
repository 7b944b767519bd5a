"""``repro check FLOW --repeat N [-j J]``: run the flow N times in the same locked environments and say,
per step, which artifacts differ between the runs. The work: ``metaflow_repro.operations.check``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import STORE_HELP, add_store, error, log
from metaflow_repro.errors import EXIT_DRIFT, EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("flow", help="the flow file")
    p.add_argument("--repeat", type=int, default=2, metavar="N", help="how many times to run it (default: 2)")
    p.add_argument(
        "-j", "--jobs", type=int, default=None, metavar="J", help="runs at a time (default: this machine's cores)"
    )
    add_store(p, STORE_HELP + "; every repeat is recorded there, none becomes the flow's latest")
    p.set_defaults(func=run, metaflow_args=[])
    p.epilog = (
        "Exit codes: 0 every artifact identical or equivalent (within the comparators' tolerances) in every "
        "repeat, 1 some artifact differs (or a repeat failed), 2 bad input, 3 infrastructure failure. Options "
        "for Metaflow's `run` go after --, e.g. `repro check flow.py --repeat 3 -- --alpha 0.5`."
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.cli.run import failed_tasks
    from metaflow_repro.operations.check import check_counts, repeat_runs
    from metaflow_repro.operations.run import RunOptions
    from metaflow_repro.settings import load_settings

    check_counts(args.repeat, args.jobs)  # before the flow is read
    flow_settings = load_settings(Path(args.flow).resolve().parent)
    options = RunOptions(
        store=args.store,
        push=True,
        move_latest=False,
        metaflow_args=tuple(args.metaflow_args),
        settings=flow_settings,
    )
    done = repeat_runs(Path(args.flow), options, args.repeat, args.jobs, log=log)
    for n, outcome in done.failed:
        if outcome.error:
            raise error(f"repeat {n} of {args.repeat}: {outcome.error}", outcome.error_code)
        for line in failed_tasks(outcome, Path(args.flow)):
            log(f"repeat {n}: {line}")
    if done.saved:
        print(f"recorded {len(done.saved)} repeats in {done.pushed} (kept here: {', '.join(done.saved)})")
    if done.failed:
        print(f"result: {len(done.failed)} of {args.repeat} repeats failed; nothing to compare them with")
        return EXIT_DRIFT
    check = done.check
    assert check is not None, "every repeat ran: they were compared"
    print(f"repeats of {check.flow}: {', '.join(check.runs)}")
    for line in check.lines():
        print(line)
    if check.deterministic:
        print(f"result: deterministic ({'some values equivalent, ' if check.artifacts else ''}none different)")
        return EXIT_OK
    n = sum(len(names) for names in check.nondeterministic().values())
    print(f"result: different ({n} artifact(s) differ between runs of the same code in the same environments)")
    return EXIT_DRIFT
