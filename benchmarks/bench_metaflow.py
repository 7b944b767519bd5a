"""Metaflow drop-in overhead, measured side by side with Metaflow's own default environment.

    python benchmarks/bench_metaflow.py [--rounds 3]

1. the seed's LinearFlow with warm environments: `--environment=conda run` against plain `run`
   (target ≤ 1.5×);
2. a foreach over 100 items whose tasks share 2 environments: how many environments were built
   (target: 2, not 100) and repro's per-task overhead beyond Metaflow's own (target < 30 ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]

FOREACH = """
from metaflow import FlowSpec, conda, step


class Foreach100Flow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(100))
        self.next(self.work, foreach="items")

    {decorator}
    @step
    def work(self):
        import {module}

        self.out = self.input * 2
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.out for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    Foreach100Flow()
"""


def run(flow: Path, env: dict, conda: bool) -> float:
    cmd = [sys.executable, str(flow)] + (["--environment=conda"] if conda else []) + ["run", "--max-workers", "4"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=flow.parent)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="repro-bench-mf-"))
    flows = work / "flows"  # Metaflow packages every .py under the flow's folder: keep caches out
    flows.mkdir()
    (flows / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    linear = flows / "linear.py"
    shutil.copy(ROOT / "scenarios" / "linear.py", linear)
    foreach = flows / "foreach100.py"  # 2 envs: six for `work`, the bare one for the rest
    foreach.write_text(FOREACH.replace("{decorator}", '@conda(libraries={"six": "1.16.0"})').replace("{module}", "six"))
    # Metaflow's default environment refuses @conda: its baseline is the same flow without it
    foreach_plain = flows / "foreach100_plain.py"
    foreach_plain.write_text(FOREACH.replace("{decorator}", "").replace("{module}", "json"))
    env = {
        **os.environ,
        "REPRO_HOME": str(work / "home"),
        "METAFLOW_USER": os.environ.get("METAFLOW_USER", "bench"),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "datastore"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }

    # cold run of the foreach flow: count environment builds
    cold = subprocess.run(
        [sys.executable, str(foreach), "--environment=conda", "run", "--max-workers", "4"],
        capture_output=True,
        text=True,
        env=env,
        cwd=flows,
    )
    assert cold.returncode == 0, cold.stderr[-2000:]
    builds = (cold.stdout + cold.stderr).count("building env")
    run(linear, env, True)  # warm the linear flow's env and the bytecode cache

    lin_d, lin_c, fe_d, fe_c = [], [], [], []
    for n in range(args.rounds):  # interleaved, alternating which goes first
        pairs = [(lin_d, linear, False), (lin_c, linear, True), (fe_d, foreach_plain, False), (fe_c, foreach, True)]
        if n % 2:
            pairs = [pairs[1], pairs[0], pairs[3], pairs[2]]
        for bucket, flow, conda in pairs:
            bucket.append(run(flow, env, conda))
    ld, lc = statistics.median(lin_d), statistics.median(lin_c)
    fd, fc = statistics.median(fe_d), statistics.median(fe_c)
    tasks = 103  # start, 100 × work, join, end
    rows = [
        ["LinearFlow, warm envs", f"{lc:.2f} s", f"default env: {ld:.2f} s", f"{lc / ld:.2f}x", "<= 1.5x"],
        ["foreach 100: environments built", f"{builds}", "tasks: 103", "-", "2"],
        ["foreach 100: whole run", f"{fc:.2f} s", f"default env: {fd:.2f} s", f"{fc / fd:.2f}x", "-"],
        ["foreach 100: repro overhead per task", f"{(fc - fd) / tasks * 1000:.1f} ms", "-", "-", "< 30 ms"],
    ]
    print(tabulate(rows, headers=["measure", "repro (--environment=conda)", "baseline", "ratio", "target"]))
    print(f"(median of {args.rounds} interleaved rounds, --max-workers 4, {os.cpu_count()} CPUs)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
