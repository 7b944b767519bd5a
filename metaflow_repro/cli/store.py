"""``repro store ls|show|verify|gc|push``: list and show recorded runs, re-hash what records name,
remove what none names, push a run recorded here. The work: ``metaflow_repro.operations`` (records, verify,
gc, push)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from metaflow_repro.cli.common import LIST_LIMIT, add_flag, add_ref, add_store, capped_lines, log, pickle_table
from metaflow_repro.errors import EXIT_DRIFT, EXIT_OK, VALUE_CHARS, printable, printable_lines

if TYPE_CHECKING:
    from metaflow_repro.settings import Settings


def _say(text: str) -> None:
    """Print (stdout) what a command shows: names and values from records and the store, which are
    untrusted, so every line is escaped and bounded (``printable_lines``), however long the listing."""
    print(printable_lines(text, max_lines=sys.maxsize))


def configure(st: argparse.ArgumentParser) -> None:
    ssub = st.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    p = ssub.add_parser("ls", help="list recorded runs")
    add_store(p)
    p.set_defaults(func=ls)
    p = ssub.add_parser("show", help="show one run")
    add_store(p)
    add_ref(p)
    p.set_defaults(func=show)
    p = ssub.add_parser("verify", help="re-hash every object a record names")
    add_store(p)
    add_ref(p, help="one run (default: every run in the store)", nargs="?")
    add_flag(
        p,
        "--cache",
        help="also re-hash every file of the local package cache and remove damaged ones (alone: only the cache)",
    )
    p.set_defaults(func=verify)
    p = ssub.add_parser("gc", help="remove objects no record names")
    add_store(p)
    p.add_argument(
        "--grace-hours",
        type=float,
        default=1.0,
        help="keep unnamed objects younger than this (a push may be in flight)",
    )
    add_flag(p, "--dry-run")
    p.set_defaults(func=gc)
    p = ssub.add_parser("push", help="push a run recorded here (completes a push that failed)")
    add_store(p)
    add_ref(p)
    p.set_defaults(func=push)
    p = ssub.add_parser("import", help="load a bundle (repro bundle) into a store; objects already there are skipped")
    add_store(p)
    p.add_argument("file", help="the bundle file")
    p.set_defaults(func=import_)


def ls(args: argparse.Namespace, settings: Settings) -> int:
    from tabulate import tabulate

    from metaflow_repro.operations.records import listing, open_named

    found = listing(open_named(settings, args.store))
    rows = [
        [
            printable(r.flow),
            printable(r.run_id),
            printable(r.created_at),
            printable(r.status),
            len(r.steps),
            len(r.envs),
            sum(len(t.artifacts) for s in r.steps.values() for t in s.tasks.values()),
        ]
        for r in found.records
    ]
    _say(tabulate(rows, headers=["flow", "run", "created", "status", "steps", "envs", "artifacts"]))
    for key, _ in found.broken[:LIST_LIMIT]:
        log(f"repro: {key}: unreadable record, left out (`repro store verify` says why)")
    if len(found.broken) > LIST_LIMIT:
        log(f"repro: and {len(found.broken) - LIST_LIMIT} more unreadable records")
    return EXIT_OK


def show(args: argparse.Namespace, settings: Settings) -> int:
    from tabulate import tabulate

    from metaflow_repro.operations.records import load, open_named

    r = load(open_named(settings, args.store), args.ref)
    p = printable
    _say(
        f"{p(r.ref)}  created {p(r.created_at)}  status {p(r.status)}  metaflow {p(r.metaflow_version)}  "
        f"PYTHONHASHSEED={p(r.pythonhashseed)}"
    )
    for line in _provenance(r) + _inputs(r):
        _say(line)
    rows = [
        [p(name), s.env_id[:12], len(s.tasks), sum(len(t.artifacts) for t in s.tasks.values())]
        for name, s in r.steps.items()
    ]
    _say(tabulate(rows, headers=["step", "env id", "tasks", "artifacts"]))
    _say(pickle_table(r))
    return EXIT_OK


def _provenance(r) -> list[str]:
    """Where a run came from: its flow identity, the run it replays, where it ran, its interpreters
    and run options."""
    p = printable
    lines = []
    if r.identity:
        lines.append(f"flow {p(r.identity)}")
    if r.replay_of:
        lines.append(f"replay of {p(r.replay_of)}")
    if r.hybrid is not None:  # a `repro bisect` hybrid: the bisected run with these package changes
        changed = ", ".join(r.hybrid.differing) or "no artifact"
        lines.append(f"bisection hybrid: {p('; '.join(r.hybrid.changes), 4 * VALUE_CHARS)}; {p(changed)} differ(s)")
    if r.executor.image:
        lines.append(f"ran on {r.executor.kind} (image {p(r.executor.image)})")
    for version, snap in sorted(r.interpreters.items()):
        lines.append(f"Python {p(version)}: snapshot {snap.sha256[:12]} ({snap.size / 1e6:.1f} MB) of {p(snap.prefix)}")
    if r.run_options:
        lines.append("run options: " + p(" ".join(r.run_options), 4 * VALUE_CHARS))
    return lines


def _inputs(r) -> list[str]:
    """What a run read: its IncludeFiles, Config values and other flows' runs."""
    p = printable
    lines = [
        f"IncludeFile {p(name)}: {p(inc.name)}, {inc.size} bytes, sha256 {inc.sha256[:12]}"
        + ("" if inc.is_text else ", binary")
        for name, inc in r.include_files.items()
    ]
    lines += [f"Config {p(name)} ({p(cfg.source)}): {p(cfg.value)}" for name, cfg in r.configs.items()]
    for ref, up in r.inputs.items():
        read = sorted(f"{key}/{n}" for key, t in up.tasks.items() for n in t.artifacts)
        lines.append(
            f"input {p(ref)} ({p(up.via)}), read by {p(', '.join(up.read_by))}: {p(', '.join(read) or 'no artifacts')}"
        )
    return lines


def verify(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations.records import open_named
    from metaflow_repro.operations.verify import check_cache, check_store

    store = open_named(settings, args.store)
    bad = 0
    if args.cache:
        cache = check_cache(settings)
        bad += bool(cache.evicted)
        _print_cache(cache, settings)
        if not args.ref and args.store is None:
            return EXIT_DRIFT if bad else EXIT_OK
    found = check_store(store, args.ref)
    bad += found.bad
    _say(verify_report(found.broken, found.results, store.uri))
    return EXIT_DRIFT if bad else EXIT_OK


def _print_cache(cache, settings) -> None:
    evicted = cache.evicted
    _say(
        f"package cache {settings.home.packages}: {cache.checked} file(s) re-hashed, "
        + (f"{len(evicted)} damaged and removed (fetched again when next needed):" if evicted else "ok")
    )
    for path in evicted[:LIST_LIMIT]:
        _say(f"  {path}")
    if len(evicted) > LIST_LIMIT:
        _say(f"  and {len(evicted) - LIST_LIMIT} more")


def verify_report(broken: list, results: list, uri: str, limit: int = LIST_LIMIT) -> str:
    """What `repro store verify` prints: unreadable records and records with problems first (each list
    capped), records found intact after them (capped too), then one line of totals."""
    if not broken and not results:
        return f"store {uri}: no runs recorded"
    lines = capped_lines([f"{printable(key)}: unreadable record: {why}" for key, why in broken], limit, "")
    damaged = [(ref, problems) for ref, problems in results if problems]
    for ref, problems in damaged[:limit]:
        lines.append(f"{printable(ref)}: {len(problems)} problem(s)")
        lines += capped_lines([f"  {p}" for p in problems], limit)
    if len(damaged) > limit:
        lines.append(f"and {len(damaged) - limit} more record(s) with problems")
    lines += capped_lines([f"{printable(ref)}: ok" for ref, problems in results if not problems], limit, "")
    lines.append(
        f"store {uri}: {len(results) + len(broken)} record(s): {len(results) - len(damaged)} ok, "
        f"{len(damaged)} with problems, {len(broken)} unreadable"
    )
    return "\n".join(lines)


def gc(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations.gc import gc
    from metaflow_repro.operations.records import open_named

    removed = gc(open_named(settings, args.store), grace_seconds=args.grace_hours * 3600, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    _say(f"{verb} {len(removed)} object(s) no record names")
    _say("\n".join(capped_lines([f"  {printable(key)}" for key in removed])))
    return EXIT_OK


def push(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.operations.push import push

    pushed = push(args.ref, args.store, settings, log=log)
    _say(f"pushed {printable(pushed.record.ref)} to {pushed.store}")
    return EXIT_OK


def import_(args: argparse.Namespace, settings: Settings) -> int:
    from metaflow_repro.cli.bundle import import_

    return import_(args, settings)
