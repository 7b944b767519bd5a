"""``repro check FLOW --repeat N`` and ``pytest --repro --repro-repeat N``: run a flow N times in the
same locked environments, concurrently, and say which artifacts differ between the runs.

Every repeat is an ordinary ``run_and_record`` (its own Metaflow run). The environments are built once:
when the lock is current the repeats start together (a build of one env id is done by one of them
under its file lock, the others reuse it); when it is stale or missing, the first repeat runs alone
(it re-locks and builds, as ``repro run`` would) and the others follow together. The first run is
compared with each other one (``checks/compare``: the comparators and their tolerances) and
``checks/repeat`` judges the artifacts. Recorded repeats (``RunOptions.push``) are saved and pushed
only after that, each record naming the artifacts seen to differ (``RunRecord.nondeterministic``), so
that a later replay whose verdict is ``different`` there can say it is not new.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from metaflow_repro.checks.repeat import RepeatCheck, findings, judge
from metaflow_repro.env.engine import open_flow, spec_drift
from metaflow_repro.env.flowfile import FlowDeclarations, load_flow
from metaflow_repro.env.interpreter_snapshot import snapshot_interpreters
from metaflow_repro.errors import BadInput, ReproError
from metaflow_repro.model.findings import Kind
from metaflow_repro.model.platforms import local_platform_name
from metaflow_repro.operations.run import Outcome, RunOptions, compare_runs, push_saved, run_and_record
from metaflow_repro.settings import Settings, load_settings
from metaflow_repro.store import open_store
from metaflow_repro.store.snapshot import save_local

Log = Callable[[str], None]

#: at most this many repeats (each is a whole Metaflow run)
MAX_REPEAT = 100


def _quiet(_: str) -> None:
    pass


@dataclass
class Repeated:
    """N runs of one flow: each run's ``Outcome`` (in the order started), and, when at least two
    succeeded, their ``RepeatCheck``."""

    outcomes: list[Outcome]
    check: RepeatCheck | None = None
    saved: list[str] = field(default_factory=list)  # where each recorded repeat's record is kept here
    pushed: str = ""  # the store they were pushed to ("" when not recorded)

    @property
    def failed(self) -> list[tuple[int, Outcome]]:
        """(repeat number from 1, outcome) of every repeat that did not run through."""
        return [(i + 1, o) for i, o in enumerate(self.outcomes) if not o.ok]


def check_counts(repeat: int, jobs: int | None) -> None:
    """Refuse a repeat count below 2 or above ``MAX_REPEAT`` and a job count below 1 (bad input)."""
    if not 2 <= repeat <= MAX_REPEAT:
        raise BadInput(f"--repeat {repeat}: a determinism check runs the flow 2 to {MAX_REPEAT} times")
    if jobs is not None and jobs < 1:
        raise BadInput(f"-j {jobs}: at least one run at a time")


def repeat_runs(
    path: Path,
    options: RunOptions,
    repeat: int = 2,
    jobs: int | None = None,
    log: Log = _quiet,
    declarations: FlowDeclarations | None = None,
) -> Repeated:
    """Run the flow at ``path`` ``repeat`` times, at most ``jobs`` at a time (default: this machine's
    cores), and compare the runs. ``options`` are the first run's (its baseline, drift checks); the
    others only run. With ``options.push`` every successful repeat is recorded, after the comparison,
    and only the first may move the flow's ``latest`` (``options.move_latest``)."""
    check_counts(repeat, jobs)
    path = Path(path)
    settings = options.settings or load_settings(path)
    options = replace(options, settings=settings)
    store = open_store(options.store or settings.store) if options.push else None  # a bad store: before any run
    decl = declarations if declarations is not None else load_flow(path, options.metaflow_args)
    done = Repeated(_run_all(path, options, decl, repeat, jobs or os.cpu_count() or 1, log))
    ok = [o for o in done.outcomes if o.ok and o.record is not None]
    if len(ok) >= 2 and ok[0] is done.outcomes[0]:
        done.check = _compare(decl.name, ok, settings, log)
    if store is not None:
        _record_all(done, store.uri, settings, options.move_latest, log)
    return done


def _run_all(
    path: Path, options: RunOptions, decl: FlowDeclarations, repeat: int, jobs: int, log: Log
) -> list[Outcome]:
    """The repeats' outcomes, in order: the first run has ``options`` (its baseline, drift checks), the
    others only run; none is pushed here. When the lock is stale or missing the first runs alone (it
    re-locks and builds), then the others together."""
    assert options.settings is not None, "repeat_runs reads the settings once"
    first = replace(options, push=False)
    others = replace(first, baseline=None, drift=False, resolution_drift=False)
    outcomes: dict[int, Outcome] = {}
    if _lock_stale(path, options.settings, options, decl):
        log(f"{decl.name}: repeat 1 of {repeat} runs first (the lock is stale or missing: it re-locks)")
        outcomes[0] = run_and_record(path, first, log=_prefixed(log, 1, repeat), declarations=decl)
    lock = threading.Lock()
    calls = {
        i: functools.partial(
            run_and_record, path, first if i == 0 else others, _prefixed(log, i + 1, repeat, lock), decl
        )
        for i in range(repeat)
        if i not in outcomes
    }
    outcomes.update(in_parallel(calls, jobs))
    return [outcomes[i] for i in range(repeat)]


def in_parallel(calls: Mapping[int, Callable[[], Outcome]], jobs: int) -> dict[int, Outcome]:
    """Each call's result, at most ``jobs`` running at a time, each in a daemon thread: on Ctrl-C (or any
    error here) repro exits without waiting for them, and its Metaflow runs die with it (each is in a
    process group its watchdog stops when repro is gone: ``adapter/procgroup``). An exception a call
    raised is raised here."""
    slots = threading.BoundedSemaphore(jobs)
    results: dict[int, Outcome] = {}
    errors: list[BaseException] = []

    def one(i: int, call: Callable[[], Outcome]) -> None:
        try:
            results[i] = call()
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)
        finally:
            slots.release()

    threads = []
    for i, call in calls.items():
        slots.acquire()
        if errors:
            break
        thread = threading.Thread(target=one, args=(i, call), name=f"repeat-{i + 1}", daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _lock_stale(path: Path, settings: Settings, options: RunOptions, decl: FlowDeclarations) -> bool:
    """Whether the flow's lock is missing or does not cover this machine (the first run then re-locks)."""
    try:
        flow = open_flow(path, settings, options.metaflow_args, decl=decl)
        return bool(spec_drift(flow, [local_platform_name()]))
    except ReproError:  # the first run says what is wrong, once
        return True


def _prefixed(log: Log, n: int, of: int, lock: threading.Lock | None = None) -> Log:
    def say(message: str) -> None:
        if lock is None:
            log(f"[{n}/{of}] {message}")
            return
        with lock:
            log(f"[{n}/{of}] {message}")

    return say


def _compare(flow: str, ok: list[Outcome], settings: Settings, log: Log) -> RepeatCheck:
    records = [o.record for o in ok if o.record is not None]
    base = records[0]
    comparisons = []
    for other in records[1:]:
        log(f"{flow}: comparing {base.ref} with {other.ref}")
        comparisons.append(compare_runs(base, other, None, settings))
    return judge(flow, records, comparisons)


def _record_all(done: Repeated, store_uri: str, settings: Settings, move_latest: bool, log: Log) -> None:
    """Save and push every successful repeat, its record naming what differed between the repeats."""
    seen = done.check.nondeterministic() if done.check is not None else {}
    for i, outcome in enumerate(done.outcomes):
        if not outcome.ok or outcome.record is None:
            continue
        record = replace(outcome.record, nondeterministic=seen)
        record = replace(record, interpreters=snapshot_interpreters(record, settings, log=log))
        saved = save_local(record, settings)
        push_saved(str(saved), store_uri, settings, log, latest=move_latest and i == 0)
        outcome.record, outcome.saved, outcome.pushed = record, str(saved), store_uri
        done.saved.append(str(saved))
    done.pushed = store_uri


def run_repeated(
    path: Path,
    options: RunOptions,
    repeat: int,
    accepted: tuple[str, ...] = (),
    log: Log = _quiet,
    declarations: FlowDeclarations | None = None,
) -> Outcome:
    """``pytest --repro --repro-repeat N``: the first repeat's outcome, with a finding for each artifact
    that differs between the repeats (a warning for one ``accepted`` by ``[tool.repro] nondeterministic``)
    and for each task that failed in another repeat. Never raises a ReproError (as ``run_and_record``)."""
    try:
        done = repeat_runs(path, options, repeat, log=log, declarations=declarations)
    except ReproError as exc:
        return Outcome(path=str(Path(path).resolve())).fail(exc)
    outcome = done.outcomes[0]
    if done.check is not None:
        outcome.findings += findings(done.check, accepted)
    for n, other in done.failed:
        if other is outcome:
            continue
        if other.error and not outcome.error:  # it could not run at all: nothing of this flow is judged
            outcome.error, outcome.error_code = f"repeat {n} of {repeat}: {other.error}", other.error_code
        outcome.findings += [
            replace(f, message=f"in repeat {n} of {repeat} only (the same code in the same environments): {f.message}")
            for f in other.findings
            if f.kind in (Kind.TASK_FAILED, Kind.NOT_RUN)
        ]
    return outcome
