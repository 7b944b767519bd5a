"""Findings are data: selected by field, printed the same on every Python, and round-tripped."""

import pytest

from metaflow_repro.model.findings import DRIFT_KINDS, Finding, Kind, Severity, select
from metaflow_repro.model.lock import Change


def test_str_enums_print_as_their_value():
    """Python 3.12 changed format() of str-mixin enums; ours print as their value everywhere."""
    assert f"{Kind.SPEC_DRIFT}: x" == "spec drift: x" and str(Severity.ERROR) == "error"
    assert "%s" % Kind.RUNTIME_DRIFT == "runtime drift"


def test_select_by_kind_step_and_severity():
    fs = [
        Finding(Kind.SPEC_DRIFT, "a", step="s"),
        Finding(Kind.PICKLE, "b", step="s", severity=Severity.WARNING),
        Finding(Kind.PICKLE, "c", step="t"),
        Finding(Kind.RUNTIME_DRIFT, "d", step="t"),
    ]
    assert [f.message for f in select(fs, kind=DRIFT_KINDS)] == ["a", "d"]
    assert [f.message for f in select(fs, kind=Kind.PICKLE, step="s")] == ["b"]
    assert [f.message for f in select(fs, severity=Severity.ERROR, step="t")] == ["c", "d"]
    assert select(fs, kind=Kind.ARTIFACT) == []


def test_round_trip_and_line():
    f = Finding(
        Kind.RESOLUTION_DRIFT,
        "~ dep 1.0 -> 1.1 (transitive)",
        step="start",
        platform="linux-64",
        subject="dep",
        old="1.0",
        new="1.1",
    )
    assert Finding.from_dict(f.to_dict()) == f
    assert f.line() == "start (linux-64): ~ dep 1.0 -> 1.1 (transitive)"
    assert Finding(Kind.RUNTIME_DRIFT, "gone", step="a", env_id="ab" * 32).line() == "a (env abababababab): gone"
    assert Finding(Kind.SPEC_DRIFT, "no lock file").line() == "no lock file"


@pytest.mark.parametrize(
    "change, text",
    [
        (Change("six", "1.16.0", "1.17.0", "stated"), "~ six 1.16.0 -> 1.17.0 (stated)"),
        (Change("idna", "", "3.10", "transitive"), "+ idna 3.10 (transitive)"),
        (Change("idna", "3.10", ""), "- idna 3.10"),
        (
            Change("six", "1.16.0", "1.16.0", "stated", detail="file a (1) -> b (2)"),
            "~ six 1.16.0: file a (1) -> b (2) (stated)",
        ),
    ],
)
def test_changes_print_as_lock_diffs(change, text):
    assert str(change) == text
