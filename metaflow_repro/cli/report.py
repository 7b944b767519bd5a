"""``repro report``: render a recorded run as Markdown, JSON or HTML. The work:
``metaflow_repro.operations.report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import add_ref, add_store
from metaflow_repro.errors import EXIT_OK, from_os_error

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    add_ref(p)
    p.add_argument("--format", choices=["md", "json", "html"], default="md")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    add_store(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.fsutil import atomic_write
    from metaflow_repro.operations.report import report

    text = report(settings, args.store, args.ref, args.format)
    if args.output:
        try:
            atomic_write(Path(args.output), text)
        except OSError as exc:  # named as the user gave it, not as the temporary name beside it
            kind = type(from_os_error(exc))  # bad input (2) for a path the user gave, else infrastructure (3)
            raise kind(f"-o {args.output}: cannot write the report: {exc.strerror or exc}", path=args.output) from None
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK
