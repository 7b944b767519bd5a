"""Determinism checks (issue 25 item 1), for real: `repro check FLOW --repeat N` and `pytest --repro
--repro-repeat N` run a flow with unseeded random artifacts (one only in its last digits, within the
comparators' tolerance) and deterministic ones, in the same locked environments, and name exactly the
random ones; a recorded repeat keeps what differed, and a
replay of it says so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metaflow_repro.model.record import from_json
from tests.helpers import cli, write_flow

pytestmark = pytest.mark.slow

FLOW = """
import random

from metaflow import FlowSpec, Parameter, step


class DiceFlow(FlowSpec):
    seed = Parameter("seed", default=0, type=int, help="0: not seeded")
    sides = Parameter("sides", default=6, type=int)

    @step
    def start(self):
        self.roll = random.Random(self.seed or None).randint(1, 10**9)
        self.faces = list(range(1, self.sides + 1))
        self.next(self.shake)

    @step
    def shake(self):
        self.jitter = random.Random(self.seed or None).random()
        self.tiny = 1.0 + random.Random(self.seed or None).random() * 1e-12  # within the default tolerance
        self.next(self.end)

    @step
    def end(self):
        self.total = sum(self.faces)


if __name__ == "__main__":
    DiceFlow()
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dice")
    write_flow(folder, FLOW, name="dice_flow.py")
    # what pytest accepts as nondeterministic (repro check reports every difference regardless)
    with (folder / "pyproject.toml").open("a") as fh:
        fh.write('nondeterministic = ["DiceFlow.shake.jitter"]\n')
    return folder


@pytest.fixture(scope="module")
def unseeded(project):
    """`repro check` of the unseeded flow; it has no lock yet, so the first repeat locks and builds alone."""
    return cli("check", "dice_flow.py", "--repeat", "2", "--", "--sides", "4", cwd=project)


def test_repro_check_names_each_random_artifact_per_step_and_exits_1(unseeded):
    r = unseeded
    assert r.code == 1, r.text
    out = r.out.splitlines()
    steps = [line for line in out if re.match(r"^\w+: ", line) and not line.startswith("result")]
    assert steps == [
        "start: 4 identical, 1 different",  # the parameters, name and faces are the same in both runs
        "shake: 4 identical, 2 different, 1 equivalent",  # jitter made here, roll carried on; tiny
        "end: 5 identical, 2 different, 1 equivalent",  # total is the same
    ]
    different = [line.split()[1] for line in out if line.startswith("  different")]
    assert different == ["start.roll:", "shake.jitter:", "shake.roll:", "end.jitter:", "end.roll:"]
    assert re.search(r"different\s+start\.roll: value: \d+ != \d+ \(difference ", r.out)
    equivalent = [line.split()[1] for line in out if line.startswith("  equivalent")]
    assert equivalent == ["shake.tiny:", "end.tiny:"]  # other bytes, equal within the comparators' tolerance
    assert re.search(r"equivalent\s+shake\.tiny: equal within rel_tol=1e-09", r.out)
    assert [line for line in out if "carried over from" in line] == [
        line for line in out if re.search(r"(shake\.roll|end\.jitter|end\.roll|end\.tiny):", line)
    ]
    assert "result: different (5 artifact(s) differ" in r.out
    assert "[1/2] DiceFlow: repeat" not in r.err and "repeat 1 of 2 runs first" in r.err  # no lock yet


def test_each_repeat_is_recorded_with_what_differed_and_a_replay_says_it_is_not_new(unseeded, project):
    found = re.search(r"recorded 2 repeats in (\S+) \(kept here: (\S+), (\S+)\)", unseeded.out)
    assert found, unseeded.out
    records = [from_json(Path(p).read_text(), p) for p in found.group(2, 3)]
    assert {r.flow for r in records} == {"DiceFlow"} and records[0].run_id != records[1].run_id
    for record in records:
        assert record.nondeterministic == {"start": ("roll",), "shake": ("jitter", "roll"), "end": ("jitter", "roll")}
        assert record.parameters["sides"] == 4
    r = cli("replay", records[1].ref, cwd=project)
    assert r.code == 1, r.text
    assert "start.roll was already nondeterministic when recorded (repro check)" in r.out
    assert "result: different" in r.out


def test_a_seeded_run_is_deterministic_and_its_repeats_run_at_once(unseeded, project):
    r = cli("check", "dice_flow.py", "--repeat", "2", "-j", "2", "--", "--seed", "7", cwd=project)
    assert r.code == 0, r.text
    assert "start: 5 identical\nshake: 7 identical\nend: 8 identical\nresult: deterministic" in r.out
    started = [r.err.index(f"[{n}/2] DiceFlow: building environments and running") for n in (1, 2)]
    assert max(started) < r.err.index("ended in"), r.err  # both runs started before either ended


def test_bad_counts_are_refused_with_exit_2_before_anything_runs(project):
    for args in (["--repeat", "1"], ["--repeat", "101"], ["-j", "0"]):
        r = cli("check", "dice_flow.py", *args, cwd=project)
        assert r.code == 2, (args, r.text)
        assert "Metaflow" not in r.text
    r = cli("check", "no_such_flow.py", cwd=project)
    assert r.code == 2, r.text


def test_pytest_repeat_fails_the_random_step_accepts_the_marked_one_and_passes_the_rest(unseeded, project):
    env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(project)}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "--repro", "--repro-repeat", "2"]
    proc = subprocess.run([*cmd, "dice_flow.py"], capture_output=True, text=True, cwd=project, env=env, timeout=900)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    results = dict(re.findall(r"dice_flow\.py::DiceFlow::(\S+) (PASSED|FAILED)", out))
    assert results == {"start": "FAILED", "shake": "PASSED", "end": "PASSED", "[lock]": "PASSED", "[pickle]": "PASSED"}
    assert "nondeterministic: differs between 2 runs of the same code in the same environments: start.roll" in out
    assert "hint: seed every random number generator" in out and "OMP_NUM_THREADS" in out
    assert "ReproNondeterministicWarning: DiceFlow.shake: nondeterministic" in out
    assert "accepted by [tool.repro] nondeterministic (DiceFlow.shake.jitter)" in out
    proc = subprocess.run(
        [*cmd[:-1], "0", "dice_flow.py"], capture_output=True, text=True, cwd=project, env=env, timeout=300
    )
    assert proc.returncode == 4 and "--repeat 0" in proc.stderr, proc.stdout + proc.stderr
