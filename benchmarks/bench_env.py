"""Environment engine speed, each number measured side by side with its baseline in one run.

    python benchmarks/bench_env.py [--rounds 5]

1. build of a pandas + scikit-learn env whose packages are in the cache, against calling
   `uv venv` + `uv pip install --offline --no-index --require-hashes` on the same files (target ≤ 1.2×);
2. reuse of an already-built env, check + return, per step (target < 50 ms);
3. fingerprint of an env of ~100 distributions (target < 300 ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLOW = """
from metaflow import FlowSpec, step, pypi

class BenchFlow(FlowSpec):
    @pypi(packages={"pandas": "2.2.3", "scikit-learn": "1.5.2"})
    @step
    def start(self):
        self.next(self.wide)

    @pypi(packages={"jupyter": "1.1.1"})
    @step
    def wide(self):
        self.next(self.end)

    @step
    def end(self):
        pass
"""


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="repro-bench-"))
    os.environ["REPRO_HOME"] = str(work / "home")
    os.environ.setdefault("METAFLOW_USER", "bench")
    from metaflow_repro.env import fingerprint, pythons
    from metaflow_repro.env.build import env_python, install_args
    from metaflow_repro.env.engine import build_flow, environments, lock_flow, open_flow
    from metaflow_repro.env.uvtool import run_uv

    flow_file = work / "bench.py"
    flow_file.write_text(textwrap.dedent(FLOW))
    flow = open_flow(flow_file)
    lock = lock_flow(flow, log=lambda m: None).lock
    build_flow(flow, log=lambda m: None)  # downloads once, warms uv's cache
    envs = environments(flow.settings)
    pl = lock.steps["start"].platforms["linux-64"]
    interp = pythons.find(pl.python)
    files = envs.fetcher.ensure(pl.packages)
    req = work / "req.txt"
    req.write_text("".join(f"{p.name} @ {files[p.sha256].as_uri()} --hash=sha256:{p.sha256}\n" for p in pl.packages))

    import metaflow_repro.env.build as materialize

    uv_time = []
    real_run_uv = materialize.run_uv

    def counting_run_uv(*a, **k):
        t = time.perf_counter()
        try:
            return real_run_uv(*a, **k)
        finally:
            uv_time.append(time.perf_counter() - t)

    materialize.run_uv = counting_run_uv
    own_work = []

    def ours():
        uv_time.clear()
        t = time.perf_counter()
        envs.build(pl, interp)
        own_work.append(time.perf_counter() - t - sum(uv_time))

    def baseline():
        target = work / "baseline-env"
        assert run_uv(["venv", "--quiet", "--python", interp.path, str(target)], envs.uv_cache).returncode == 0
        proc = run_uv(install_args(env_python(target), req), envs.uv_cache, offline=True)
        assert proc.returncode == 0, proc.stderr

    ours_t, base_t = [], []
    for n in range(args.rounds):
        # Removals happen outside the timed regions and are flushed first: whichever build runs
        # right after deleting ~300 MB pays for it, so the order also alternates every round.
        envs.remove(pl.env_id)
        shutil.rmtree(work / "baseline-env", ignore_errors=True)
        os.sync()
        time.sleep(0.3)
        if n % 2:
            ours_t.append(timed(ours))
            base_t.append(timed(baseline))
        else:
            base_t.append(timed(baseline))
            ours_t.append(timed(ours))
    o, b = statistics.median(ours_t), statistics.median(base_t)

    # reuse: open flow once, then check + return every step's env
    steps = list(flow.specs)
    reuse = []
    for _ in range(args.rounds * 4):
        t = time.perf_counter()
        build_flow(flow, log=lambda m: None)
        reuse.append((time.perf_counter() - t) / len(steps))
    r = statistics.median(reuse)

    wide = envs.get(lock.steps["wide"].platforms["linux-64"].env_id)
    ndist = len(fingerprint.take(wide.python)["distributions"])
    fps = [timed(lambda: fingerprint.take(wide.python)) for _ in range(args.rounds * 2)]
    f = statistics.median(fps)

    rows = [
        [
            "build pandas+sklearn env from cache",
            f"{o * 1000:.0f} ms",
            f"uv venv + uv pip install --offline: {b * 1000:.0f} ms",
            f"{o / b:.2f}x",
            "<= 1.2x",
        ],
        [
            "  repro's own work in that build (outside uv)",
            f"{statistics.median(own_work) * 1000:.1f} ms",
            "-",
            "-",
            "-",
        ],
        ["reuse a built env, per step", f"{r * 1000:.1f} ms", "-", "-", "< 50 ms"],
        [f"fingerprint an env of {ndist} distributions", f"{f * 1000:.0f} ms", "-", "-", "< 300 ms"],
    ]
    print(tabulate(rows, headers=["measure", "repro", "baseline", "ratio", "target"]))
    print(f"(median of {args.rounds} interleaved rounds; {len(pl.packages)} packages; work dir {work})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
