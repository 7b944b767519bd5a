"""Dependency bisection, the pure core: candidates between two sets of step environments, hybrids,
and ddmin against fake tests whose hidden culprits hypothesis picks."""

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaflow_repro.checks.bisect import (
    Outcome,
    PackageChange,
    bisect_changes,
    candidates,
    ddmin,
    hybrid,
    hybrid_problem,
)
from metaflow_repro.errors import BadInput
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.model.record import Hybrid, RunStatus
from tests.helpers import pkg
from tests.unit.model.test_record import make_record


def env(*packages, python="3.11.7"):
    return PlatformLock("linux-64", python, tuple(packages))


def changes(n):
    return [PackageChange(f"p{i:02d}", pkg(f"p{i:02d}", "1.0"), pkg(f"p{i:02d}", "2.0"), ("start",)) for i in range(n)]


def flips_when(culprit_sets, needs=()):
    """A fake test: flips when the subset holds every change of one culprit set (an interaction
    flips only whole); ``needs``: pairs (a, b) where a's new version requires b's, so a subset with a
    but not b makes no environment (the whole set always does: it is the new lock)."""

    def test(subset):
        names = {c.name for c in subset}
        if any(a in names and b not in names for a, b in needs):
            return Outcome.UNRESOLVABLE
        return Outcome.FLIPS if any(set(s) <= names for s in culprit_sets) else Outcome.SAME

    return test


def test_candidates_name_version_build_added_and_removed_changes_once_with_their_steps():
    calc1, calc2 = pkg("calc", "1.0"), pkg("calc", "1.1", "b" * 64)
    rebuilt = pkg("aux", "1.0", "c" * 64)
    old = {"start": env(calc1, pkg("aux", "1.0"), pkg("gone", "3")), "end": env(calc1)}
    new = {"start": env(calc2, rebuilt, pkg("fresh", "0.1")), "end": env(calc2)}
    found = candidates(old, new)
    assert [str(c) for c in found] == [
        "aux 1.0 (another build: aux-1.0-py3-none-any.whl)",
        "calc 1.0 -> 1.1",
        "fresh (added) 0.1",
        "gone 3 (removed)",
    ]
    assert found[1].steps == ("end", "start")
    assert found[0].as_dict() == {"package": "aux", "old": "1.0", "new": "1.0", "steps": ["start"]}
    assert candidates(old, old) == ()


def test_candidates_refuse_other_steps_and_a_python_change():
    with pytest.raises(BadInput, match="different steps"):
        candidates({"start": env()}, {"end": env()})
    with pytest.raises(BadInput, match=r"step start: Python 3\.11\.7 -> 3\.12\.1"):
        candidates({"start": env()}, {"start": env(python="3.12.1")})


def test_a_hybrid_applies_only_the_changes_of_its_step():
    old = {"start": env(pkg("calc", "1.0"), pkg("gone", "3")), "end": env(pkg("calc", "1.0"))}
    new = {"start": env(pkg("calc", "1.1"), pkg("fresh", "0.1")), "end": env(pkg("calc", "1.0"))}
    found = candidates(old, new)
    assert hybrid("start", old["start"], found) == new["start"]
    assert hybrid("end", old["end"], found) == old["end"]
    only_added = [c for c in found if c.name == "fresh"]
    assert {p.name for p in hybrid("start", old["start"], only_added).packages} == {"calc", "gone", "fresh"}


SEARCHES = pytest.mark.parametrize("search_for", [ddmin, bisect_changes])


@SEARCHES
def test_one_culprit_among_40_takes_about_log2_40_tests(search_for):
    items = changes(40)
    search = search_for(items, flips_when([{"p17"}]))
    assert [c.name for c in search.culprits] == ["p17"]
    assert search.tests <= 2 * math.ceil(math.log2(40)) + 1  # the whole set, then two halves per level
    assert search.trials[0].changes == tuple(items) and search.trials[0].outcome is Outcome.FLIPS


@SEARCHES
def test_a_pair_that_flips_only_together_is_found_as_the_pair(search_for):
    search = search_for(changes(16), flips_when([{"p03", "p12"}]))
    assert sorted(c.name for c in search.culprits) == ["p03", "p12"]


@SEARCHES
def test_unresolvable_subsets_are_skipped_and_reported(search_for):
    search = search_for(changes(8), flips_when([{"p05"}], needs=[("p06", "p02")]))
    assert [c.name for c in search.culprits] == ["p05"]
    assert search.unresolvable
    assert all({"p06"} <= {c.name for c in s} and "p02" not in {c.name for c in s} for s in search.unresolvable)


@SEARCHES
def test_nothing_to_find_when_the_whole_set_does_not_flip(search_for):
    search = search_for(changes(5), flips_when([]))
    assert not search.reproduced and search.culprits == () and search.tests == 1
    assert not search_for([], flips_when([])).reproduced


def test_a_pair_among_40_costs_bisect_changes_about_half_what_it_costs_ddmin():
    pairs = [(f"p{a:02d}", f"p{b:02d}") for a in range(0, 40, 7) for b in range(a + 3, 40, 5)]
    cost = {f.__name__: [f(changes(40), flips_when([set(p)])).tests for p in pairs] for f in (ddmin, bisect_changes)}
    assert max(cost["bisect_changes"]) <= 4 * math.ceil(math.log2(40)) + 1
    assert sum(cost["bisect_changes"]) * 1.5 < sum(cost["ddmin"]), cost


@st.composite
def hidden(draw):
    """n changes and up to three hidden culprit sets of one or two changes each."""
    n = draw(st.integers(1, 40))
    names = [f"p{i:02d}" for i in range(n)]
    sets = draw(st.lists(st.sets(st.sampled_from(names), min_size=1, max_size=2), min_size=1, max_size=3))
    return n, sets


@SEARCHES
@settings(max_examples=300, deadline=None)
@given(hidden())
def test_the_search_finds_a_1_minimal_culprit_set(search_for, case):
    """Whatever the hidden culprits: the result flips, and leaving out any one of its changes does not
    (1-minimal); every subset is tested once; a single culprit is exactly itself."""
    n, sets = case
    test = flips_when(sets)
    calls = []
    search = search_for(changes(n), lambda s: calls.append(frozenset(s)) or test(s))
    assert len(calls) == len(set(calls)) == search.tests
    culprits = list(search.culprits)
    assert test(culprits) is Outcome.FLIPS
    for i in range(len(culprits)):
        assert test(culprits[:i] + culprits[i + 1 :]) is Outcome.SAME
    if len(sets) == 1:
        assert {c.name for c in culprits} == sets[0]
    if len(sets) == 1 and len(sets[0]) == 1 and n > 1:
        assert search.tests <= 2 * math.ceil(math.log2(n)) + 1


@SEARCHES
@settings(max_examples=100, deadline=None)
@given(hidden(), st.data())
def test_the_search_names_only_a_set_that_resolved_and_flipped(search_for, case, data):
    n, sets = case
    """A culprit set ddmin names is always one that resolved (and flipped)."""
    names = st.sampled_from([f"p{i:02d}" for i in range(n)])
    needs = data.draw(st.lists(st.tuples(names, names).filter(lambda p: p[0] != p[1]), max_size=3))
    test = flips_when(sets, needs=needs)
    search = search_for(changes(n), test)
    assert search.reproduced
    assert test(list(search.culprits)) is Outcome.FLIPS


KEY = "ab" * 32


def stored_hybrid(**changes):
    """A hybrid's record as a store gives it back: a replay of MyFlow/1 whose step `start` ran in ENV."""
    fields = {"replay_of": "MyFlow/1", "hybrid": Hybrid(KEY, ("calc 1.0 -> 1.1",), ("start.x",), ("start",)), **changes}
    return replace(make_record(), **fields)


def test_a_stored_hybrid_answers_only_its_own_key_run_and_environments():
    record = stored_hybrid()
    ran = {"start": record.steps["start"].env_id}
    assert hybrid_problem(record, KEY, "MyFlow/1", ran) == ""
    assert "is no bisection hybrid" in hybrid_problem(replace(record, hybrid=None), KEY, "MyFlow/1", ran)
    assert "another bisection" in hybrid_problem(record, "cd" * 32, "MyFlow/1", ran)  # another hybrid's run
    assert "another bisection (MyFlow/1," in hybrid_problem(record, KEY, "MyFlow/2", ran)  # of another run
    assert "did not succeed" in hybrid_problem(replace(record, status=RunStatus.FAILED), KEY, "MyFlow/1", ran)
    other = {"start": "e" * 64}  # the record says its key, but `start` ran elsewhere
    assert hybrid_problem(record, KEY, "MyFlow/1", other).endswith(
        "step(s) start did not run in the hybrid's environments"
    )
    assert "step(s) train did not run" in hybrid_problem(record, KEY, "MyFlow/1", {**ran, "train": "f" * 64})


def test_a_stored_hybrid_names_only_its_own_steps():
    ran = {"start": make_record().steps["start"].env_id}
    for mark in (Hybrid(KEY, differing=("train.x",)), Hybrid(KEY, steps=("start", "train"))):
        assert hybrid_problem(stored_hybrid(hybrid=mark), KEY, "MyFlow/1", ran).endswith(
            "names steps it does not have: train" + (".x" if mark.differing else "")
        )
