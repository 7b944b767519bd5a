"""A replay writes nothing into the user's current folder (issue 26 item 6): Metaflow puts a run's cards
under the nearest `.metaflow` above its current folder, so a replay of a `@card` flow used to leave
`<cwd>/.metaflow/mf.cards` behind, even from an empty REPRO_HOME. Real runs, a real file store; the
current folder is compared byte for byte before and after each replay."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli, write_flow

pytestmark = pytest.mark.slow

FLOW = """
    from metaflow import FlowSpec, IncludeFile, card, step

    class CwdFlow(FlowSpec):
        data = IncludeFile("data", default="data.txt")

        @card
        @step
        def start(self):
            self.size = len(self.data)
            self.next(self.end)

        @card(type="blank")
        @step
        def end(self):
            pass

    if __name__ == "__main__":
        CwdFlow()
"""


def listing(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones too): a file by its bytes, a link by its target."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder)] = "folder"
        for name in files:
            path = Path(root, name)
            rel = os.path.relpath(path, folder)
            out[rel] = (
                f"link {os.readlink(path)}" if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
            )
    return out


def cards_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.html") if "mf.cards" in p.parts or "cards" in p.parts)


def test_replays_leave_the_current_folder_byte_for_byte_unchanged(flow_dir, tmp_path):
    path = write_flow(flow_dir, FLOW)
    (flow_dir / "data.txt").write_text("some input\n")
    store = f"file://{tmp_path / 'store'}"
    env = {"METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DEFAULT_METADATA": "local"}
    # a git checkout, as most flows live in: Metaflow writes its branch and commit into the code package's
    # INFO, which a replay (run in its own folder) cannot repeat, so the replay's code package is its own
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the flow"]):
        subprocess.run([*git, *argv], cwd=flow_dir, check=True)
    ran = cli("run", path, "--store", store, cwd=flow_dir, env=env)
    assert ran.code == 0, ran.text[-3000:]
    assert cards_in(flow_dir / ".metaflow"), "the original run wrote its cards into its own folder"

    # 1. a cold replay (an empty REPRO_HOME) from an empty folder
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    cold_home = tmp_path / "cold-home"
    cold = cli(
        "replay", "CwdFlow/latest", "--store", store, "--keep", cwd=empty, env={**env, "REPRO_HOME": str(cold_home)}
    )
    assert cold.code == 0, cold.text[-3000:]
    assert "could not be written" not in cold.text and f"in {store}/runs/" in cold.text, cold.text[-3000:]
    assert listing(empty) == {}
    assert cards_in(cold_home / "replays"), "the replay rendered its cards, in its own folder"

    # 2. a replay from the flow's own folder, which holds the original run's .metaflow (cards and all)
    before = listing(flow_dir)
    warm = cli("replay", "CwdFlow/latest", "--store", store, cwd=flow_dir, env=env)
    assert warm.code == 0, warm.text[-3000:]
    assert listing(flow_dir) == before
