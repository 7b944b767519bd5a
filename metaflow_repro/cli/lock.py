"""``repro lock``: resolve every step's environment and write ``<flow>.repro.lock`` (or, ``--check``,
say how the lock differs from the flow), optionally exporting it. The work: ``metaflow_repro.operations.lock``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import FLOW_HELP, add_flag, capped_lines, log
from metaflow_repro.errors import EXIT_DRIFT, EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument(
        "--platform",
        action="append",
        metavar="NAME",
        help="also lock for this platform, keeping those already locked (repeatable): "
        "linux-64, linux-aarch64, osx-64, osx-arm64, win-64",
    )
    p.add_argument(
        "--remove-platform", action="append", metavar="NAME", help="drop this platform from the lock (repeatable)"
    )
    add_flag(p, "--check", help="do not write: exit 1 and show what differs if the lock no longer matches the flow")
    for opt, value in (("--config", "FILE"), ("--config-value", "VALUE")):
        p.add_argument(
            opt,
            nargs=2,
            action="append",
            metavar=("NAME", value),
            help=f"as Metaflow's {opt}: lock the declarations this config value gives (repeatable)",
        )
    p.add_argument(
        "--export-pylock",
        metavar="DIR",
        help="also write a PEP 751 pylock.<flow>-<step>-<platform>.toml per step into DIR (PyPI envs)",
    )
    p.add_argument(
        "--export-conda-lock",
        metavar="DIR",
        help="also write a <flow>-<step>.conda-lock.yml per conda env into DIR (conda-lock's own format)",
    )
    p.add_argument(
        "--from",
        dest="from_conda_lock",
        metavar="FILE",
        help="take --step's locked env from this conda-lock.yml instead of resolving it",
    )
    p.add_argument("--step", metavar="STEP", help="the step --from locks")
    p.set_defaults(func=run)


def _config_args(args: argparse.Namespace) -> list[str]:
    """``--config NAME FILE`` and ``--config-value NAME VALUE`` as Metaflow takes them."""
    return [
        x
        for opt in ("config", "config_value")
        for pair in getattr(args, opt) or []
        for x in (f"--{opt.replace('_', '-')}", *pair)
    ]


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations import lock
    from metaflow_repro.operations.flows import flow_files

    lock.check_options(args.check, args.remove_platform, args.from_conda_lock, args.step)
    status = EXIT_OK
    configs = _config_args(args)
    for path in flow_files(args.flow):
        flow = lock.open_for_lock(path, configs, log)
        if args.from_conda_lock:
            lock.import_conda_lock(flow, Path(args.from_conda_lock), args.step)
            print(f"{path}: {args.step} locked from {args.from_conda_lock}")
        if args.check:
            status = max(status, _check(lock.check(flow, path, args.platform), path, flow))
            continue
        result = lock.lock(flow, args.platform, args.remove_platform, log)
        _print_written(result, path, flow)
        if args.export_conda_lock:
            for target in lock.export_conda_lock(result, flow, path, Path(args.export_conda_lock)):
                print(f"  exported {target}")
        if args.export_pylock:
            for target in lock.export_pylock(result, flow, path, Path(args.export_pylock)):
                print(f"  exported {target}")
    return status


def _check(found, path: Path, flow) -> int:
    if not found.drift:
        print(f"{path}: lock is up to date ({len(flow.specs)} steps)")
        return EXIT_OK
    print(f"{path}: the lock {flow.lock_file.name} does not match the flow {flow.name}:")
    print("\n".join(capped_lines([f"  {finding.line()}" for finding in found.drift])))
    print(f"  run `{found.relock}` to update it")
    return EXIT_DRIFT


def _print_written(result, path: Path, flow) -> None:
    if not result.written:
        print(f"{path}: {flow.lock_file.name} is up to date")
        return
    print(f"{path}: wrote {flow.lock_file.name}")
    changed = [f"  {step}: {line}" for step, lines in result.changes.items() for line in lines]
    if changed:
        print("\n".join(capped_lines(changed)))
