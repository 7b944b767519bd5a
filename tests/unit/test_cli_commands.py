"""Pieces of the command line that need no flow run: which flow files a folder gives, how `repro
env show` words a step's state, and what `repro store verify` counts as bad."""

from __future__ import annotations

from dataclasses import replace

import pytest

from repro.cli.env import _row
from repro.errors import BadInput
from repro.model.lock import PlatformLock
from repro.model.spec import EnvSpec
from repro.operations.env import StepState
from repro.operations.flows import flow_files
from repro.operations.verify import StoreCheck
from tests.helpers import pkg


def test_a_folder_gives_its_flow_files_in_name_order_and_an_empty_one_is_bad_input(tmp_path):
    (tmp_path / "b.py").write_text("from metaflow import FlowSpec\n")
    (tmp_path / "a.py").write_text("from metaflow import FlowSpec\n")
    (tmp_path / "test_a.py").write_text("from metaflow import FlowSpec\n")  # a test module is no flow
    (tmp_path / "util.py").write_text("x = 1\n")
    assert flow_files([str(tmp_path)]) == [tmp_path / "a.py", tmp_path / "b.py"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no flow files"):
        flow_files([str(tmp_path / "empty")])
    with pytest.raises(BadInput, match="no such flow file or folder"):
        flow_files([str(tmp_path / "missing.py")])


SPEC = EnvSpec("F", "s", kind="pypi", source="pypi", python="3.11", libraries=(("six", "1.16.0"),))
LOCKED = PlatformLock("linux-64", "3.11.9", (pkg("six", "1.16.0"), pkg("requests", "2.32.3", "b" * 64)))
ENV = LOCKED.env_id[:12]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (StepState("s", SPEC, "not locked"), ["-", "3.11", "six==1.16.0", "pypi", "not locked", "-"]),
        (StepState("s", SPEC, "not built", LOCKED), [ENV, "3.11.9", "six==1.16.0 (+1)", "pypi", "not built", "-"]),
        (
            StepState("s", SPEC, "built", LOCKED, []),
            [ENV, "3.11.9", "six==1.16.0 (+1)", "pypi", "built", "matches lock"],
        ),
        (
            StepState("s", SPEC, "built", LOCKED, ["a", "b"]),
            [ENV, "3.11.9", "six==1.16.0 (+1)", "pypi", "built", "DRIFT: a; b"],
        ),
        (
            StepState("s", replace(SPEC, disabled=True), "disabled"),
            ["-", "user's", "disabled", "pypi", "user env", "-"],
        ),
    ],
)
def test_env_show_rows(state, expected):
    row = _row(state)
    assert row[:2] == ["s", state.spec.spec_id[:12]]
    assert row[2:] == expected


def test_store_verify_counts_unreadable_records_and_records_with_problems():
    found = StoreCheck(broken=[("runs/F/1/record.json", "not JSON")], results=[("F/2", []), ("F/3", ["gone"])])
    assert found.bad == 2
