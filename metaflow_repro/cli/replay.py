"""``repro replay``: rebuild a recorded run offline from the store, run it again (here, in a
container or on AWS Batch), compare. The work: ``metaflow_repro.operations.replay``."""

from __future__ import annotations

import argparse
from pathlib import Path

from metaflow_repro.cli.common import REF_HELP, STORE_HELP, add_flag, add_ref, add_store, comparison_table, log
from metaflow_repro.settings import REPLAY_PLACES, Settings


def configure(p: argparse.ArgumentParser) -> None:
    add_ref(p, help=f"{REF_HELP}, or a bundle file (repro bundle), replayed with no store")
    add_store(p, STORE_HELP)
    p.add_argument(
        "--on",
        choices=list(REPLAY_PLACES),
        default="local",
        help="where to run the replay (a run recorded with --with batch replays locally unless --on batch)",
    )
    p.add_argument(
        "--image",
        help="--on docker: the container image (default: python:<lock's major.minor>-slim if the daemon has it, "
        "else `repro image build`'s image)",
    )
    add_flag(p, "--keep", help="keep the replay's working folder (code, datastore) under REPRO_HOME/replays")
    p.add_argument(
        "--from-step",
        metavar="STEP",
        help="re-run STEP and the steps after it, reusing the recorded tasks before it (Metaflow's resume, from "
        "the recorded local datastore; the run replays whole, saying why, when that is gone). Local replays only",
    )
    p.set_defaults(func=run, metaflow_args=[])
    p.epilog = (
        "Exit codes: 0 identical (or equivalent), 1 different, 3 replay failed. Options after -- add to or "
        "override the recorded run options, e.g. `repro replay F/1 -- --max-workers 2`."
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.store.bundle import is_bundle

    if is_bundle(args.ref):
        result = _replay_bundle(args, settings)
    elif args.from_step:
        result = _from_step(args, settings)
    else:
        from metaflow_repro.operations.replay import replay

        result = replay(
            args.ref,
            args.store,
            settings,
            on=args.on,
            log=log,
            extra_args=tuple(args.metaflow_args),
            keep=args.keep,
            image=args.image,
        )
    if result.replayed is not None:
        print(f"replayed {result.original.ref} as {result.replayed.ref}")
    if result.comparison is not None:
        print(comparison_table(result.comparison))
    _print_failure(result.failure)
    if result.recorded or result.saved:
        assert result.replayed is not None, "only a replay that ran is recorded"
        print(
            f"replay recorded as {result.replayed.ref} (replay of {result.original.ref}) in "
            f"{result.recorded or result.saved}"
        )
    print(f"result: {result.verdict}")
    return result.exit_code


def _replay_bundle(args: argparse.Namespace, settings: Settings):
    """A bundle (``repro bundle``) replays with no store: from its own objects only."""
    from metaflow_repro.errors import BadInput
    from metaflow_repro.operations.bundle import replay_bundle

    if args.store:
        raise BadInput(f"{args.ref} is a bundle: it replays from its own objects, with no store; drop --store")
    if args.from_step:
        raise BadInput(f"{args.ref} is a bundle: it replays whole (--from-step needs the run's own datastore)")
    print(f"replaying from bundle {args.ref}")
    return replay_bundle(
        Path(args.ref),
        settings,
        on=args.on,
        log=log,
        extra_args=tuple(args.metaflow_args),
        keep=args.keep,
        image=args.image,
    )


def _from_step(args: argparse.Namespace, settings: Settings):
    from metaflow_repro.errors import BadInput
    from metaflow_repro.operations.replay_from import replay_from_step

    if args.on != "local" or args.metaflow_args or args.image:
        raise BadInput("--from-step replays here (--on local), with the recorded options only (nothing after --)")
    return replay_from_step(args.ref, args.store, settings, args.from_step, log=log, keep=args.keep)


def _print_failure(failure) -> None:
    if failure is None:
        return
    if failure.step:
        print(f"step {failure.step} failed ({failure.task}): {failure.error}")
        print(f"its logs: {failure.logs}")
        return
    print(f"the replay did not run: {failure.error}")
    if failure.output:
        log(failure.output[-4000:])
