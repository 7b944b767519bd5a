"""RunRecord.nondeterministic: the artifacts seen to differ between repeats of a run (repro check --repeat),
an optional field: not written when empty, older records read without it, checked when read."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.model.record import from_json
from tests.unit.model.test_record import make_record


def test_it_round_trips():
    record = replace(make_record(), nondeterministic={"start": ("roll", "x"), "end": ("*",)})
    doc = json.loads(record.to_json())
    assert doc["nondeterministic"] == {"start": ["roll", "x"], "end": ["*"]}
    assert from_json(record.to_json(), "record.json") == record


def test_empty_it_is_not_written_and_a_record_without_it_reads():
    text = make_record().to_json()
    assert "nondeterministic" not in json.loads(text)
    assert from_json(text, "record.json").nondeterministic == {}


@pytest.mark.parametrize(
    "value, where",
    [
        (["start"], "nondeterministic"),
        ({"../x": ["roll"]}, "nondeterministic.../x"),
        ({"start": "roll"}, "nondeterministic.start"),
        ({"start": ["os.system"]}, "nondeterministic.start.0"),
        ({"start": [3]}, "nondeterministic.start.0"),
    ],
)
def test_a_bad_value_from_a_store_is_refused_naming_the_field(value, where):
    doc = json.loads(make_record().to_json())
    doc["nondeterministic"] = value
    with pytest.raises(BadInput) as err:
        from_json(json.dumps(doc), "record.json")
    assert f"'{where}'" in str(err.value)
