"""What a determinism check costs over one run: `repro check FLOW --repeat 2 -j 2` against `repro run FLOW`
(target: at most 1.3x one run's wall time on 2 cores, for a light flow).

    python benchmarks/bench_repeat.py [--rounds 3] [--home DIR]

A light flow (start, a, end; no libraries: one small pypi env) is locked and run once first, so its env
is built and the store holds its interpreter snapshot, packages and code: what both commands then pay
is the run itself (Metaflow, the tasks, reading the run back, the pickle checks, the push). Then, for
each round, interleaved so that a warm or cold cache favours neither: one `repro run` (one run,
recorded) and one `repro check --repeat 2 -j 2` (two runs at once in the same env, compared, both
recorded). Reported: the median and best wall time of each, and their ratios (the best is the
least disturbed by other work on the machine; the load average is printed). ``--home``: the REPRO_HOME to use
(default: a new one under a temporary folder, removed after).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLOW = """
import random

from metaflow import FlowSpec, Parameter, step


class BenchRepeatFlow(FlowSpec):
    n = Parameter("n", default=1000, type=int)

    @step
    def start(self):
        self.values = [random.Random(7).random() for _ in range(self.n)]
        self.next(self.a)

    @step
    def a(self):
        self.total = sum(self.values)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    BenchRepeatFlow()
"""


def repro(args: list[str], cwd: Path, env: dict) -> float:
    """Seconds one `repro` command took (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "metaflow_repro", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"repro {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--home", type=Path, default=None, help="REPRO_HOME (default: a new temporary one)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-repeat-"))
    try:
        project = tmp / "project"
        project.mkdir()
        (project / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
        (project / "flow.py").write_text(textwrap.dedent(FLOW).lstrip())
        env = {**os.environ, "REPRO_HOME": str(args.home or tmp / "home"), "METAFLOW_USER": "bench"}
        repro(["lock", "flow.py"], project, env)
        repro(["run", "flow.py"], project, env)  # builds the env, fills the store: not measured
        one, two = [], []
        for _ in range(args.rounds):
            one.append(repro(["run", "flow.py"], project, env))
            two.append(repro(["check", "flow.py", "--repeat", "2", "-j", "2"], project, env))
        run_s, check_s = statistics.median(one), statistics.median(two)
        print(f"cores: {os.cpu_count()}, rounds: {args.rounds}, load average: {os.getloadavg()[0]:.1f}")
        for label, times in (("repro run (1 run)", one), ("repro check --repeat 2 -j 2 (2 runs)", two)):
            listed = ", ".join(f"{t:.2f}" for t in times)
            print(f"{label:<38} median {statistics.median(times):.2f} s, best {min(times):.2f} s  ({listed})")
        print(
            f"ratio: {check_s / run_s:.2f}x one run by the medians, {min(two) / min(one):.2f}x by the best (target <= 1.3x)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
