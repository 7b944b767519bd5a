"""The `repro` Metaflow card (issue 12, item 12): rendered inside a real run, read through Metaflow's card API."""

import json
import subprocess
import sys

import pytest
import tomllib

from tests.helpers import cli, run_flow, write_flow

pytestmark = pytest.mark.slow

FLOW = """
    from metaflow import FlowSpec, step, pypi

    class CardFlow(FlowSpec):
        @pypi(packages={"six": "1.16.0"})
        @step
        def start(self):
            import os
            import six
            self.six_version = six.__version__
            self.labels = open(os.path.join(os.path.dirname(__file__), "labels.txt")).read()  # a data file
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        CardFlow()
"""

READ_CARDS = """
import json, sys
from metaflow import Task, namespace
from metaflow.cards import get_cards
namespace(None)
cards = get_cards(Task(sys.argv[1]), type="repro")
print(json.dumps([card.get() for card in cards]))
"""


def test_the_repro_card_shows_env_python_packages_fingerprint_and_pickle_checks(flow_dir, tmp_path):
    path = write_flow(flow_dir, FLOW)
    (flow_dir / "labels.txt").write_text("a b\n")
    assert cli("lock", path).code == 0
    lock = (flow_dir / "flow.repro.lock").read_text()
    run = run_flow(path, tmp_path / "mf", args=("--with", "card:type=repro"))
    assert run.code == 0, run.text[-3000:]
    proc = subprocess.run(
        [sys.executable, "-c", READ_CARDS, f"CardFlow/{run.run_id}/start/1"],
        env=run.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    cards = json.loads(proc.stdout)
    assert len(cards) == 1
    html = cards[0]
    doc = tomllib.loads(lock)
    start = doc["steps"]["start"]["platforms"]["linux-64"]
    assert start["env_id"] in html and start["python"] in html
    assert "matches the environment built from the lock" in html
    for package in start["packages"]:
        assert f"<td>{package['name']}</td><td>{package['version']}</td>" in html
    assert "six_version" in html and "class='ok'>ok<" in html  # the task's artifact loads in its env
    assert "Read outside the snapshot" in html and "<code>labels.txt</code>" in html  # issue 23: what it read
