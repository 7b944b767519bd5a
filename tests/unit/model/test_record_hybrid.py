"""RunRecord.hybrid: a `repro bisect` hybrid run (its changes, what differed, the steps it ran), an optional
field: not written when empty, older records read without it, checked when read (it comes from a store)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.model.record import Hybrid, from_json
from tests.unit.model.test_record import make_record

KEY = "ab" * 32
MARK = Hybrid(KEY, ("calc 1.0 -> 1.1", "aux (added) 2.0"), ("start.x",), ("start",))


def hybrid_record():
    return replace(make_record(), replay_of="MyFlow/1", hybrid=MARK)


def test_it_round_trips():
    record = hybrid_record()
    doc = json.loads(record.to_json())
    assert doc["hybrid"] == {
        "key": KEY,
        "changes": ["calc 1.0 -> 1.1", "aux (added) 2.0"],
        "differing": ["start.x"],
        "steps": ["start"],
    }
    assert from_json(record.to_json(), "record.json") == record


def test_none_it_is_not_written_and_a_record_without_it_reads():
    text = make_record().to_json()
    assert "hybrid" not in json.loads(text)
    assert from_json(text, "record.json").hybrid is None


@pytest.mark.parametrize(
    "value, where",
    [
        (["x"], "hybrid"),
        ({"key": "x" * 64}, "hybrid.key"),
        ({"changes": ["a"]}, "hybrid.key"),
        ({"key": KEY, "changes": ["calc\x1b[2J"]}, "hybrid.changes.0"),
        ({"key": KEY, "changes": ["x" * 1001]}, "hybrid.changes.0"),
        ({"key": KEY, "differing": ["start"]}, "hybrid.differing.0"),
        ({"key": KEY, "differing": ["start.x.y"]}, "hybrid.differing.0"),
        ({"key": KEY, "steps": ["../start"]}, "hybrid.steps.0"),
        ({"key": KEY, "verdict": "flips"}, "hybrid.verdict"),
    ],
)
def test_a_bad_value_from_a_store_is_refused_naming_the_field(value, where):
    doc = json.loads(hybrid_record().to_json())
    doc["hybrid"] = value
    with pytest.raises(BadInput) as err:
        from_json(json.dumps(doc), "record.json")
    assert f"'{where}'" in str(err.value)


def test_only_a_replay_can_be_a_hybrid():
    doc = json.loads(hybrid_record().to_json())
    doc["replay_of"] = ""
    with pytest.raises(BadInput, match="replays no run") as err:
        from_json(json.dumps(doc), "record.json")
    assert "'hybrid'" in str(err.value)


def test_an_audit_never_chooses_a_hybrid_it_is_no_run_of_its_own():
    """A hybrid replays the bisected run with other packages: `repro audit` neither replays it nor counts it."""
    from datetime import datetime, timezone

    from metaflow_repro.model.audit import Selection, select

    original = make_record()
    chosen, skipped = select([original, hybrid_record()], Selection(), datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert chosen == [original] and skipped == []
