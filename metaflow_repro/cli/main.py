"""``repro`` command line: parse the arguments, hand them to the command's module, map errors to
exit codes. Each command lives in its own module (``metaflow_repro.cli.<command>``: arguments and printing)
over its operation (``metaflow_repro.operations.<op>``: the work), imported only when that command runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metaflow_repro.errors import EXIT_INFRA, ReproError, from_os_error, printable_lines

#: the commands that take options for Metaflow's `run` after --
PASSTHROUGH = ("run", "replay", "check")


def main(argv: list[str] | None = None) -> int:
    return _main(argv)  # py-rattler runs in its own worker process (env/rattler_worker): none here to outlive


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments; what follows ``--`` becomes ``metaflow_args`` (``run`` and ``replay`` only).
    A usage error exits 2 (argparse's ``SystemExit``)."""
    from metaflow_repro.cli.parser import build_parser

    passthrough = []
    if "--" in argv:  # everything after -- belongs to Metaflow's `run`
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command == "run":
            parser.error(
                f"unrecognized arguments: {' '.join(unknown)}. Options for Metaflow's `run` go after --: "
                f"repro run {args.flow} -- {' '.join(unknown)}"
            )
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if passthrough:
        if args.command not in PASSTHROUGH:
            parser.error("only `repro run`, `repro replay` and `repro check` take options after --")
        args.metaflow_args = passthrough
    return args


def _dispatch(args: argparse.Namespace) -> int:
    """Settings are read once, here (from the working folder), and handed to the command; every
    command but ``doctor`` (which reports on it) first needs a usable REPRO_HOME."""
    from metaflow_repro.env.cache import ready_home
    from metaflow_repro.settings import load_settings

    settings = load_settings(Path.cwd())
    if args.command == "doctor":
        return args.func(args, settings)
    ready_home(settings)
    from metaflow_repro.adapter import scratch

    mine = scratch.enter(settings.home)  # every temporary file under REPRO_HOME/tmp (issue 22 item 13)
    try:
        return args.func(args, settings)
    finally:
        scratch.leave(mine)


def _main(argv: list[str] | None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("METAFLOW_USER", os.environ.get("USER") or "repro")
    try:
        return _dispatch(args)
    except ReproError as exc:
        _error(f"repro: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if _debug():
            raise
        error = from_os_error(exc)
        _error(f"repro: error: {error}")
        return error.exit_code
    except Exception as exc:
        if _debug():
            raise
        _error(f"repro: internal error: {type(exc).__name__}: {exc} (REPRO_DEBUG=1 shows the traceback)")
        return EXIT_INFRA


def _error(message: str) -> None:
    """Print an error for people: its values come from records, stores and files (untrusted), so no
    line is longer than a bound nor holds a raw control character (``printable_lines``)."""
    print(printable_lines(message), file=sys.stderr)


def _debug() -> bool:
    from metaflow_repro.settings import debug_requested

    return debug_requested()


if __name__ == "__main__":
    sys.exit(main())
