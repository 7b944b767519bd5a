"""``repro bundle REF -o run.repro [--with-image]`` and ``repro bundle verify run.repro``: one file
holding a run and everything its replay needs, and its check. ``repro store import`` (in ``store``) and
``repro replay run.repro`` (in ``replay``) read bundles too. The work: ``metaflow_repro.operations.bundle``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import REF_HELP, add_flag, add_store, log
from metaflow_repro.errors import EXIT_OK, printable

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help=f"{REF_HELP}; or `verify` followed by a bundle file to check it")
    p.add_argument("file", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", type=Path, help="the bundle file to write (e.g. run.repro)")
    add_store(p, "the store the run is in (default: REPRO_STORE or file://$REPRO_HOME/store)")
    add_flag(p, "--with-image", help="also hold the container image object the run ran in, if the store has it")
    p.set_defaults(func=run)
    p.epilog = (
        "`repro replay FILE` replays a bundle with no store; `repro store import FILE` loads it into a store. "
        "Exit codes: 0 ok, 2 not a bundle (malformed) or bad arguments, 3 a member is corrupt."
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.errors import BadInput

    if args.ref == "verify":
        if args.file is None or args.output is not None:
            raise BadInput("usage: repro bundle verify FILE")
        return verify(Path(args.file))
    if args.file is not None:
        raise BadInput(f"unrecognized argument {printable(args.file)}: `repro bundle REF -o FILE`")
    if args.output is None:
        raise BadInput("give the bundle's file with -o, e.g. repro bundle Flow/latest -o run.repro")
    from metaflow_repro.operations.bundle import bundle

    made = bundle(args.ref, args.store, settings, args.output, with_image=args.with_image, log=log)
    print(
        f"bundled {printable(made.record.ref)} into {made.path} in {made.seconds:.1f} s: {sizes(made.manifest, made.size)}"
    )
    return EXIT_OK


def sizes(manifest, size: int) -> str:
    """A bundle's size against the sum of its parts."""
    parts = manifest.size
    ratio = f", {size / parts:.2f}x" if parts else ""
    return f"{len(manifest.members)} objects, {size / 1e6:.1f} MB (its parts: {parts / 1e6:.1f} MB{ratio})"


def verify(path: Path) -> int:
    from metaflow_repro.operations.bundle import verify

    contents = verify(path)
    print(f"bundle {path}: ok: run {printable(contents.record.ref)}, {sizes(contents.manifest, path.stat().st_size)}")
    return EXIT_OK


def import_(args: argparse.Namespace, settings: Settings) -> int:
    """`repro store import FILE [--store URL]`."""
    from metaflow_repro.operations.bundle import import_into

    done = import_into(Path(args.file), args.store, settings, log=log)
    print(
        f"imported {printable(done.record.ref)} into {done.store}: {done.written} object(s) written, "
        f"{done.skipped} already there"
    )
    return EXIT_OK
