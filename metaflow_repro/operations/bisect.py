"""`repro bisect REF --lock NEW_LOCK` (or `--against REF2`, or `--upgrade`): which package changes between
a recorded run's environments and a second set of locked environments (a lock file's, another run's, or
the recorded declarations resolved again today) flip an artifact.

The recorded run's code is laid out as a replay lays it out (``operations/replay.prepare``: pulled,
verified, its environments rebuilt). Each subset of the package changes the search asks about
becomes a hybrid lock (the recorded environments with the subset applied, ``checks/bisect.hybrid``),
checked by uv (every package pinned to its version in the hybrid; a subset uv cannot resolve, or
that would need a package the hybrid does not hold, is "unresolvable" and is not run), run through
the same pipeline as any run, and its artifacts compared with the recorded run's by the comparators.
The first subset run is the whole change set: the artifacts it changes are the targets, and a
subset "flips" when it changes one of them. The search is delta debugging (``checks/bisect.bisect_changes``).

Every hybrid that runs is recorded as a replay of the bisected run marked ``hybrid`` (its changes, the
artifacts that differed, the steps it ran), pushed to the store with its environments, and named by
``bisect/<answer key>.json``; its answer is also kept in ``REPRO_HOME/bisect``. A bisection asks there
first, then the store (read as untrusted: ``checks/bisect.hybrid_problem``), and runs only what neither
knows."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from metaflow_repro import executors
from metaflow_repro.adapter.metaflow import split_top_level
from metaflow_repro.checks.bisect import (
    Outcome,
    PackageChange,
    Search,
    bisect_changes,
    candidates,
    hybrid,
    hybrid_problem,
)
from metaflow_repro.checks.compare import Verdict
from metaflow_repro.env.engine import lock_flow, open_flow
from metaflow_repro.env.pypi import compile_packages
from metaflow_repro.errors import BadInput, ReproError, ResolutionError
from metaflow_repro.executors.base import ReplayPlan
from metaflow_repro.fsutil import atomic_write
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.lock import Lock, PlatformLock, lock_path, read_lock, write_lock
from metaflow_repro.model.record import Hybrid, RunRecord
from metaflow_repro.model.spec import sha256_json
from metaflow_repro.model.validate import At, load_json
from metaflow_repro.operations.records import load, open_named
from metaflow_repro.operations.replay import _NotRunnable, load_request, prepare
from metaflow_repro.operations.run import Log, RunOptions, check_same_flow, compare_runs, run_and_record
from metaflow_repro.operations.run import Outcome as RunOutcome
from metaflow_repro.settings import Settings, environ_for, load_settings
from metaflow_repro.store import Store, layout
from metaflow_repro.store.base import StoreObjectMissing
from metaflow_repro.store.snapshot import push_hybrid_record, record_at, save_local

RUN_FAILED = "the run failed"
_POINTER_BYTES = 4096  # a bisect/<key>.json names one run id


@dataclass(frozen=True)
class Tried:
    """One hybrid: the changes it applied, what it did, the run it made ("" when none ran), how long
    it took, and why (the artifacts that differ, or what made it unresolvable)."""

    changes: tuple[PackageChange, ...]
    outcome: Outcome
    run: str = ""
    seconds: float = 0.0
    detail: str = ""
    known: bool = False  # answered by an earlier bisection of the same pair: nothing ran
    steps: tuple[str, ...] = ()  # the steps it ran (a resume clones the ones before them)

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": [str(c) for c in self.changes],
            "verdict": self.outcome.value,
            "run": self.run,
            "seconds": round(self.seconds, 1),
            "detail": self.detail,
            "known": self.known,
            "steps": list(self.steps),
        }


@dataclass
class BisectResult:
    original: RunRecord
    against: str  # the lock file or the run the new environments came from
    search: Search
    targets: tuple[str, ...] = ()  # step.artifact the whole change set changes, in step order
    tried: list[Tried] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def origins(self) -> tuple[str, ...]:
        """The targets less the copies downstream steps pass on: each artifact name at its first step."""
        seen: set[str] = set()
        out = []
        for target in self.targets:
            name = target.split(".", 1)[1]
            if name not in seen:
                seen.add(name)
                out.append(target)
        return tuple(out)

    @property
    def reruns(self) -> int:
        return sum(1 for t in self.tried if t.run and not t.known)

    @property
    def failed(self) -> str:
        """Why the run on every change failed ("" when it ran): then nothing can be bisected."""
        first = self.tried[0] if self.tried else None
        return first.detail if first is not None and first.outcome is Outcome.UNRESOLVABLE else ""

    def summary(self) -> str:
        if self.failed:
            return f"{self.original.ref} on the new environments: {self.failed}; nothing to bisect"
        if not self.search.reproduced:
            return (
                f"no artifact of {self.original.ref} differs with every change applied "
                f"({len(self.search.changes)} package changes, {self.reruns} reruns, {self.seconds:.0f} s)"
            )
        culprits = ", ".join(str(c) for c in self.search.culprits)
        how = "alone" if len(self.search.culprits) == 1 else "together"
        verb = "differs" if len(self.origins) == 1 else "differ"
        return (
            f"{', '.join(self.origins)} {verb} because of {culprits} "
            f"({how}; {self.reruns} reruns, {self.seconds:.0f} s)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.original.ref,
            "against": self.against,
            "summary": self.summary(),
            "reproduced": self.search.reproduced,
            "targets": list(self.targets),
            "changes": [c.as_dict() for c in self.search.changes],
            "culprits": [c.as_dict() for c in self.search.culprits],
            "reruns": self.reruns,
            "seconds": round(self.seconds, 1),
            "tried": [t.as_dict() for t in self.tried],
        }


def step_envs(record: RunRecord) -> dict[str, PlatformLock]:
    """{step: the environment it ran in} of a recorded run (disabled steps have none)."""
    return {
        name: record.envs[step.env_id]
        for name, step in record.steps.items()
        if not step.disabled and step.env_id in record.envs
    }


def lock_envs(path: Path, record: RunRecord) -> dict[str, PlatformLock]:
    """{step: environment} a lock file gives the record's steps, for this machine's platform."""
    lock = read_lock(Path(path))
    if lock is None:
        raise BadInput(f"--lock {path}: no such lock file", path=str(path))
    local = plats.local_platform_name()
    out = {}
    for step in step_envs(record):
        sl = lock.steps.get(step)
        if sl is None or local not in sl.platforms:
            raise BadInput(
                f"--lock {path}: step {step} of {record.ref} has no {local} environment there; "
                f"lock it for this platform (`repro lock`)",
                step=step,
                path=str(path),
            )
        out[step] = sl.platforms[local]
    return out


def bisect(
    ref: str,
    store_uri: str | None,
    settings: Settings,
    *,
    lock_file: Path | None = None,
    against: str | None = None,
    upgrade: bool = False,
    keep: bool = False,
    log: Log = print,
) -> BisectResult:
    """Find the smallest set of package changes between ``ref``'s environments and those of
    ``lock_file`` (or of the run ``against``, or the recorded declarations resolved again today:
    ``upgrade``) that changes one of the artifacts the whole set changes."""
    if [lock_file is not None, against is not None, upgrade].count(True) != 1:
        raise BadInput("repro bisect: give one of --lock NEW_LOCK, --against REF2 or --upgrade")
    started = time.perf_counter()
    store = open_named(settings, store_uri)
    original = load(store, ref)
    old = step_envs(original)
    place = executors.for_place("local")
    request = load_request(ref, store, settings, place, place.executor())
    workdirs: list[Path] = []

    def laid_out() -> ReplayPlan:
        try:
            return prepare(request, log, workdirs)
        except _NotRunnable as exc:
            raise BadInput(f"{original.ref}: its code cannot run here: {exc.failure.error}") from None

    runner = _Runner(laid_out, original, store, settings, old, log)
    try:
        if lock_file is not None:
            new = lock_envs(lock_file, original)
        elif against is not None:
            other = load(store, against)
            check_same_flow(original, other)
            new = step_envs(other)
        else:
            new = runner.resolved_today()
        changes = candidates(old, new)
        if not changes:
            raise BadInput(f"{original.ref}: the two sets of environments hold the same packages: nothing to bisect")
        log(f"bisecting {len(changes)} package changes of {original.ref}: " + "; ".join(map(str, changes)))
        search = bisect_changes(changes, runner)
    finally:
        for workdir in workdirs:
            if keep:
                log(f"bisection working folder kept: {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    return BisectResult(
        original=original,
        against=str(lock_file) if lock_file is not None else str(against),
        search=search,
        targets=runner.targets,
        tried=runner.tried,
        seconds=time.perf_counter() - started,
    )


class _Runner:
    """The test the search asks: build the hybrid lock of a subset, check it resolves, run it, compare. Each
    answer is kept in REPRO_HOME/bisect by the recorded run and the hybrid's env ids, and each run in the
    store as a record, so a second bisection of the same pair, here or on a teammate's machine, runs
    nothing that ran before."""

    def __init__(
        self,
        plan: Callable[[], ReplayPlan],
        original: RunRecord,
        store: Store,
        settings: Settings,
        old: dict[str, PlatformLock],
        log: Log,
    ):
        self.prepare, self.original, self.store, self.settings, self.old, self.log = (
            plan,
            original,
            store,
            settings,
            old,
            log,
        )
        self.targets: tuple[str, ...] = ()
        self.tried: list[Tried] = []
        self.first = True
        self.cache = settings.home.root / "bisect"
        self.cache.mkdir(parents=True, exist_ok=True)
        self._plan: tuple[ReplayPlan, Lock, dict[str, str]] | None = None
        self.session: list[tuple[str, dict[str, str]]] = []  # (run id, {step: env id}) of each run here

    def plan(self) -> tuple[ReplayPlan, Lock, dict[str, str]]:
        """The recorded code laid out (once, when a hybrid first has to run), its lock and the
        environment of the runs: online, unlike a replay's, since a hybrid holds packages the store
        may not have."""
        if self._plan is None:
            plan = self.prepare()
            recorded = read_lock(lock_path(plan.flow_file))
            if recorded is None:
                raise BadInput(f"{self.original.ref}: its code package holds no lock file")
            drop = ("UV_OFFLINE", "REPRO_INDEX_URL", "REPRO_FIND_LINKS")
            env = {k: v for k, v in plan.env.items() if k not in drop}
            env.update(environ_for(offline=False))
            if self.settings.index_url:
                env.update(environ_for(index_url=self.settings.index_url))
            if self.settings.find_links:
                env.update(environ_for(find_links=tuple(self.settings.find_links)))
            self._plan = (plan, recorded, env)
        return self._plan

    def resolved_today(self) -> dict[str, PlatformLock]:
        """{step: environment} of the recorded code's declarations, every step resolved again now (the
        recorded lock set aside), for this platform; nothing is written."""
        plan, _, env = self.plan()
        flow = open_flow(plan.flow_file, settings=load_settings(plan.flow_file, environ={**os.environ, **env}))
        local = plats.local_platform_name()
        fresh = lock_flow(replace(flow, lock=None), platforms=[local], log=self.log, write=False).lock
        return {step: fresh.steps[step].platforms[local] for step in self.old}

    def __call__(self, subset: tuple[PackageChange, ...]) -> Outcome:
        first, self.first = self.first, False
        envs = {step: hybrid(step, pl, subset) for step, pl in self.old.items()}
        key = sha256_json(
            {
                "run": self.original.ref,
                "code": self.original.code_sha256,
                "envs": {s: e.env_id for s, e in envs.items()},
            }
        )
        found = self._known(key, envs)
        if found is None:
            problem = "" if first else self._unresolvable(envs)
            unresolvable = _Answer(Outcome.UNRESOLVABLE.value, detail=problem)
            found = unresolvable if problem else self._run(envs, key, subset)
            if not found.detail.startswith(RUN_FAILED):  # a failed run may be the machine's fault: asked again
                atomic_write(self.cache / f"{key}.json", json.dumps(asdict(found)))
        if first:
            self.targets = found.differing
        tried = self._judge(subset, found)
        self.tried.append(tried)
        self.log(f"  [{len(self.tried)}] {_names(subset)}: {tried.outcome} ({tried.detail})")
        return tried.outcome

    def _known(self, key: str, envs: dict[str, PlatformLock]) -> _Answer | None:
        """The answer an earlier bisection kept: here (REPRO_HOME/bisect, the fast path), else in the
        store (a hybrid's recorded run, whoever ran it), then kept here too; None: none."""
        found = _cached(self.cache / f"{key}.json")
        if found is None:
            found = self._stored(key, envs)
            if found is not None:
                atomic_write(self.cache / f"{key}.json", json.dumps(asdict(found)))
        return None if found is None else replace(found, cached=True)

    def _stored(self, key: str, envs: dict[str, PlatformLock]) -> _Answer | None:
        """The store's answer to the hybrid ``key``: the run its ``bisect/<key>.json`` names, read as untrusted
        input (the record decoded strictly, then checked to be this hybrid of this run, run in these
        environments). An answer that fails a check is said and not used: the hybrid runs again."""
        pointer = layout.bisect_answer(key)
        try:
            try:
                data = self.store.get_bytes(pointer)  # one request: most hybrids have no answer yet
            except StoreObjectMissing:
                return None
            doc = load_json(data, At(pointer), "a bisect answer", max_bytes=_POINTER_BYTES)
            run_id = doc.get("run") if isinstance(doc, dict) and set(doc) == {"run"} else None
            if not isinstance(run_id, str):
                raise BadInput(f"not a pointer to a run ({len(data)} bytes)")
            at = layout.record(layout.flow_dir(self.original.flow, self.original.identity), run_id)  # checks the run id
            record = record_at(self.store, at, self.store.get_bytes(at), self.original.flow, run_id)
            problem = hybrid_problem(record, key, self.original.ref, {s: e.env_id for s, e in envs.items()})
            if problem:
                raise BadInput(problem)
        except (ReproError, ValueError) as exc:
            self.log(f"  repro: {self.store.uri}/{pointer} gives no usable answer ({exc}); the hybrid runs again")
            return None
        assert record.hybrid is not None, "hybrid_problem checked it"
        mark = record.hybrid
        return _Answer("ran", record.ref, record.duration_s, differing=mark.differing, steps=mark.steps)

    def _judge(self, subset: tuple[PackageChange, ...], found: _Answer) -> Tried:
        seconds = 0.0 if found.cached else found.seconds
        if found.outcome == Outcome.UNRESOLVABLE.value:
            return Tried(subset, Outcome.UNRESOLVABLE, found.run, seconds, found.detail, found.cached, found.steps)
        hit = [d for d in found.differing if d in self.targets]
        outcome = Outcome.FLIPS if hit else Outcome.SAME
        detail = f"{', '.join(hit)} differs" if hit else "the target artifacts are as recorded"
        detail += f"; ran {', '.join(found.steps)}" if found.steps else ""
        detail += " (known)" if found.cached else ""
        return Tried(subset, outcome, found.run, seconds, detail, found.cached, found.steps)

    def _unresolvable(self, envs: dict[str, PlatformLock]) -> str:
        """Why uv cannot make the hybrid environments ("" when it can): each is resolved with every
        package pinned to its version there, and must come out as exactly those packages."""
        for step, pl in sorted(envs.items()):
            if pl == self.old[step] or pl.is_conda:
                continue  # the recorded env; a conda env is built as locked (rattler checks it then)
            pins = "".join(f"{p.name}=={p.version}\n" for p in pl.packages)
            try:
                got = compile_packages(pins, pl.platform, pl.python, self.settings, f"step {step}")
            except ResolutionError as exc:  # its first line names the step; uv's own reason says why
                because = re.search(r"Because .*", str(exc))
                return str(exc).splitlines()[0].rstrip(":") + (f": {because.group(0)}" if because else "")
            want = {p.name: p.version for p in pl.packages}
            have = {p.name: p.version for p in got.wheels + got.sdists}
            extra = sorted(set(have) - set(want))
            if extra:
                return f"step {step}: would also need {', '.join(f'{n} {have[n]}' for n in extra)}"
        return ""

    def _run(self, envs: dict[str, PlatformLock], key: str, subset: tuple[PackageChange, ...]) -> _Answer:
        """Run the flow on the hybrid environments and compare it with the recorded run: resumed from
        an earlier run of this bisection (Metaflow's `resume`, its tasks before the first step whose
        environment differs cloned), else run whole; a resume Metaflow refuses is run whole."""
        plan, recorded, env = self.plan()
        local = plats.local_platform_name()
        steps = dict(recorded.steps)
        for step, pl in envs.items():
            steps[step] = replace(steps[step], platforms={**steps[step].platforms, local: pl})
        write_lock(replace(recorded, steps=steps), lock_path(plan.flow_file))
        started = time.perf_counter()
        origin = self._origin(envs)
        outcome = self._start(plan, env, origin)
        if origin and outcome.record is None:
            why = (outcome.error or outcome.output).strip()[-2000:]
            self.log(f"  resuming run {origin[0]} from {origin[1]} did not start, so the flow runs whole: {why}")
            origin, outcome = (), self._start(plan, env, ())
        seconds = time.perf_counter() - started
        record = outcome.record
        ref = record.ref if record else ""
        if record is None or outcome.error or outcome.exit_code != 0:
            lines = (outcome.error or outcome.output or f"exit code {outcome.exit_code}").strip().splitlines()
            return _Answer(Outcome.UNRESOLVABLE.value, ref, seconds, f"{RUN_FAILED}: {lines[-1] if lines else ''}")
        self.session.append((record.run_id, {s: e.env_id for s, e in envs.items()}))
        order = self.order
        rerun = order[order.index(origin[1]) :] if origin else order
        comparison = compare_runs(self.original, record, self.store, self.settings)
        found = {(r.step, r.name) for r in comparison.results if r.verdict is Verdict.DIFFERENT}
        differing = tuple(f"{s}.{n}" for s, n in sorted(found, key=lambda sn: (order.index(sn[0]), sn)))
        self._record(record, Hybrid(key, tuple(str(c)[:1000] for c in subset), differing, tuple(rerun)))
        return _Answer("ran", ref, seconds, differing=differing, steps=tuple(rerun))

    def _record(self, record: RunRecord, mark: Hybrid) -> None:
        """Record a hybrid's run as a replay of the bisected run (so it is never its flow's ``latest``, and
        ``repro audit`` judges it against that run, never replays it), marked with its answer: kept here,
        then in the store with the pointer ``bisect/<key>.json`` to it (written last), so a bisection of
        the same pair anywhere finds it. A store that cannot take it is said; the answer is still kept here."""
        record = replace(record, replay_of=self.original.ref, interpreters=self.original.interpreters, hybrid=mark)
        saved = save_local(record, self.settings)
        try:
            push_hybrid_record(record, self.store, self.settings)
            self.store.put_bytes(layout.bisect_answer(mark.key), json.dumps({"run": record.run_id}).encode())
        except ReproError as exc:
            self.log(
                f"  repro: hybrid {record.ref} is kept in {saved} but could not be recorded in {self.store.uri}: {exc}"
            )

    @property
    def order(self) -> list[str]:
        return list(self.original.step_order or self.original.steps)

    def _origin(self, envs: dict[str, PlatformLock]) -> tuple[str, ...]:
        """(run id, step) to resume from: the run of this bisection that shares the most leading steps'
        environments with the hybrid, and the first step that differs; () when none shares the first."""
        best: tuple[str, ...] = ()
        best_at = 0
        want = {s: e.env_id for s, e in envs.items()}
        for run_id, ran in self.session:
            at = next((i for i, s in enumerate(self.order) if ran.get(s) != want.get(s)), len(self.order))
            if best_at < at < len(self.order):
                best, best_at = (run_id, self.order[at]), at
        return best

    def _start(self, plan: ReplayPlan, env: dict[str, str], origin: tuple[str, ...]) -> RunOutcome:
        top, _ = split_top_level(list(plan.args.recorded))
        settings = load_settings(plan.flow_file, environ={**os.environ, **env})
        options = RunOptions(
            store=self.store.uri,
            frozen=True,  # a resume takes the origin's parameters: only configs and run options are given
            metaflow_args=(*top, *plan.args.placed) if origin else plan.args.metaflow_args,
            env=dict(env),
            identity=self.original.identity,
            pickle_checks=False,
            settings=settings,
            cwd=plan.workdir,
            capture=True,
            resume=origin,
        )
        return run_and_record(plan.flow_file, options, log=lambda _msg: None)


@dataclass(frozen=True)
class _Answer:
    """What a hybrid did, as kept in REPRO_HOME/bisect: "ran" (``differing``: the artifacts that differ
    from the recorded run's) or "unresolvable" (``detail``: why)."""

    outcome: str
    run: str = ""
    seconds: float = 0.0
    detail: str = ""
    differing: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()  # the steps it ran (the others were cloned by Metaflow's resume)
    cached: bool = False


def _cached(path: Path) -> _Answer | None:
    """A kept answer, checked (a file of REPRO_HOME, read as untrusted: anything else is no answer)."""
    try:
        doc = load_json(path.read_bytes(), At(str(path)), "a kept bisect answer", max_bytes=1 << 20)
    except (OSError, ReproError):
        return None
    if not isinstance(doc, dict) or doc.get("outcome") not in ("ran", Outcome.UNRESOLVABLE.value):
        return None
    texts = [doc.get(k) for k in ("run", "detail")]
    differing, steps = doc.get("differing"), doc.get("steps")
    if not isinstance(steps, list) or not all(isinstance(x, str) and x.isidentifier() for x in steps):
        return None
    if not all(isinstance(t, str) for t in texts) or not isinstance(doc.get("seconds"), (int, float)):
        return None
    if not isinstance(differing, list) or not all(isinstance(d, str) and "." in d for d in differing):
        return None
    return _Answer(doc["outcome"], doc["run"], float(doc["seconds"]), doc["detail"], tuple(differing), tuple(steps))


def _names(subset: tuple[PackageChange, ...]) -> str:
    return "; ".join(map(str, subset)) or "(no change)"
