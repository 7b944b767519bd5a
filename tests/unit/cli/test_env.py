"""Pieces of the command line that need no flow run: which flow files a folder gives, how `repro
env show` words a step's state, and what `repro store verify` counts as bad."""

from __future__ import annotations

from dataclasses import replace

import pytest

from metaflow_repro.cli.env import _row
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.model.spec import EnvSpec
from metaflow_repro.operations.env import StepState
from tests.helpers import pkg

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
