"""``repro`` command line. Thin: parse arguments, call the engine, print, map errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from tabulate import tabulate

from repro import __version__
from repro.errors import EXIT_DRIFT, EXIT_INFRA, EXIT_OK, ReproError, from_os_error
from repro.fsutil import atomic_write
from repro.model.record import PickleStatus, RunStatus
from repro.settings import REPLAY_PLACES, debug_requested

#: how many items a message lists before "and N more" (a store or a declaration may hold thousands)
LIST_LIMIT = 20

FLOW_HELP = "a flow file, or a folder whose *.py flow files are all used"


def _flow_files(paths: list[str]) -> list[Path]:
    from repro.env.flowfile import is_flow_candidate
    from repro.errors import BadInput

    out = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.py") if is_flow_candidate(f))
            if not found:
                raise BadInput(f"{p}: no flow files (*.py) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise BadInput(f"{p}: no such flow file or folder")
    return out


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_lock(args) -> int:
    from repro.env.engine import (
        lock_flow,
        open_flow,
        relock_command,
        spec_drift,
        target_platforms,
        uninstalled_pythons,
    )
    from repro.model.export import to_pylock

    if args.check and args.remove_platform:
        from repro.errors import BadInput

        raise BadInput("--check does not write the lock, so --remove-platform has nothing to do with it")
    if bool(args.from_conda_lock) != bool(args.step):
        from repro.errors import BadInput

        raise BadInput("--from FILE and --step STEP go together: the conda-lock file becomes that step's lock")
    status = EXIT_OK
    configs = [
        x
        for opt in ("config", "config_value")
        for pair in getattr(args, opt) or []
        for x in (f"--{opt.replace('_', '-')}", *pair)
    ]
    for path in _flow_files(args.flow):
        flow = open_flow(path, metaflow_args=configs)
        for warning in uninstalled_pythons(flow):
            print(f"repro: warning: {warning}", file=sys.stderr)
        if args.from_conda_lock:
            from repro.env.engine import import_conda_lock

            import_conda_lock(flow, Path(args.from_conda_lock), args.step)
            print(f"{path}: {args.step} locked from {args.from_conda_lock}")
        if args.check:
            drift = spec_drift(flow, target_platforms(flow, args.platform))
            if drift:
                status = EXIT_DRIFT
                print(f"{path}: the lock {flow.lock_file.name} does not match the flow {flow.name}:")
                print("\n".join(capped_lines([f"  {finding.line()}" for finding in drift])))
                print(f"  run `{relock_command(str(path), drift)}` to update it")
            else:
                print(f"{path}: lock is up to date ({len(flow.specs)} steps)")
            continue
        result = lock_flow(flow, platforms=args.platform, remove=args.remove_platform, log=_log)
        if result.written:
            print(f"{path}: wrote {flow.lock_file.name}")
            changed = [f"  {step}: {line}" for step, lines in result.changes.items() for line in lines]
            if changed:
                print("\n".join(capped_lines(changed)))
        else:
            print(f"{path}: {flow.lock_file.name} is up to date")
        if args.export_conda_lock:
            from repro.env import condalock

            for target in condalock.export(result.lock.steps, flow.name, path.name, Path(args.export_conda_lock)):
                print(f"  exported {target}")
        if args.export_pylock:
            outdir = Path(args.export_pylock)
            outdir.mkdir(parents=True, exist_ok=True)
            for step, sl in result.lock.steps.items():
                for pname, pl in sl.platforms.items():
                    if pl.is_conda:
                        continue  # a conda env: --export-conda-lock
                    target = outdir / f"pylock.{path.stem}-{step}-{pname}.toml".replace("_", "-")
                    atomic_write(target, to_pylock(pl, flow.name, step))
                    print(f"  exported {target}")
    return status


def _state_rows(flow, check_fingerprint: bool = True, steps: list[str] | None = None):
    from repro.env import fingerprint
    from repro.env.engine import environments
    from repro.model import platforms as plats

    local = plats.local_platform_name()
    envs = environments(flow.settings)
    rows, problems_of = [], {}  # env id -> runtime problems (one probe per env, not per step)
    drifted = False
    lock = flow.lock
    for step, spec in flow.specs.items():
        if steps and step not in steps:
            continue
        sl = lock.steps.get(step) if lock else None
        stale = sl is None or sl.spec_id != spec.spec_id
        pl = sl.platforms.get(local) if sl and not stale else None
        libs = ", ".join(f"{n}=={v}" for n, v in spec.libraries) or "-"
        if spec.disabled:
            rows.append([step, spec.spec_id[:12], "-", "user's", "disabled", spec.kind, "user env", "-"])
            continue
        if pl is None:
            rows.append(
                [
                    step,
                    spec.spec_id[:12],
                    "-",
                    spec.python,
                    libs,
                    spec.source,
                    "not locked" if sl is None else "lock stale",
                    "-",
                ]
            )
            continue
        built = envs.get(pl.env_id)
        state, fp_state = ("built", "-") if built else ("not built", "-")
        if built and check_fingerprint:
            if pl.env_id not in problems_of:
                problems_of[pl.env_id] = fingerprint.runtime_problems(built, pl)
            problems = problems_of[pl.env_id]
            drifted = drifted or bool(problems)
            fp_state = "matches lock" if not problems else "DRIFT: " + "; ".join(problems)
        rows.append(
            [
                step,
                spec.spec_id[:12],
                pl.env_id[:12],
                pl.python,
                f"{libs} (+{len(pl.packages) - len(spec.libraries)})"
                if spec.libraries
                else f"{len(pl.packages)} implicit",
                spec.source,
                state,
                fp_state,
            ]
        )
    return rows, drifted


def cmd_env_show(args) -> int:
    from repro.env.engine import open_flow

    status = EXIT_OK
    headers = ["step", "spec id", "env id", "python", "packages", "source", "state", "fingerprint"]
    for path in _flow_files(args.flow):
        flow = open_flow(path)
        unknown = [s for s in args.step or [] if s not in flow.specs]
        if unknown:
            from repro.errors import BadInput

            raise BadInput(
                f"{path}: no step named {', '.join(unknown)} in flow {flow.name} (steps: {', '.join(flow.specs)})"
            )
        rows, drifted = _state_rows(flow, check_fingerprint=not args.no_fingerprint, steps=args.step)
        if drifted:
            status = EXIT_DRIFT
        print(f"{flow.name} ({path})")
        print(tabulate(rows, headers=headers, tablefmt="simple"))
        print()
    return status


def cmd_env_build(args) -> int:
    from repro.env.engine import build_flow, open_flow

    for path in _flow_files(args.flow):
        flow = open_flow(path)
        built = build_flow(flow, steps=args.step, offline=args.offline, log=_log, repair=args.repair)
        for step, env in built.items():
            if env is None:
                print(f"{flow.name}.{step}: disabled (runs in the user's environment)")
            else:
                how = "reused" if env.reused else "built"
                print(f"{flow.name}.{step}: {how} env {env.env_id[:12]} at {env.path}")
    return EXIT_OK


def _comparison_table(comparison) -> str:
    from repro.checks.compare import Verdict

    rows = [[step, c["identical"], c["equivalent"], c["different"]] for step, c in comparison.by_step().items()]
    table = tabulate(rows, headers=["step", "identical", "equivalent", "different"], tablefmt="simple")
    details = [
        f"  {r.step}/{r.task}.{r.name}: {r.verdict}: {r.detail}"
        for r in comparison.results
        if r.verdict is not Verdict.IDENTICAL and r.detail
    ]
    return table + ("\n" + "\n".join(details) if details else "")


def _pickle_table(record) -> str:
    if not record.pickle_checks:
        return "pickle checks: no user artifacts"
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


def cmd_run(args) -> int:
    from repro.operations.run import RunOptions, run_and_record
    from repro.settings import load_settings

    settings = load_settings(Path(args.flow).resolve().parent)  # the flow's, read once: the run reuses them
    _pending_hint(settings)
    options = RunOptions(store=args.store, push=True, metaflow_args=tuple(args.metaflow_args), settings=settings)
    outcome = run_and_record(Path(args.flow), options, log=_log)
    if outcome.error:
        raise _error(outcome.error, outcome.error_code)
    record = outcome.record
    if record is None or record.status is not RunStatus.SUCCESS:
        for line in failed_tasks(outcome, Path(args.flow)):
            _log(line)
        _log(f"repro: run {record.ref if record else ''} failed; it is not pushed to the store")
        return outcome.exit_code or EXIT_DRIFT
    print(run_summary(record, outcome.pushed, verbose=args.verbose, store=args.store))
    return EXIT_OK


def failed_tasks(outcome, flow_file: Path) -> list[str]:
    """Each failed task of a run (local or AWS Batch alike): its step, pathspec, error line, and the
    command that shows its logs; capped."""
    from repro.model.findings import Kind
    from repro.operations.replay import error_line, logs_command, task_pathspec

    record, lines = outcome.record, []
    for f in [f for f in outcome.findings if f.kind is Kind.TASK_FAILED][:LIST_LIMIT]:
        if record is None:  # no run id: nothing to point Metaflow's `logs` at
            lines.append(f"step {f.step} failed: {error_line(f.message)}")
            continue
        pathspec = task_pathspec(record, f)
        lines.append(f"step {f.step} failed ({record.flow}/{pathspec}): {error_line(f.message)}")
        lines.append(f"  its logs: {logs_command(flow_file, pathspec)}")
    return lines


def capped_lines(lines: list[str], limit: int = LIST_LIMIT, indent: str = "  ") -> list[str]:
    from repro.model.validate import cap_lines

    return cap_lines(lines, limit, indent)


def verify_report(broken: list, results: list, uri: str, limit: int = LIST_LIMIT) -> str:
    """What `repro store verify` prints: unreadable records and records with problems first (each list
    capped), records found intact after them (capped too), then one line of totals."""
    if not broken and not results:
        return f"store {uri}: no runs recorded"
    lines = capped_lines([f"{key}: unreadable record: {why}" for key, why in broken], limit, "")
    damaged = [(ref, problems) for ref, problems in results if problems]
    for ref, problems in damaged[:limit]:
        lines.append(f"{ref}: {len(problems)} problem(s)")
        lines += capped_lines([f"  {p}" for p in problems], limit)
    if len(damaged) > limit:
        lines.append(f"and {len(damaged) - limit} more record(s) with problems")
    lines += capped_lines([f"{ref}: ok" for ref, problems in results if not problems], limit, "")
    lines.append(
        f"store {uri}: {len(results) + len(broken)} record(s): {len(results) - len(damaged)} ok, "
        f"{len(damaged)} with problems, {len(broken)} unreadable"
    )
    return "\n".join(lines)


def cmd_recover(args) -> int:
    from repro.operations.run import recover
    from repro.settings import load_settings

    outcomes = recover(load_settings(Path.cwd()), args.store, log=_log)
    if not outcomes:
        print("no pending runs: every run Metaflow finished is recorded")
        return EXIT_OK
    code = EXIT_OK
    for o in outcomes:
        if o.error:
            _log(f"repro: error: {o.error}")
            code = max(code, o.error_code)
        elif o.record is not None:
            where = f", pushed to {o.pushed}" if o.pushed else ""
            print(f"recovered {o.record.ref}: recorded in {o.saved}{where}")
    return code


def _pending_hint(settings) -> None:
    from repro.adapter import pending

    waiting = pending.pending(settings.home)
    if waiting:
        _log(
            f"repro: {len(waiting)} finished run(s) were never recorded (repro was stopped after Metaflow's "
            f"Done!): `repro recover` records and pushes them"
        )


def run_summary(record, pushed: str, verbose: bool = False, store: str | None = None) -> str:
    """What `repro run` ends with: the run in one line, pickle problems only (all checks with -v),
    where it went, and the next command."""
    tasks = sum(len(s.tasks) for s in record.steps.values())
    artifacts = sum(len(t.artifacts) for s in record.steps.values() for t in s.tasks.values())
    counts = {status: 0 for status in PickleStatus}
    for c in record.pickle_checks:
        counts[c.status] += 1
    lines = [
        f"run {record.ref}: {len(record.steps)} steps, {tasks} tasks, {artifacts} artifacts, "
        f"{len(record.envs)} environments",
        "pickle checks: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        if record.pickle_checks
        else "pickle checks: no user artifacts",
    ]
    problems = [c for c in record.pickle_checks if c.status is not PickleStatus.OK]
    if verbose:
        lines.append(_pickle_table(record))
    elif problems:
        lines.append(_pickle_table(replace(record, pickle_checks=problems)))
    if any(c.status is PickleStatus.FAILS for c in record.pickle_checks):
        lines.append("some artifacts cannot be unpickled by a step that reads them (see 'fails' above)")
    if pushed:
        lines.append(f"pushed to {pushed}")
    lines.append(f"next: repro replay {record.ref}" + (f" --store {store}" if store else ""))
    if not verbose:
        lines.append("(repro run -v shows every pickle check)")
    return "\n".join(lines)


def _error(message: str, code: int) -> ReproError:
    error = ReproError(message)
    error.exit_code = code
    return error


def cmd_image_build(args) -> int:
    from repro.containers import image
    from repro.settings import load_settings

    built = image.build(load_settings(Path.cwd()).home, log=_log)
    print(f"{built.tag} {built.id} (Python {built.python}){'' if built.built else ' (already built)'}")
    return 0


def cmd_replay(args) -> int:
    from repro.operations.replay import replay
    from repro.settings import load_settings

    result = replay(
        args.ref,
        args.store,
        load_settings(Path.cwd()),
        on=args.on,
        log=_log,
        extra_args=tuple(args.metaflow_args),
        keep=args.keep,
        image=args.image,
    )
    if result.replayed is not None:
        print(f"replayed {result.original.ref} as {result.replayed.ref}")
    if result.comparison is not None:
        print(_comparison_table(result.comparison))
    failure = result.failure
    if failure is not None:
        if failure.step:
            print(f"step {failure.step} failed ({failure.task}): {failure.error}")
            print(f"its logs: {failure.logs}")
        else:
            print(f"the replay did not run: {failure.error}")
            if failure.output:
                _log(failure.output[-4000:])
    if result.recorded or result.saved:
        assert result.replayed is not None, "only a replay that ran is recorded"
        print(
            f"replay recorded as {result.replayed.ref} (replay of {result.original.ref}) in "
            f"{result.recorded or result.saved}"
        )
    print(f"result: {result.verdict}")
    return result.exit_code


def cmd_diff(args) -> int:
    from repro.operations.run import compare_runs
    from repro.settings import load_settings
    from repro.store import open_store
    from repro.store.snapshot import load_record, parse_ref

    settings = load_settings(Path.cwd())
    store = open_store(args.store or settings.store)
    a = load_record(store, parse_ref(args.ref_a))
    b = load_record(store, parse_ref(args.ref_b))
    from repro.operations.run import check_same_flow

    check_same_flow(a, b, args.allow_other_flow)
    comparison = compare_runs(a, b, store, settings)
    print(f"{a.ref} -> {b.ref}")
    if comparison.code_changed:
        print(f"code: {comparison.code_note()}")
    print(_comparison_table(comparison))
    return 0 if comparison.same else EXIT_DRIFT


def cmd_store(args) -> int:
    from repro.settings import load_settings
    from repro.store import open_store
    from repro.store.snapshot import gc, load_record, parse_ref, verify

    settings = load_settings(Path.cwd())
    store = open_store(args.store or settings.store)
    if args.store_command == "ls":
        from repro.store.snapshot import scan_records

        listing = scan_records(store)
        rows = [
            [
                r.flow,
                r.run_id,
                r.created_at,
                r.status,
                len(r.steps),
                len(r.envs),
                sum(len(t.artifacts) for s in r.steps.values() for t in s.tasks.values()),
            ]
            for r in listing.records
        ]
        print(tabulate(rows, headers=["flow", "run", "created", "status", "steps", "envs", "artifacts"]))
        for key, _ in listing.broken[:20]:
            _log(f"repro: {key}: unreadable record, left out (`repro store verify` says why)")
        if len(listing.broken) > 20:
            _log(f"repro: and {len(listing.broken) - 20} more unreadable records")
        return EXIT_OK
    if args.store_command == "show":
        r = load_record(store, parse_ref(args.ref))
        print(
            f"{r.ref}  created {r.created_at}  status {r.status}  metaflow {r.metaflow_version}  "
            f"PYTHONHASHSEED={r.pythonhashseed}"
        )
        if r.identity:
            print(f"flow {r.identity}")
        if r.replay_of:
            print(f"replay of {r.replay_of}")
        if r.executor.image:
            print(f"ran on {r.executor.kind} (image {r.executor.image})")
        for version, snap in sorted(r.interpreters.items()):
            print(f"Python {version}: snapshot {snap.sha256[:12]} ({snap.size / 1e6:.1f} MB) of {snap.prefix}")
        if r.run_options:
            print("run options: " + " ".join(r.run_options))
        for name, inc in r.include_files.items():
            print(
                f"IncludeFile {name}: {inc.name}, {inc.size} bytes, sha256 {inc.sha256[:12]}"
                f"{'' if inc.is_text else ', binary'}"
            )
        for name, cfg in r.configs.items():
            print(f"Config {name} ({cfg.source}): {cfg.value if len(cfg.value) <= 200 else cfg.value[:200] + '...'}")
        for ref, up in r.inputs.items():
            read = sorted(f"{key}/{n}" for key, t in up.tasks.items() for n in t.artifacts)
            print(f"input {ref} ({up.via}), read by {', '.join(up.read_by)}: {', '.join(read) or 'no artifacts'}")
        rows = [
            [name, s.env_id[:12], len(s.tasks), sum(len(t.artifacts) for t in s.tasks.values())]
            for name, s in r.steps.items()
        ]
        print(tabulate(rows, headers=["step", "env id", "tasks", "artifacts"]))
        print(_pickle_table(r))
        return EXIT_OK
    if args.store_command == "verify":
        from repro.store.snapshot import scan_records, verify_cache

        bad = 0
        if args.cache:
            evicted, checked = verify_cache(settings)
            bad += bool(evicted)
            print(
                f"package cache {settings.home.packages}: {checked} file(s) re-hashed, "
                + (f"{len(evicted)} damaged and removed (fetched again when next needed):" if evicted else "ok")
            )
            for path in evicted[:20]:
                print(f"  {path}")
            if len(evicted) > 20:
                print(f"  and {len(evicted) - 20} more")
            if not args.ref and args.store is None:
                return EXIT_DRIFT if bad else EXIT_OK
        store.require_existing()  # a typo in the URI must not pass as an empty, healthy store
        if args.ref:
            records, broken = [load_record(store, parse_ref(args.ref))], []
        else:
            listing = scan_records(store)
            records, broken = listing.records, listing.broken
        bad += len(broken)
        results = [(r.ref, verify(r, store)) for r in records]
        bad += sum(1 for _, problems in results if problems)
        print(verify_report(broken, results, store.uri))
        return EXIT_DRIFT if bad else EXIT_OK
    if args.store_command == "push":
        from repro.operations.run import push_saved

        record = push_saved(args.ref, args.store, settings, log=_log)
        print(f"pushed {record.ref} to {store.uri}")
        return EXIT_OK
    if args.store_command == "gc":
        removed = gc(store, grace_seconds=args.grace_hours * 3600, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} object(s) no record names")
        print("\n".join(capped_lines([f"  {key}" for key in removed])))
        return EXIT_OK
    return EXIT_OK


def cmd_drift(args) -> int:
    from repro.checks.drift import check
    from repro.env.engine import open_flow
    from repro.errors import ReproError
    from repro.operations.run import latest_record
    from repro.settings import load_settings
    from repro.store import open_store
    from repro.store.snapshot import load_record, parse_ref

    settings = load_settings(Path.cwd())
    record = None
    if args.against:
        record = load_record(open_store(args.store or settings.store), parse_ref(args.against))
    status = EXIT_OK
    flows = [open_flow(path) for path in _flow_files(args.flow)]
    if record is not None and record.flow not in {f.name for f in flows}:
        from repro.errors import BadInput

        raise BadInput(
            f"--against {args.against}: that is a run of {record.flow}, which none of the flow files "
            f"defines ({', '.join(f.name for f in flows)})"
        )
    store = None
    if record is None:  # input drift is judged against the flow's latest recorded run, when there is one
        try:
            store = open_store(args.store or settings.store)
        except ReproError:
            store = None
    for flow in flows:
        path = flow.path
        against = record if record and record.flow == flow.name else None
        recorded = against or (latest_record(store, flow, log=_log) if store is not None else None)
        found = check(flow, resolution=not args.no_resolve, against=against, inputs_of=recorded)
        if found:
            status = EXIT_DRIFT
            print(f"{path}: drift found")
            print("\n".join(capped_lines([f"  {finding.kind}: {finding.line()}" for finding in found])))
        else:
            print(f"{path}: no drift")
    return status


def cmd_report(args) -> int:
    from repro.report import render as report
    from repro.report.document import build_flow, document
    from repro.settings import load_settings
    from repro.store import open_store
    from repro.store.snapshot import load_record, parse_ref

    settings = load_settings(Path.cwd())
    store = open_store(args.store or settings.store)
    record = load_record(store, parse_ref(args.ref))
    doc = document([build_flow(record.flow, record.flow_file, record, store=store.uri)])
    text = report.RENDER[args.format](doc)
    if args.output:
        atomic_write(Path(args.output), text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_doctor(args) -> int:
    from repro.operations import doctor
    from repro.settings import load_settings

    settings = load_settings(Path.cwd())
    if args.store:
        settings = replace(settings, store=args.store)
    found = doctor.checks(settings)
    rows = [("ok" if c.ok else "PROBLEM", c.what, c.found, c.detail) for c in found]
    print(tabulate(rows, headers=["state", "check", "found", "detail"]))
    bad = [c for c in found if not c.ok]
    if bad:
        print(f"\n{len(bad)} problem(s): " + "; ".join(f"{c.what}: {c.detail}" for c in bad))
        return EXIT_DRIFT
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repro",
        description="Prove a Metaflow flow's results can be reproduced. Exit codes: 0 ok, "
        "1 a difference or drift was found, 2 bad input, 3 infrastructure failure.",
    )
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("lock", help="resolve every step's environment and write <flow>.repro.lock")
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
    p.add_argument(
        "--check",
        action="store_true",
        help="do not write: exit 1 and show what differs if the lock no longer matches the flow",
    )
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
    p.set_defaults(func=cmd_lock)

    env = sub.add_parser("env", help="inspect and build step environments")
    esub = env.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    p = esub.add_parser("show", help="table of steps, spec ids, env ids and their state")
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument("--step", action="append", help="only this step (repeatable)")
    p.add_argument("--no-fingerprint", action="store_true", help="skip re-fingerprinting built environments")
    p.set_defaults(func=cmd_env_show)
    p = esub.add_parser("build", help="build (or reuse) every step's environment")
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-hash every file of each built environment against its RECORD; rebuild damaged ones",
    )
    p.add_argument("--step", action="append", help="only this step (repeatable)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="never touch the network: use the lock as it is and the package cache only",
    )
    p.set_defaults(func=cmd_env_build)
    p = sub.add_parser("run", help="run a flow under repro's environments, record it and push the snapshot")
    p.add_argument("flow", help="the flow file")
    p.add_argument("--store", help="store URI (default: REPRO_STORE or file://$REPRO_HOME/store)")
    p.add_argument("-v", "--verbose", action="store_true", help="show every pickle check, not only the problems")
    p.set_defaults(func=cmd_run, metaflow_args=[])
    p.epilog = "Options for Metaflow's `run` go after --, e.g. `repro run flow.py -- --alpha 0.5`."
    p = sub.add_parser(
        "recover",
        help="record and push the runs Metaflow finished but repro did not record (repro was stopped)",
        description="A `repro run` killed after Metaflow's Done! leaves a pending run in REPRO_HOME/pending: "
        "read each back from Metaflow's datastore, record it and push it, as `repro run` would have.",
    )
    p.add_argument("--store", help="store URI (default: the store the run was going to)")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("replay", help="rebuild a recorded run offline from the store, run it again, compare")
    p.add_argument("ref", help="FlowName/run_id, FlowName/latest, or a record.json file")
    p.add_argument("--store", help="store URI (default: REPRO_STORE or file://$REPRO_HOME/store)")
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
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the replay's working folder (code, datastore) under REPRO_HOME/replays",
    )
    p.set_defaults(func=cmd_replay, metaflow_args=[])
    p.epilog = (
        "Exit codes: 0 identical (or equivalent), 1 different, 3 replay failed. Options after -- add to or "
        "override the recorded run options, e.g. `repro replay F/1 -- --max-workers 2`."
    )

    p = sub.add_parser(
        "diff",
        help="compare two recorded runs artifact by artifact",
        description="Compare two recorded runs artifact by artifact: exit 0 when every artifact "
        "is identical or equivalent, 1 when one differs.",
    )
    p.add_argument(
        "ref_a", metavar="REF_A", help="the first run: FlowName/run_id, FlowName/latest, or a record.json file"
    )
    p.add_argument("ref_b", metavar="REF_B", help="the second run, compared with the first (same forms)")
    p.add_argument("--store", help="store URI (default: REPRO_STORE or file://$REPRO_HOME/store)")
    p.add_argument(
        "--allow-other-flow",
        action="store_true",
        help="compare runs of different flows (same class name, other flow files)",
    )
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("drift", help="spec, resolution, runtime and input drift (exit 1 on any)")
    p.add_argument("flow", nargs="+", help=FLOW_HELP)
    p.add_argument("--against", metavar="REF", help="also compare the lock with the environments of a recorded run")
    p.add_argument("--store")
    p.add_argument("--no-resolve", action="store_true", help="skip re-resolving (no network)")
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("report", help="render a recorded run as Markdown, JSON or HTML")
    p.add_argument("ref", help="FlowName/run_id, FlowName/latest, or a record.json file")
    p.add_argument("--format", choices=["md", "json", "html"], default="md")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.add_argument("--store")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "doctor",
        help="check this machine: interpreters, uv, store reachability, TLS trust, REPRO_HOME",
        description="One table: installed interpreters, uv's version, whether the store answers (a local "
        "folder, or S3 head_bucket with a short timeout), where TLS certificates are trusted from "
        "(SSL_CERT_FILE, REQUESTS_CA_BUNDLE, pip's cert, the system), and REPRO_HOME's health (a "
        "writable folder with free space). Exit 0 when everything is healthy, 1 when something is not.",
    )
    p.add_argument("--store", help="store URI to check (default: REPRO_STORE or file://$REPRO_HOME/store)")
    p.set_defaults(func=cmd_doctor)

    im = sub.add_parser("image", help="container images for `repro replay --on docker`")
    isub = im.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    p = isub.add_parser(
        "build",
        help="build the base image from Debian's package archive (debootstrap) where no registry is reachable",
    )
    p.set_defaults(func=cmd_image_build)

    st = sub.add_parser("store", help="list, show, verify and garbage-collect a store")
    ssub = st.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    for name, helptext in (
        ("ls", "list recorded runs"),
        ("show", "show one run"),
        ("verify", "re-hash every object a record names"),
        ("gc", "remove objects no record names"),
        ("push", "push a run recorded here (completes a push that failed)"),
    ):
        p = ssub.add_parser(name, help=helptext)
        p.add_argument("--store")
        if name in ("show", "push"):
            p.add_argument("ref", help="FlowName/run_id, FlowName/latest, or a record.json file")
        if name == "verify":
            p.add_argument("ref", nargs="?", help="one run (default: every run in the store)")
            p.add_argument(
                "--cache",
                action="store_true",
                help="also re-hash every file of the local package cache and remove damaged ones "
                "(alone: only the cache)",
            )
        if name == "gc":
            p.add_argument(
                "--grace-hours",
                type=float,
                default=1.0,
                help="keep unnamed objects younger than this (a push may be in flight)",
            )
            p.add_argument("--dry-run", action="store_true")
        p.set_defaults(func=cmd_store)
    return parser


def _usable_home() -> None:
    from repro.paths import usable_home
    from repro.settings import load_settings

    usable_home(load_settings(Path.cwd()))


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if argv is None and "rattler" in sys.modules:
        # py-rattler's runtime threads can still be winding down at interpreter exit, and CPython's
        # finalisation then aborts the process (SIGABRT after a finished command, about 1 run in 6
        # under load). The command is done: flush and leave without finalisation, keeping its code.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = []
    if "--" in argv:  # everything after -- belongs to Metaflow's `run`
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command == "run":
            parser.error(
                f"unrecognized arguments: {' '.join(unknown)}. Options for Metaflow's `run` go after --: "
                f"repro run {args.flow} -- {' '.join(unknown)}"
            )
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if passthrough:
        if args.command not in ("run", "replay"):
            parser.error("only `repro run` and `repro replay` take options after --")
        args.metaflow_args = passthrough
    os.environ.setdefault("METAFLOW_USER", os.environ.get("USER") or "repro")
    try:
        if args.command != "doctor":
            _usable_home()
        return args.func(args)
    except ReproError as exc:
        print(f"repro: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if debug_requested():
            raise
        error = from_os_error(exc)
        print(f"repro: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as exc:
        if debug_requested():
            raise
        print(
            f"repro: internal error: {type(exc).__name__}: {exc} (REPRO_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        return EXIT_INFRA


if __name__ == "__main__":
    sys.exit(main())
