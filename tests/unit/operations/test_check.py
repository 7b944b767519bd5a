"""operations/check: the counts `repro check` and `pytest --repro-repeat` accept; a replay of a run that
was nondeterministic when recorded says so (operations/replay.known_nondeterministic)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from metaflow_repro.checks.compare import ArtifactResult, Comparison, Verdict
from metaflow_repro.errors import BadInput
from metaflow_repro.operations.check import MAX_REPEAT, check_counts
from metaflow_repro.operations.replay import known_nondeterministic
from tests.helpers import make_record


@pytest.mark.parametrize("repeat, jobs", [(1, None), (0, 2), (-3, None), (MAX_REPEAT + 1, None), (2, 0), (2, -1)])
def test_bad_counts_are_bad_input(repeat, jobs):
    with pytest.raises(BadInput):
        check_counts(repeat, jobs)


def test_good_counts_pass():
    check_counts(2, None)
    check_counts(MAX_REPEAT, 1)


def _comparison() -> Comparison:
    return Comparison(
        "F/1",
        "F/9",
        (
            ArtifactResult("start", "-", "roll", Verdict.DIFFERENT, "value: 1 != 2"),
            ArtifactResult("start", "-", "x", Verdict.DIFFERENT, "value: 3 != 4"),
            ArtifactResult("start", "-", "y", Verdict.IDENTICAL),
            ArtifactResult("end", "-", "z", Verdict.DIFFERENT, "value: 5 != 6"),
        ),
    )


def test_a_difference_on_an_artifact_seen_nondeterministic_when_recorded_says_so():
    original = replace(make_record(), nondeterministic={"start": ("roll",), "end": ("*",)})
    details = [r.detail for r in known_nondeterministic(original, _comparison()).results]
    assert details == [
        "value: 1 != 2; start.roll was already nondeterministic when recorded (repro check)",
        "value: 3 != 4",  # not seen to differ then: a new difference
        "",
        "value: 5 != 6; end.z was already nondeterministic when recorded (repro check)",
    ]


def test_a_record_without_the_field_changes_nothing():
    assert known_nondeterministic(make_record(), _comparison()) == _comparison()
