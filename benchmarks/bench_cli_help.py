"""How long `repro --help` takes (target <= 150 ms wall, median), against a bare interpreter start:

    python benchmarks/bench_cli_help.py [--rounds 10] [--repro PATH]

Runs the installed console script (``repro`` beside this interpreter, or --repro) and ``python -c
pass`` alternately, so both see the same load; reports the median wall and CPU time (user + system
of the child) of each, and what repro adds. The parser lists every command without importing any
command module or operation (``metaflow_repro.cli.parser``), so the difference is the parser itself."""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_MS = 150.0


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repro", default=str(Path(sys.executable).with_name("repro")), help="the console script")
    opts = parser.parse_args()
    commands = {"repro --help": [opts.repro, "--help"], "python -c pass": [sys.executable, "-c", "pass"]}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(opts.rounds):
        for name, command in commands.items():
            times[name].append(_timed(command))
    wall = {name: statistics.median(w for w, _ in t) * 1000 for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) * 1000 for name, t in times.items()}
    for name in commands:
        print(f"{name}: wall {wall[name]:.0f} ms, cpu {cpu[name]:.0f} ms (median of {opts.rounds})")
    ours = wall["repro --help"]
    print(f"repro adds {ours - wall['python -c pass']:.0f} ms wall; target <= {TARGET_MS:.0f} ms wall")
    return 0 if ours <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
