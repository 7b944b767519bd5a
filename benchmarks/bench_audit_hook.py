"""What watching a step's reads costs (issue 23, item 6): the audit hook every task installs
(``metaflow_extensions/repro/plugins/reads.py``), installed against not (``REPRO_WATCH_READS=0``).

    python benchmarks/bench_audit_hook.py [--pairs 7]

1. a step that opens 20,000 small files of its flow's folder (a real Metaflow run under repro's
   environment, one flow run per sample): target ≤ 1.02×;
2. the seed's LinearFlow: target ≤ 1.01×;
3. the step's own work alone (open and read 20,000 files in one interpreter, then the task's report,
   which sorts the noted events out): the hook's cost where nothing else hides it.

Each measure takes pairs of samples, hook and no hook, in alternating order (a machine that slows down
or warms up weighs on both sides alike), and prints the median of the per-pair ratios of CPU time
(user + sys of the whole process tree: Metaflow's runtime and its tasks).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = 20000

FILES_FLOW = """
from metaflow import FlowSpec, step


class OpenFilesFlow(FlowSpec):
    @step
    def start(self):
        total = 0
        for i in range(FILES):
            with open("data/f{:05d}.csv".format(i)) as fh:
                total += len(fh.read())
        self.total = total
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    OpenFilesFlow()
""".replace("FILES", str(FILES))

BODY = """
import fnmatch, ipaddress, json, socket, sys, tempfile, time, urllib.parse  # imported by Metaflow before a step
sys.path.insert(0, ROOT)
t = time.process_time()
if sys.argv[1] == "1":
    from metaflow_extensions.repro.plugins import reads
    reads.watch(".")
for i in range(FILES):
    with open("data/f{:05d}.csv".format(i)) as fh:
        fh.read()
if sys.argv[1] == "1":
    reads.report()
print(time.process_time() - t)
""".replace("ROOT", repr(str(ROOT))).replace("FILES", str(FILES))


def cpu_of(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """CPU seconds (user + sys) of one child process and the descendants it waited for."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.decode(errors='replace')[-3000:]}")
    return usage.ru_utime + usage.ru_stime


def body_cpu(folder: Path, hooked: bool) -> float:
    """CPU seconds of the step's own work, as the process measured it."""
    proc = subprocess.run(
        [sys.executable, "-c", BODY, "1" if hooked else "0"], cwd=folder, capture_output=True, text=True, check=True
    )
    return float(proc.stdout.strip())


def pairwise(sample, pairs: int) -> tuple[float, float, float]:
    """(median ratio hook / no hook, median with, median without) over alternating pairs."""
    ratios, on, off = [], [], []
    for n in range(pairs):
        order = (True, False) if n % 2 == 0 else (False, True)
        got = {hooked: sample(hooked) for hooked in order}
        on.append(got[True])
        off.append(got[False])
        ratios.append(got[True] / got[False])
    return statistics.median(ratios), statistics.median(on), statistics.median(off)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="repro-bench-hook-"))
    try:
        bench(work, args.pairs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(work: Path, pairs: int) -> None:
    flows = work / "flows"
    (flows / "data").mkdir(parents=True)
    (flows / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    shutil.copy(ROOT / "scenarios" / "linear.py", flows / "linear.py")
    (flows / "openfiles.py").write_text(FILES_FLOW)
    for i in range(FILES):
        (flows / "data" / f"f{i:05d}.csv").write_text(f"{i},{i * i}\n")
    env = {
        **os.environ,
        "REPRO_HOME": str(work / "home"),
        "METAFLOW_USER": os.environ.get("METAFLOW_USER", "bench"),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "datastore"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }

    def flow_sample(name: str):
        def sample(hooked: bool) -> float:
            run_env = {**env, "REPRO_WATCH_READS": "1" if hooked else "0"}
            return cpu_of([sys.executable, name, "--environment=pypi", "run"], flows, run_env)

        return sample

    for name in ("openfiles.py", "linear.py"):  # warm: lock, envs, bytecode, the page cache
        flow_sample(name)(True)
        flow_sample(name)(False)
    rows = [
        ("step opening 20,000 small files (whole run)", pairwise(flow_sample("openfiles.py"), pairs), "<= 1.02"),
        ("LinearFlow (whole run)", pairwise(flow_sample("linear.py"), pairs), "<= 1.01"),
        (
            "the step's own work alone (open + read 20,000 files, report)",
            pairwise(lambda h: body_cpu(flows, h), pairs),
            "-",
        ),
    ]
    print(f"{'measure':62} {'hook':>9} {'no hook':>9} {'ratio':>7}  target")
    for label, (ratio, on, off), target in rows:
        print(f"{label:62} {on:8.3f}s {off:8.3f}s {ratio:7.3f}  {target}")
    print(f"(CPU time, user + sys; median of {pairs} alternating pairs; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
