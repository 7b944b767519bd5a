"""What several commands share: where progress goes (stderr), how long lists are capped, the
arguments many commands take (a store, a run reference, flow files), and the tables of a comparison
and of pickle checks.

Nothing heavy is imported at module level here or in any command module: ``repro --help`` builds
every command's parser, and a command's work (``metaflow_repro.operations``) is imported only when that
command runs."""

from __future__ import annotations

import argparse
import sys

from metaflow_repro.errors import ReproError, printable_lines

#: how many items a message lists before "and N more" (a store or a declaration may hold thousands)
LIST_LIMIT = 20

FLOW_HELP = "a flow file, or a folder whose *.py flow files are all used"
STORE_HELP = "store URI (default: REPRO_STORE or file://$REPRO_HOME/store)"
REF_HELP = "FlowName/run_id, FlowName/latest, or a record.json file"


def log(msg: str) -> None:
    print(printable_lines(msg, max_lines=sys.maxsize), file=sys.stderr, flush=True)  # names from records


def capped_lines(lines: list[str], limit: int = LIST_LIMIT, indent: str = "  ") -> list[str]:
    from metaflow_repro.model.validate import cap_lines

    return cap_lines(lines, limit, indent)


def error(message: str, code: int) -> ReproError:
    """An error carrying an exit code decided elsewhere (an outcome's)."""
    exc = ReproError(message)
    exc.exit_code = code
    return exc


def add_flag(parser: argparse.ArgumentParser, *names: str, help: str | None = None) -> None:
    """An option that is off unless given."""
    parser.add_argument(*names, action="store_true", help=help)


def add_store(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--store", help=help)


def add_ref(parser: argparse.ArgumentParser, help: str = REF_HELP, nargs: str | None = None) -> None:
    """The positional ``ref``: one recorded run."""
    parser.add_argument("ref", nargs=nargs, help=help)


def comparison_table(comparison) -> str:
    """Per step, how many artifacts are identical, equivalent, different; then why each that is not
    identical is not."""
    from tabulate import tabulate

    from metaflow_repro.checks.compare import Verdict

    rows = [[step, c["identical"], c["equivalent"], c["different"]] for step, c in comparison.by_step().items()]
    table = tabulate(rows, headers=["step", "identical", "equivalent", "different"], tablefmt="simple")
    details = [
        f"  {r.step}/{r.task}.{r.name}: {r.verdict}: {r.detail}"
        for r in comparison.results
        if r.verdict is not Verdict.IDENTICAL and r.detail
    ]
    return table + ("\n" + "\n".join(details) if details else "")


def pickle_table(record) -> str:
    if not record.pickle_checks:
        return "pickle checks: no user artifacts"
    from tabulate import tabulate

    rows = [
        [
            c.step,
            c.task,
            c.artifact,
            c.reader_env[:12],
            ",".join(c.reader_steps),
            c.status,
            "; ".join(x for x in (c.detail, c.static) if x),
        ]
        for c in record.pickle_checks
    ]
    return tabulate(rows, headers=["step", "task", "artifact", "reader env", "read by", "status", "why"])
