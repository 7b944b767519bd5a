"""``repro env show`` and ``repro env build``: the state of each step's environment on this machine,
and building them. The work: ``metaflow_repro.operations.env``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import FLOW_HELP, add_flag, log
from metaflow_repro.errors import EXIT_DRIFT, EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings

HEADERS = ["step", "spec id", "env id", "python", "packages", "source", "state", "fingerprint"]


def configure(env: argparse.ArgumentParser) -> None:
    esub = env.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    p = esub.add_parser("show", help="table of steps, spec ids, env ids and their state")
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument("--step", action="append", help="only this step (repeatable)")
    add_flag(p, "--no-fingerprint", help="skip re-fingerprinting built environments")
    p.set_defaults(func=show)
    p = esub.add_parser("build", help="build (or reuse) every step's environment")
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    add_flag(
        p, "--repair", help="re-hash every file of each built environment against its RECORD; rebuild damaged ones"
    )
    p.add_argument("--step", action="append", help="only this step (repeatable)")
    add_flag(p, "--offline", help="never touch the network: use the lock as it is and the package cache only")
    p.set_defaults(func=build)


def show(args: argparse.Namespace, settings: Settings) -> int:
    from tabulate import tabulate

    from metaflow_repro.operations import env
    from metaflow_repro.operations.flows import flow_files

    status = EXIT_OK
    for path in flow_files(args.flow):
        flow = env.open_steps(path, args.step)
        states = env.step_states(flow, check_fingerprint=not args.no_fingerprint, steps=args.step)
        if any(s.problems for s in states):
            status = EXIT_DRIFT
        print(f"{flow.name} ({path})")
        print(tabulate([_row(s) for s in states], headers=HEADERS, tablefmt="simple"))
        print()
    return status


def _row(s) -> list:
    spec = s.spec
    libs = ", ".join(f"{n}=={v}" for n, v in spec.libraries) or "-"
    if s.state == "disabled":
        return [s.step, spec.spec_id[:12], "-", "user's", "disabled", spec.kind, "user env", "-"]
    pl = s.locked
    if pl is None:
        return [s.step, spec.spec_id[:12], "-", spec.python, libs, spec.source, s.state, "-"]
    packages = (
        f"{libs} (+{len(pl.packages) - len(spec.libraries)})" if spec.libraries else f"{len(pl.packages)} implicit"
    )
    return [s.step, spec.spec_id[:12], pl.env_id[:12], pl.python, packages, spec.source, s.state, _fingerprint(s)]


def _fingerprint(s) -> str:
    if s.problems is None:  # not built, or not checked
        return "-"
    return "DRIFT: " + "; ".join(s.problems) if s.problems else "matches lock"


def build(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations import env
    from metaflow_repro.operations.flows import flow_files

    for path in flow_files(args.flow):
        flow, built = env.build(path, args.step, args.offline, args.repair, log)
        for step, e in built.items():
            if e is None:
                print(f"{flow.name}.{step}: disabled (runs in the user's environment)")
            else:
                how = "reused" if e.reused else "built"
                print(f"{flow.name}.{step}: {how} env {e.env_id[:12]} at {e.path}")
    return EXIT_OK
