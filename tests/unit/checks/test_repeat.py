"""checks/repeat: N runs of one flow judged together from the comparisons of the first with the others."""

from __future__ import annotations

from dataclasses import replace

from metaflow_repro.checks.compare import ArtifactResult, Comparison, Verdict
from metaflow_repro.checks.repeat import HINT, NONDETERMINISTIC, accepted, findings, judge
from metaflow_repro.model.findings import Kind, Severity
from tests.helpers import make_record

GRAPH = {"start": ("train",), "train": ("end",), "end": ()}


def run(run_id: str, roll: str, model: str = "m" * 40, seed: str = "5" * 40):
    """start makes ``roll`` (random) and ``seed``; train makes ``model`` and carries ``roll`` on."""
    tasks = {
        "start": {"-": {"roll": (roll, 5, "int"), "seed": (seed, 5, "int")}},
        "train": {"-": {"roll": (roll, 5, "int"), "model": (model, 9, "list")}},
        "end": {"-": {}},
    }
    return replace(make_record(run_id=run_id, tasks=tasks, flow="DiceFlow"), graph=GRAPH)


def compared(a, b, verdicts: dict[tuple[str, str], tuple[Verdict, str]]) -> Comparison:
    """``a`` vs ``b`` as checks/compare would say it: identical unless ``verdicts`` says otherwise."""
    results = []
    for step, s in a.steps.items():
        for key, t in s.tasks.items():
            for name in t.artifacts:
                verdict, detail = verdicts.get((step, name), (Verdict.IDENTICAL, ""))
                results.append(ArtifactResult(step, key, name, verdict, detail))
    return Comparison(a.ref, b.ref, tuple(results))


def three_runs():
    a, b, c = run("1", "a" * 40), run("2", "b" * 40, model="n" * 40), run("3", "c" * 40)
    ab = compared(
        a,
        b,
        {
            ("start", "roll"): (Verdict.DIFFERENT, "value: 4 != 2"),
            ("train", "roll"): (Verdict.DIFFERENT, "value: 4 != 2"),
            ("train", "model"): (Verdict.EQUIVALENT, "3 of 10 floats differ, max rel 2e-10"),
        },
    )
    ac = compared(
        a, c, {("start", "roll"): (Verdict.DIFFERENT, "value: 4 != 6"), ("train", "roll"): (Verdict.DIFFERENT, "x")}
    )
    return judge("DiceFlow", [a, b, c], [ab, ac])


def test_equivalent_and_different_are_apart_and_counted_over_the_comparisons():
    check = three_runs()
    assert check.runs == ("DiceFlow/1", "DiceFlow/2", "DiceFlow/3")
    assert [(a.label, a.verdict, a.seen, a.of) for a in check.artifacts] == [
        ("start.roll", Verdict.DIFFERENT, 2, 2),
        ("train.model", Verdict.EQUIVALENT, 1, 2),
        ("train.roll", Verdict.DIFFERENT, 2, 2),
    ]
    assert check.identical == {"start": 1}
    assert not check.deterministic
    assert check.nondeterministic() == {"start": ("roll",), "train": ("roll",)}  # what a record keeps


def test_an_artifact_only_carried_on_names_the_step_that_made_it():
    check = three_runs()
    by_label = {a.label: a for a in check.artifacts}
    assert by_label["train.roll"].carried_from == "start"
    assert by_label["start.roll"].carried_from == ""
    assert by_label["train.model"].carried_from == ""  # made in train


def test_per_step_text_separates_different_from_equivalent_with_the_comparators_words():
    lines = three_runs().lines()
    assert lines[0] == "start: 1 identical, 1 different"
    assert lines[1] == "  different   start.roll: value: 4 != 2 (in 2 of 2 runs compared with the first)"
    assert lines[2] == "train: 1 different, 1 equivalent"
    assert "different" in lines[3] and "train.roll" in lines[3] and "(carried over from start)" in lines[3]
    assert "equivalent" in lines[4] and "train.model: 3 of 10 floats differ, max rel 2e-10" in lines[4]
    assert lines[5] == "end: no artifacts"


def test_within_tolerance_everywhere_is_deterministic():
    a, b = run("1", "a" * 40), run("2", "a" * 40, model="n" * 40)
    check = judge("DiceFlow", [a, b], [compared(a, b, {("train", "model"): (Verdict.EQUIVALENT, "close")})])
    assert check.deterministic and check.nondeterministic() == {}
    assert findings(check) == []


def test_a_difference_fails_the_step_that_made_it_with_the_hint():
    found = findings(three_runs())
    assert [(f.kind, f.step, f.subject, f.severity) for f in found] == [
        (Kind.ARTIFACT, "start", "roll", Severity.ERROR)
    ]
    message = found[0].message
    assert message.startswith(NONDETERMINISTIC) and "3 runs" in message and "value: 4 != 2" in message
    assert HINT.format(flow="DiceFlow", step="start", name="roll") in message
    assert "OMP_NUM_THREADS" in message and "PYTHONHASHSEED" in message and "seed" in message


def test_an_accepted_artifact_is_a_warning():
    found = findings(three_runs(), ("DiceFlow.start.roll",))
    assert [(f.step, f.severity) for f in found] == [("start", Severity.WARNING)]
    assert "accepted by [tool.repro] nondeterministic" in found[0].message and "hint" not in found[0].message
    assert [f.severity for f in findings(three_runs(), ("DiceFlow.start.*",))] == [Severity.WARNING]
    assert [f.severity for f in findings(three_runs(), ("OtherFlow.start.roll", "DiceFlow.end.roll"))] == [
        Severity.ERROR
    ]


def test_accepted_patterns():
    assert accepted("F", "start", "x", ["F.start.x"])
    assert accepted("F", "start", "x", ["F.*"])
    assert not accepted("F", "start", "x", ["F.start.y", "G.start.x", "start.x"])
    assert not accepted("F", "start", "x", [])


def test_different_in_one_comparison_and_equivalent_in_another_is_different():
    a, b, c = run("1", "a" * 40), run("2", "a" * 40, model="n" * 40), run("3", "a" * 40, model="o" * 40)
    close = {("train", "model"): (Verdict.EQUIVALENT, "max rel 1e-12")}
    far = {("train", "model"): (Verdict.DIFFERENT, "max rel 0.3")}
    for order in ((close, far), (far, close)):
        check = judge("DiceFlow", [a, b, c], [compared(a, b, order[0]), compared(a, c, order[1])])
        assert [(x.label, x.verdict, x.detail, x.seen) for x in check.artifacts] == [
            ("train.model", Verdict.DIFFERENT, "max rel 0.3", 1)
        ]
        assert check.nondeterministic() == {"train": ("model",)}
