"""What installing repro costs every pytest run of a user's other projects: the pytest11 entry point
loads repro's plugin into every session, whether or not ``--repro`` is given.

    python benchmarks/bench_plugin_import.py [--pairs 10] [--all-plugins]

Runs ``pytest`` on a one-test file in a fresh folder, once with repro's plugin and once without
(``-p no:repro``), as pairs in alternating order (so a machine that slows down or warms up weighs on
both sides alike), and takes the CPU time (user + sys) of each child process. Prints the median of
the per-pair ratios; target ≤ 1.05×.

By default no other installed plugin is loaded (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``, repro's by
``-p repro``): a user's project need not have hypothesis & co., whose own import time (about a
second here) would hide repro's share. ``--all-plugins`` measures this environment as it is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TEST = "def test_one():\n    assert 1 + 1 == 2\n"


def cpu_of(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """CPU seconds (user + sys) of one child process, from its own rusage (not the process group's)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{out.decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--all-plugins", action="store_true", help="load every installed pytest plugin")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plugin-") as tmp:
        bench(Path(tmp), args.pairs, args.all_plugins)


def bench(folder: Path, pairs: int, all_plugins: bool) -> None:
    (folder / "pytest.ini").write_text("[pytest]\n")  # the folder is its own rootdir: no config found above it
    (folder / "test_one.py").write_text(TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    base = [sys.executable, "-m", "pytest", "-q", "test_one.py"]
    if all_plugins:
        plugged, unplugged = base, [*base, "-p", "no:repro"]
    else:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        plugged, unplugged = [*base, "-p", "repro"], [*base, "-p", "no:repro"]
    cpu_of(plugged, folder, env)  # warm-up: bytecode caches and the page cache, for both sides
    cpu_of(unplugged, folder, env)
    ratios, with_, without = [], [], []
    for i in range(pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        took = {}
        for with_repro in order:
            took[with_repro] = cpu_of(plugged if with_repro else unplugged, folder, env)
        with_.append(took[True])
        without.append(took[False])
        ratios.append(took[True] / took[False])
    which = "all plugins" if all_plugins else "no other plugin"
    print(
        f"pytest on one test ({which}), CPU: {statistics.median(with_):.3f} s with repro, "
        f"{statistics.median(without):.3f} s with -p no:repro; "
        f"ratio {statistics.median(ratios):.2f}x (pairwise median of {pairs}; target <= 1.05x)"
    )


if __name__ == "__main__":
    main()
