"""How long ``repro --help`` takes: the first thing a newcomer types, and the floor under every command
(each starts by importing the CLI and building its parser).

    python benchmarks/bench_cli_help.py [--runs 10]

Runs the ``repro`` console script installed next to this interpreter (the one users run; any layout
of ``repro.cli`` behind it), once to warm the bytecode and page caches, then ``--runs`` times, and
prints the median wall time and its ratio to the target (≤ 150 ms).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.150


def command() -> list[str]:
    """The installed ``repro`` script of this interpreter's environment, else ``python -c`` calling the
    same entry point (``repro.cli:main``, as pyproject's [project.scripts] names it)."""
    script = Path(sys.executable).parent / "repro"
    if script.is_file():
        return [str(script)]
    found = shutil.which("repro")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from repro.cli import main; sys.exit(main())"]


def wall_of(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout.decode(errors='replace')}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    argv = [*command(), "--help"]
    wall_of(argv)  # warm-up
    median = statistics.median(wall_of(argv) for _ in range(runs))
    print(
        f"repro --help: {median * 1000:.0f} ms wall (median of {runs}); "
        f"{median / TARGET_S:.2f}x the {TARGET_S * 1000:.0f} ms target"
    )


if __name__ == "__main__":
    main()
