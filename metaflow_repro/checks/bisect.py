"""Dependency bisection, pure: the package changes between two sets of step environments
(``candidates``), a step's environment with some of them applied (``hybrid``), and delta debugging
over them with a test that says whether a subset flips the target artifacts: ``ddmin`` (the classic)
and ``bisect_changes`` (divide and conquer, which ``repro bisect`` uses: as cheap for one culprit,
half the tests for a pair).

Nothing here runs a flow: ``metaflow_repro.operations.bisect`` builds the hybrids, runs them and is
the ``test``. ddmin (Zeller and Hildebrandt, "Simplifying and isolating failure-inducing input", 2002)
finds a 1-minimal set: one culprit among n changes in about 2·log2(n) tests, and a pair that flips the
result only together is found as the pair. A subset that makes no valid environment ("unresolvable")
counts as not flipping and is reported."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from metaflow_repro.errors import BadInput
from metaflow_repro.model.findings import Choice
from metaflow_repro.model.lock import Package, PlatformLock
from metaflow_repro.model.record import RunRecord, RunStatus


class Outcome(Choice):
    """What one subset of the changes did to the target artifacts."""

    FLIPS = "flips"  # a target artifact differs from the original run's
    SAME = "same"  # every target artifact is as the original run's
    UNRESOLVABLE = "unresolvable"  # the subset makes no valid environment: not run


@dataclass(frozen=True, order=True)
class PackageChange:
    """One package that differs between the old and the new environments of some steps: ``old`` and
    ``new`` are the package entries (None: absent on that side), ``steps`` the steps whose environments
    have exactly this change."""

    name: str
    old: Package | None
    new: Package | None
    steps: tuple[str, ...] = ()

    @property
    def old_version(self) -> str:
        return self.old.version if self.old else ""

    @property
    def new_version(self) -> str:
        return self.new.version if self.new else ""

    def __str__(self) -> str:
        if self.old is None:
            return f"{self.name} (added) {self.new_version}"
        if self.new is None:
            return f"{self.name} {self.old_version} (removed)"
        if self.old_version == self.new_version:
            what = self.new.build or self.new.file
            return f"{self.name} {self.old_version} (another build: {what})"
        return f"{self.name} {self.old_version} -> {self.new_version}"

    def as_dict(self) -> dict[str, object]:
        return {"package": self.name, "old": self.old_version, "new": self.new_version, "steps": list(self.steps)}


def candidates(old: Mapping[str, PlatformLock], new: Mapping[str, PlatformLock]) -> tuple[PackageChange, ...]:
    """Every package difference (version, build or file, added, removed) between each step's old and
    new environment, one change per distinct (package, old entry, new entry), naming its steps.
    Steps must be the same on both sides and keep their Python (a Python change is not a package)."""
    if set(old) != set(new):
        raise BadInput(
            f"the two sets of environments cover different steps ({sorted(old)} and {sorted(new)}): "
            "bisection compares runs of one flow"
        )
    found: dict[tuple[str, Package | None, Package | None], list[str]] = {}
    for step in sorted(old):
        a, b = old[step], new[step]
        if a.python != b.python:
            raise BadInput(
                f"step {step}: Python {a.python} -> {b.python}; bisection applies package changes to one "
                "interpreter, so lock both with the same Python",
                step=step,
            )
        pa, pb = a.by_name(), b.by_name()
        for name in sorted(set(pa) | set(pb)):
            if pa.get(name) != pb.get(name):
                found.setdefault((name, pa.get(name), pb.get(name)), []).append(step)
    return tuple(sorted(PackageChange(n, o, w, tuple(s)) for (n, o, w), s in found.items()))


def hybrid(step: str, old: PlatformLock, changes: Iterable[PackageChange]) -> PlatformLock:
    """``old`` (the step's environment in the original run) with the ``changes`` that concern this step
    applied. Whether the result is a consistent environment is the resolver's question, not this one's."""
    packages = old.by_name()
    for change in changes:
        if step not in change.steps:
            continue
        if change.new is None:
            packages.pop(change.name, None)
        else:
            packages[change.name] = change.new
    return PlatformLock(
        platform=old.platform,
        python=old.python,
        packages=tuple(packages.values()),
        virtual_packages=old.virtual_packages,
        name_map=old.name_map,
    )


Test = Callable[[tuple[PackageChange, ...]], Outcome]


@dataclass(frozen=True)
class Trial:
    """One subset tried, in the order tried, and what it did."""

    changes: tuple[PackageChange, ...]
    outcome: Outcome


@dataclass
class Search:
    """A bisection's result: ``culprits`` is the 1-minimal set of changes that flips the target
    artifacts (empty when the whole set does not flip them: ``reproduced`` is then False)."""

    changes: tuple[PackageChange, ...]
    culprits: tuple[PackageChange, ...] = ()
    reproduced: bool = True
    trials: list[Trial] = field(default_factory=list)

    @property
    def unresolvable(self) -> list[tuple[PackageChange, ...]]:
        return [t.changes for t in self.trials if t.outcome is Outcome.UNRESOLVABLE]

    @property
    def tests(self) -> int:
        """How many subsets were run (or tried: an unresolvable one runs nothing)."""
        return len(self.trials)


class _Tester:
    """``test``, asked at most once per subset (the answers are kept), every answer in ``trials``."""

    def __init__(self, test: Test, order: Sequence[PackageChange]):
        self.test, self.trials = test, []  # type: ignore[var-annotated]
        self.rank = {c: i for i, c in enumerate(order)}
        self.known: dict[frozenset[PackageChange], Outcome] = {}

    def __call__(self, subset: Sequence[PackageChange]) -> Outcome:
        key = frozenset(subset)
        if key not in self.known:
            ordered = tuple(sorted(key, key=self.rank.__getitem__))
            self.known[key] = Outcome(self.test(ordered))
            self.trials.append(Trial(ordered, self.known[key]))
        return self.known[key]


def _split(items: Sequence[PackageChange], n: int) -> list[list[PackageChange]]:
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return [part for part in out if part]


def _reduce(tester: _Tester, current: list[PackageChange], n: int) -> tuple[list[PackageChange], int] | None:
    """One ddmin round at granularity ``n``: the smaller set that still flips and the next
    granularity, or None when no subset nor complement flips."""
    parts = _split(current, n)
    for part in parts:
        if tester(part) is Outcome.FLIPS:
            return part, 2
    if len(parts) > 2:  # with two parts, each complement is the other part: tested already
        for i in range(len(parts)):
            rest = [c for j, part in enumerate(parts) if j != i for c in part]
            if tester(rest) is Outcome.FLIPS:
                return rest, max(n - 1, 2)
    return None


def ddmin(changes: Sequence[PackageChange], test: Test) -> Search:
    """Delta debugging over ``changes``: the whole set is tested first (it must flip), then ever
    smaller subsets and complements, until no change can be left out (1-minimal). Subsets the test
    calls unresolvable count as not flipping and are reported."""
    items = list(changes)
    tester = _Tester(test, items)
    search = Search(changes=tuple(items), trials=tester.trials)
    if not items or tester(items) is not Outcome.FLIPS:
        search.reproduced = False
        return search
    current, n = items, 2
    while len(current) >= 2:
        step = _reduce(tester, current, min(n, len(current)))
        if step is not None:
            current, n = step
        elif n < len(current):
            n = min(2 * n, len(current))
        else:
            break
    search.culprits = tuple(current)
    return search


def _isolate(tester: _Tester, items: list[PackageChange], fixed: list[PackageChange]) -> list[PackageChange]:
    """A smallest part of ``items`` that flips together with ``fixed``, given that all of ``items``
    with ``fixed`` does: halve; follow the half that flips on its own; when neither does, the
    culprits straddle both halves: isolate those of the first half with the whole second half held,
    then those of the second half with them."""
    if len(items) == 1:
        return items
    first, second = items[: (len(items) + 1) // 2], items[(len(items) + 1) // 2 :]
    for half in (first, second):
        if tester(fixed + half) is Outcome.FLIPS:
            return _isolate(tester, half, fixed)
    kept = _isolate(tester, first, fixed + second)
    if tester(fixed + kept) is Outcome.FLIPS:
        return kept
    return kept + _isolate(tester, second, fixed + kept)


def bisect_changes(changes: Sequence[PackageChange], test: Test) -> Search:
    """Divide and conquer delta debugging (as QuickXplain): the whole set is tested first (it must
    flip), then halves, holding the other half fixed when neither flips alone. One culprit among n
    costs at most 2·log2(n) + 1 tests, k culprits about 2·k·log2(n/k) (a pair among 40: 16.4 on
    average over all 780 pairs, against ddmin's 29.8). The set found always flips and is 1-minimal,
    as ddmin's: a last pass leaves each of its changes out once. Subsets the test calls unresolvable
    count as not flipping and are reported."""
    items = list(changes)
    tester = _Tester(test, items)
    search = Search(changes=tuple(items), trials=tester.trials)
    if not items or tester(items) is not Outcome.FLIPS:
        search.reproduced = False
        return search
    found = _isolate(tester, items, [])
    for change in list(found) if len(found) > 1 else []:  # 1-minimal even where unresolvable subsets
        rest = [c for c in found if c != change]  # hid a smaller answer: each change left out once
        if tester(rest) is Outcome.FLIPS:
            found = rest
    search.culprits = tuple(sorted(found, key=tester.rank.__getitem__))
    return search


def hybrid_problem(record: RunRecord, key: str, original: str, env_ids: Mapping[str, str]) -> str:
    """Why a recorded run (read from a store: untrusted) does not answer the hybrid ``key`` of the run
    ``original``, whose steps run in ``env_ids`` ({step: env id}); "" when it does: it is marked as that
    hybrid of that run, it succeeded, each of those steps ran in the hybrid's environment, and the
    artifacts and steps it names are its own."""
    mark = record.hybrid
    if mark is None:
        return f"{record.ref} is no bisection hybrid"
    if mark.key != key or record.replay_of != original:
        return f"{record.ref} is a hybrid of another bisection ({record.replay_of or 'no run'}, key {mark.key[:12]})"
    if record.status is not RunStatus.SUCCESS:
        return f"{record.ref} did not succeed"
    ran = {step: s.env_id for step, s in record.steps.items() if step in env_ids}
    if ran != dict(env_ids):
        wrong = sorted(step for step in env_ids if ran.get(step) != env_ids[step])
        return f"{record.ref}: step(s) {', '.join(wrong)} did not run in the hybrid's environments"
    foreign = [d for d in mark.differing if d.split(".", 1)[0] not in record.steps]
    foreign += [s for s in mark.steps if s not in record.steps]
    if foreign:
        return f"{record.ref} names steps it does not have: {', '.join(foreign)}"
    return ""
