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


def _counting_calls(n: int):
    """n calls that each wait a little and report how many were running at once, and in a daemon thread."""
    import threading
    import time

    lock, running, seen = threading.Lock(), [0], []

    def call(i):
        with lock:
            running[0] += 1
            seen.append((running[0], threading.current_thread().daemon))
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return f"outcome {i}"

    return {i: (lambda i=i: call(i)) for i in range(n)}, seen


@pytest.mark.parametrize("jobs, at_once", [(1, 1), (2, 2), (8, 3)])
def test_repeats_run_at_most_jobs_at_a_time_in_daemon_threads(jobs, at_once):
    from metaflow_repro.operations.check import in_parallel

    calls, seen = _counting_calls(3)
    assert in_parallel(calls, jobs) == {0: "outcome 0", 1: "outcome 1", 2: "outcome 2"}
    assert max(n for n, _ in seen) == at_once
    assert all(daemon for _, daemon in seen)  # Ctrl-C: repro exits without waiting for them


def test_an_error_in_a_repeat_is_raised_to_the_caller():
    from metaflow_repro.operations.check import in_parallel

    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        in_parallel({0: boom, 1: lambda: "fine"}, 2)
