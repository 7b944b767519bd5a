"""A run recorded under one supported Metaflow release replays under another (issue 26 item 9): the
replay runs the Metaflow of the recorded code package, whichever Metaflow repro itself was installed
with. `.ci/run` runs this from the venv of the oldest supported Metaflow, with REPRO_OTHER_PYTHON naming
the main venv's Python (the newest); elsewhere it is skipped, as it needs two installations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_flow

pytestmark = pytest.mark.slow

OTHER = os.environ.get("REPRO_OTHER_PYTHON", "")

FLOW = """
    from metaflow import FlowSpec, IncludeFile, card, step

    class AcrossFlow(FlowSpec):
        data = IncludeFile("data", default="data.txt")

        @card
        @step
        def start(self):
            self.size = len(self.data)
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        AcrossFlow()
"""


def _repro(python: str, *args, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REPRO_HOME": str(home)}
    return subprocess.run(
        [python, "-m", "metaflow_repro", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def _version(python: str) -> str:
    probe = "from metaflow.version import metaflow_version; print(metaflow_version)"
    return subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not OTHER, reason="REPRO_OTHER_PYTHON names no second installation of repro (.ci/run sets it)")
@pytest.mark.parametrize("direction", ["this-then-other", "other-then-this"])
def test_a_run_recorded_under_one_metaflow_replays_identically_under_another(direction, tmp_path):
    this, other = sys.executable, OTHER
    assert _version(this) != _version(other), "two installations of one Metaflow prove nothing"
    recorder, replayer = (this, other) if direction == "this-then-other" else (other, this)
    folder = write_flow(tmp_path / "proj", FLOW).parent
    (folder / "data.txt").write_text("across releases\n")
    store = f"file://{tmp_path / 'store'}"
    ran = _repro(recorder, "run", folder / "flow.py", "--store", store, cwd=folder, home=tmp_path / "home-a")
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    replayed = _repro(replayer, "replay", "AcrossFlow/latest", "--store", store, cwd=tmp_path, home=tmp_path / "home-b")
    text = replayed.stdout + replayed.stderr
    assert replayed.returncode == 0 and "result: identical" in text, text[-3000:]
    assert f"in {store}/runs/" in text, text[-3000:]  # the replay's record is in the store, code package and all
