"""``repro run``: run a flow under repro's environments, record it and push the snapshot; print the
run in a few lines and the next command. The work: ``metaflow_repro.operations.run``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import LIST_LIMIT, STORE_HELP, add_flag, add_store, error, log, pickle_table
from metaflow_repro.errors import EXIT_DRIFT, EXIT_OK

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("flow", help="the flow file")
    add_store(p, STORE_HELP)
    add_flag(p, "-v", "--verbose", help="show every pickle check, not only the problems")
    p.set_defaults(func=run, metaflow_args=[])
    p.epilog = "Options for Metaflow's `run` go after --, e.g. `repro run flow.py -- --alpha 0.5`."


def run(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.model.findings import Kind
    from metaflow_repro.model.record import RunStatus
    from metaflow_repro.operations.recover import reminder
    from metaflow_repro.operations.run import RunOptions, run_and_record
    from metaflow_repro.settings import load_settings

    flow_settings = load_settings(Path(args.flow).resolve().parent)  # the flow's, read once: the run reuses them
    for line in reminder(flow_settings):
        log(f"repro: {line}")
    options = RunOptions(store=args.store, push=True, metaflow_args=tuple(args.metaflow_args), settings=flow_settings)
    outcome = run_and_record(Path(args.flow), options, log=log)
    if outcome.error:
        raise error(outcome.error, outcome.error_code)
    record = outcome.record
    if record is None or record.status is not RunStatus.SUCCESS:
        for line in failed_tasks(outcome, Path(args.flow)):
            log(line)
        log(f"repro: run {record.ref if record else ''} failed; it is not pushed to the store")
        return outcome.exit_code or EXIT_DRIFT
    print(run_summary(record, outcome.pushed, verbose=args.verbose, store=args.store))
    strict = [f for f in outcome.findings if f.kind is Kind.NOT_HERMETIC]
    for f in strict:
        log(f"repro: not hermetic: {f.message}")
    return EXIT_DRIFT if strict else EXIT_OK


def failed_tasks(outcome, flow_file: Path) -> list[str]:
    """Each failed task of a run (local or AWS Batch alike): its step, pathspec, error line, and the
    command that shows its logs; capped."""
    from metaflow_repro.model.findings import Kind
    from metaflow_repro.operations.replay import error_line, logs_command, task_pathspec

    record, lines = outcome.record, []
    for f in [f for f in outcome.findings if f.kind is Kind.TASK_FAILED][:LIST_LIMIT]:
        if record is None:  # no run id: nothing to point Metaflow's `logs` at
            lines.append(f"step {f.step} failed: {error_line(f.message)}")
            continue
        pathspec = task_pathspec(record, f)
        lines.append(f"step {f.step} failed ({record.flow}/{pathspec}): {error_line(f.message)}")
        lines.append(f"  its logs: {logs_command(flow_file, pathspec)}")
    return lines


def run_summary(record, pushed: str, verbose: bool = False, store: str | None = None) -> str:
    """What `repro run` ends with: the run in one line, pickle problems only (all checks with -v),
    where it went, and the next command."""
    from metaflow_repro.model.record import PickleStatus

    tasks = sum(len(s.tasks) for s in record.steps.values())
    artifacts = sum(len(t.artifacts) for s in record.steps.values() for t in s.tasks.values())
    lines = [
        f"run {record.ref}: {len(record.steps)} steps, {tasks} tasks, {artifacts} artifacts, "
        f"{len(record.envs)} environments",
        _pickle_counts(record),
    ]
    problems = [c for c in record.pickle_checks if c.status is not PickleStatus.OK]
    if verbose:
        lines.append(pickle_table(record))
    elif problems:
        lines.append(pickle_table(replace(record, pickle_checks=problems)))
    if any(c.status is PickleStatus.FAILS for c in record.pickle_checks):
        lines.append("some artifacts cannot be unpickled by a step that reads them (see 'fails' above)")
    lines += record.outside_reads()
    lines += [f"{p}: larger than input-max-bytes, recorded (sha256) but not kept" for p in record.data_files_not_kept()]
    if pushed:
        lines.append(f"pushed to {pushed}")
    lines.append(f"next: repro replay {record.ref}" + (f" --store {store}" if store else ""))
    if not verbose:
        lines.append("(repro run -v shows every pickle check)")
    return "\n".join(lines)


def _pickle_counts(record) -> str:
    from metaflow_repro.model.record import PickleStatus

    if not record.pickle_checks:
        return "pickle checks: no user artifacts"
    counts = {status: 0 for status in PickleStatus}
    for c in record.pickle_checks:
        counts[c.status] += 1
    return "pickle checks: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n)
