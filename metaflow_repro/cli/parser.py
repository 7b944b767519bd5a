"""The ``repro`` argument parser. The commands and their one-line help are listed here; each
command's own arguments come from its module (``metaflow_repro.cli.<command>.configure``), imported only
for the command being run: ``repro --help`` imports no command module, and a command imports its
work (``metaflow_repro.operations``) only once its arguments are parsed. A unit test holds that building
the parser loads neither Metaflow, boto3, rattler nor docker."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from metaflow_repro import __version__

#: every command (its module is ``metaflow_repro.cli.<name>``) and its line in ``repro --help``, in that order
COMMANDS = {
    "lock": "resolve every step's environment and write <flow>.repro.lock",
    "env": "inspect and build step environments",
    "run": "run a flow under repro's environments, record it and push the snapshot",
    "recover": "record and push the runs Metaflow finished but repro did not record (repro was stopped)",
    "check": "run a flow N times in the same environments and say which artifacts differ (determinism)",
    "replay": "rebuild a recorded run offline from the store, run it again, compare",
    "bundle": "write a run and all its replay needs into one file (repro bundle verify FILE checks one)",
    "audit": "replay a store's recorded runs and say which no longer reproduce, and why (exit 1 on a regression)",
    "diff": "compare two recorded runs artifact by artifact",
    "bisect": "find the package changes that change a recorded run's artifacts (delta debugging)",
    "drift": "spec, resolution, runtime and input drift (exit 1 on any)",
    "report": "render a recorded run as Markdown, JSON or HTML",
    "doctor": "check this machine: interpreters, uv, store reachability, TLS trust, REPRO_HOME",
    "image": "container images for `repro replay --on docker`",
    "store": "list, show, verify and garbage-collect a store",
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``: every command is listed, the one ``argv`` names (its first word
    that is not an option: the top level's options take no values) gets its arguments."""
    parser = argparse.ArgumentParser(
        prog="repro",
        description="Prove a Metaflow flow's results can be reproduced. Exit codes: 0 ok, "
        "1 a difference or drift was found, 2 bad input, 3 infrastructure failure.",
    )
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name, help in COMMANDS.items():
        p = sub.add_parser(name, help=help)
        if name == chosen:
            importlib.import_module(f"metaflow_repro.cli.{name}").configure(p)
    return parser
