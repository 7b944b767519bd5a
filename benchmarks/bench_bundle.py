"""A bundle's size and speed (issue 24 item 4), measured side by side with its baseline in one run.

    python benchmarks/bench_bundle.py [--rounds 3]

Records the scikit-learn scenario (`scenarios/linear_sklearn.py`) once into a local store, then, each
round, times two commands end to end (each a fresh `repro` process):

* baseline: `repro store push LinearSklearnFlow/latest --store file://<fresh>`: the run's closure from this
  machine's REPRO_HOME into an empty store (every object hashed, copied, the record last);
* bundle: `repro bundle LinearSklearnFlow/latest --store file://<the run's store> -o run.repro`: the same
  closure read from the store, checked against the record, written as one zstd'd tar.

Reported: the median of each, the ratio (target: bundle <= 1.5x push), and the bundle's size against
the sum of its parts (what the store holds for the run).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
REF = "LinearSklearnFlow/latest"


def cli(*args, env) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "metaflow_repro", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"repro {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return time.perf_counter() - t, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    work = Path(tempfile.mkdtemp(prefix="repro-bench-bundle-"))
    env = {
        **os.environ,
        "METAFLOW_USER": os.environ.get("METAFLOW_USER", "bench"),
        "REPRO_FROZEN": "1",
        "REPRO_HOME": os.environ.get("REPRO_HOME", str(work / "home")),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    store = (work / "store").as_uri()
    cli("run", str(ROOT / "scenarios" / "linear_sklearn.py"), "--store", store, env=env)
    pushes, bundles, out = [], [], ""
    for i in range(rounds):
        pushes.append(cli("store", "push", REF, "--store", (work / f"fresh-{i}").as_uri(), env=env)[0])
        bundle = work / f"run-{i}.repro"
        seconds, out = cli("bundle", REF, "--store", store, "-o", str(bundle), env=env)
        bundles.append(seconds)
    found = re.search(r"(\d+) objects, ([\d.]+) MB \(its parts: ([\d.]+) MB", out)
    assert found, out
    objects, size, parts = int(found.group(1)), float(found.group(2)), float(found.group(3))
    push_s, bundle_s = statistics.median(pushes), statistics.median(bundles)
    rows = [
        [
            f"bundle {objects} objects (median of {rounds})",
            f"{bundle_s:.2f} s",
            f"repro store push to a fresh file:// store: {push_s:.2f} s",
            f"{bundle_s / push_s:.2f}x",
            "<= 1.5x",
        ],
        ["bundle size", f"{size:.1f} MB", f"sum of its parts: {parts:.1f} MB", f"{size / parts:.2f}x", "-"],
    ]
    print(tabulate(rows, headers=["measure", "repro", "baseline", "ratio", "target"]))
    print(f"rounds: push {', '.join(f'{s:.2f}' for s in pushes)} s; bundle {', '.join(f'{s:.2f}' for s in bundles)} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
