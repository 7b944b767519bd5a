"""metaflow_repro.model.audit: choosing runs, naming causes, regressions, and the document's checked codec."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.model.audit import (
    Audit,
    AuditEntry,
    AuditVerdict,
    Difference,
    Selection,
    from_json,
    likely_causes,
    parse_since,
    previous_verdicts,
    run_tags,
    select,
    to_json,
)
from metaflow_repro.model.record import RunRecord, RunStatus, StepReads
from tests.helpers import make_record

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def rec(run_id: str, days_ago: float | None = 1, flow: str = "F", **fields) -> RunRecord:
    created = "" if days_ago is None else (NOW - timedelta(days=days_ago)).isoformat(timespec="seconds")
    return dataclasses.replace(make_record(run_id=run_id, flow=flow), created_at=created, **fields)


def test_since_takes_hours_days_and_weeks_and_refuses_anything_else():
    assert parse_since("12h") == timedelta(hours=12)
    assert parse_since("90d") == timedelta(days=90)
    assert parse_since("2w") == timedelta(weeks=2)
    for bad in ("", "90", "d", "0d", "-1d", "1y", "1.5d", "90d\n"):
        with pytest.raises(BadInput, match="--since"):
            parse_since(bad)


def test_only_original_runs_of_the_selection_are_chosen_oldest_first():
    records = [
        rec("3", 1),
        rec("1", 30),
        rec("r", 0.5, replay_of="F/1"),  # a replay is never replayed in turn
        rec("g", 2, flow="G", identity="G:g.py"),
        rec("old", 200),
        rec("undated", None),
    ]
    chosen, skipped = select(records, Selection(), NOW)
    assert [r.run_id for r in chosen] == ["undated", "old", "1", "g", "3"] and not skipped
    chosen, _ = select(records, Selection(since="90d"), NOW)
    assert [r.run_id for r in chosen] == ["1", "g", "3"]  # an undated run is not known to be recent
    assert [r.run_id for r in select(records, Selection(flow="G"), NOW)[0]] == ["g"]
    assert [r.run_id for r in select(records, Selection(flow="G:g.py"), NOW)[0]] == ["g"]  # by identity too
    assert select(records, Selection(flow="H"), NOW) == ([], [])


def test_tags_are_read_from_the_recorded_run_options_in_both_spellings():
    a = rec("a", run_options=("--tag", "nightly", "--max-workers", "2"))
    b = rec("b", run_options=("--tag=nightly",))
    c = rec("c", run_options=("--max-workers", "nightly"))
    assert run_tags(a) == {"nightly"} and run_tags(b) == {"nightly"} and run_tags(c) == set()
    assert [r.run_id for r in select([a, b, c], Selection(tag="nightly"), NOW)[0]] == ["a", "b"]


def test_a_failed_or_unreplayable_run_that_matches_is_skipped_with_why():
    failed = rec("f", status=RunStatus.FAILED)
    smuggled = rec("s", run_options=("--run-id-file", "/etc/x"))
    chosen, skipped = select([failed, smuggled, rec("ok")], Selection(), NOW)
    assert [r.run_id for r in chosen] == ["ok"]
    assert skipped[0].startswith("F/f: the recorded run failed") and "F/s: cannot be replayed" in skipped[1]


def test_a_sample_is_k_runs_chosen_by_its_seed_and_the_same_again():
    records = [rec(str(i), i) for i in range(20)]
    a, _ = select(records, Selection(sample=5, seed="x"), NOW)
    b, _ = select(list(reversed(records)), Selection(sample=5, seed="x"), NOW)
    assert len(a) == 5 and [r.run_id for r in a] == [r.run_id for r in b]
    others = {tuple(r.run_id for r in select(records, Selection(sample=5, seed=s), NOW)[0]) for s in "abcdef"}
    assert len(others) > 1  # another seed, another sample
    assert len(select(records, Selection(sample=50), NOW)[0]) == 20


DIFF = (Difference("start", "-", "stamp", "1 != 2"),)


def later(**fields) -> RunRecord:
    """A record with the fields schema 5 added (outside reads, nondeterminism seen at record time)."""
    return dataclasses.replace(make_record(), **fields)


def test_an_identical_replay_has_no_cause_and_an_unexplained_one_says_where_to_look():
    record = make_record()
    assert likely_causes(record, AuditVerdict.IDENTICAL, (), "2.19", "2.19") == ()
    (cause,) = likely_causes(record, AuditVerdict.DIFFERENT, DIFF, "2.19", "2.19")
    assert cause.startswith("nothing recorded explains it: step(s) start") and "repro check" in cause


def test_causes_name_recorded_nondeterminism_outside_reads_and_another_metaflow():
    record = later(
        nondeterministic={"start": ("stamp",)},
        reads={
            "start": StepReads(files=("/etc/hosts", "/data/a"), files_count=3),
            "end": StepReads(files=("/x",), files_count=1),
        },
    )
    causes = likely_causes(record, AuditVerdict.DIFFERENT, DIFF, "2.19", "2.19")
    assert causes[0] == "start.stamp was already nondeterministic when recorded (repro check --repeat)"
    assert "start read files outside the snapshot when recorded (/etc/hosts, /data/a and 1 more)" in causes[1]
    assert len(causes) == 2  # end's reads are not where the difference is
    contacted = later(reads={"start": StepReads(hosts=("hub.example:443",), hosts_count=1, loopback_count=2)})
    assert likely_causes(contacted, AuditVerdict.DIFFERENT, DIFF, "", "") == (
        "start contacted hub.example:443 and 2 more when recorded; a replay contacts them anew",
    )
    unwatched = later(reads={"start": StepReads(unwatched=True)})
    assert "not watched" in likely_causes(unwatched, AuditVerdict.DIFFERENT, DIFF, "", "")[0]
    failed = likely_causes(make_record(), AuditVerdict.FAILED, (), "2.18.0", "2.19")
    assert failed == ("the replay ran on Metaflow 2.18.0, the run on 2.19",)
    host = likely_causes(make_record(), AuditVerdict.DIFFERENT, DIFF, "2.19", "2.19.4")
    assert host[0].startswith("recorded under Metaflow 2.19; this machine has 2.19.4")


def entry(run="F/1", verdict=AuditVerdict.IDENTICAL, previous="") -> AuditEntry:
    return AuditEntry(run, "F", run.split("/")[1], "2026-12-01T00:00:00+00:00", verdict, previous=previous)


@pytest.mark.parametrize(
    ("previous", "now", "regressed"),
    [
        ("identical", AuditVerdict.DIFFERENT, True),
        ("identical", AuditVerdict.EQUIVALENT, True),
        ("identical", AuditVerdict.FAILED, True),
        ("identical", AuditVerdict.IDENTICAL, False),
        ("different", AuditVerdict.DIFFERENT, False),
        ("", AuditVerdict.DIFFERENT, False),
    ],
)
def test_a_regression_is_a_run_that_was_identical_and_is_no_longer(previous, now, regressed):
    assert entry(verdict=now, previous=previous).regressed is regressed


def test_a_replay_that_could_not_be_carried_out_is_no_regression_and_no_later_audits_baseline():
    """No Docker daemon, an unreachable store: the audit says so (exit 3), and a run that was identical
    before is compared next time with that identical verdict, not with the failure."""
    down = dataclasses.replace(entry("F/1", AuditVerdict.FAILED, "identical"), inconclusive=True, error="no daemon")
    assert not down.regressed
    earlier = audit(entry("F/1"), finished="2026-12-01T00:00:00+00:00")
    failed = audit(down, finished="2026-12-02T00:00:00+00:00")
    assert previous_verdicts([failed, earlier]) == {"F/1": ("identical", "2026-12-01T00:00:00+00:00")}
    assert from_json(to_json(failed), "audits/x.json") == failed


def audit(*entries: AuditEntry, finished="2026-12-07T01:00:00+00:00") -> Audit:
    return Audit("2026-12-07T00:00:00+00:00", finished, "file:///s", "local", "1", "2.19", Selection(), entries)


def test_each_run_takes_its_verdict_from_the_newest_audit_that_replayed_it():
    old = audit(entry("F/1"), entry("F/2"), finished="2026-12-01T00:00:00+00:00")
    new = audit(entry("F/1", AuditVerdict.DIFFERENT), finished="2026-12-02T00:00:00+00:00")
    found = previous_verdicts([new, old])
    assert found == {
        "F/1": ("different", "2026-12-02T00:00:00+00:00"),
        "F/2": ("identical", "2026-12-01T00:00:00+00:00"),
    }
    assert previous_verdicts([old, new]) == found  # by when they finished, not by order given


def test_the_document_round_trips_and_counts_every_verdict():
    doc = audit(
        entry("F/1"),
        dataclasses.replace(
            entry("G@g.py/2", AuditVerdict.DIFFERENT, "identical"),
            # "*": a task that ran in only one of the runs (a switch took the other branch), as compare says it
            differences=(*DIFF, Difference("route", "-", "*", "ran only in the replay")),
            causes=("c",),
        ),
        finished="2026-12-07T01:00:00+00:00",
    )
    back = from_json(to_json(doc), "audits/x.json")
    assert back == doc
    assert back.counts() == {"identical": 1, "equivalent": 0, "different": 1, "replay failed": 0}
    assert [e.run for e in back.regressions] == ["G@g.py/2"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema",), "repro.run-record", "not a repro audit"),
        (("schema_version",), 2, "audit schema version 2 is not one this repro reads"),
        (("extra",), 1, "unknown key 'extra'"),
        (("entries", 0, "verdict"), "fine", "'entries.0.verdict'"),
        (("entries", 0, "run"), "../../etc/passwd", "a run REF"),
        (("entries", 0, "previous"), "better", "'entries.0.previous'"),
        (("entries", 0, "seconds"), -1, "a duration"),
        (("entries", 0, "error"), "x" * 3000, "at most 2000 characters"),
        (("entries", 0, "differences"), [{"step": "s", "task": "-", "artifact": "../x"}], "entries.0.differences.0"),
        (("selection", "sample"), -3, "a count"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field(path, value, message):
    doc = json.loads(to_json(audit(entry())))
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(BadInput, match="audits/x.json") as info:
        from_json(json.dumps(doc), "audits/x.json")
    assert message in str(info.value)


def test_a_document_too_deep_or_not_json_is_refused():
    with pytest.raises(BadInput, match="not an audit document"):
        from_json("[" * 100000, "a")
    with pytest.raises(BadInput, match="not an audit document"):
        from_json(b"\xff", "a")
