"""Per-task overhead of repro's Batch bootstrap over a plain `--with batch` task (target < 1.5 s).

    python benchmarks/bench_batch.py [--rounds 2]

Uses the Docker daemon at DOCKER_HOST if one answers, else starts its own (tests/containers.py; needs root).

Stands up the tests' AWS Batch on moto (tests/batch_setup.py: moto's server running each job as a
container of the daemon at DOCKER_HOST, host network only; the base image from `repro image build`),
then runs one two-step flow (start, end) both ways:

* plain: `python flow.py run --with batch` (Metaflow's default environment, the image's python3);
* repro: `python flow.py --environment=conda run --with batch` with `@conda(six)` on every step:
  each job first makes its env from the S3 store (interpreter snapshot, uv, package files).

A task's time is from the host's "Task is starting." to "Task finished successfully." (Metaflow's
own log lines, host clock). The jobs share an instance cache (``batch-cache``, a host volume: every
job here is a container of this machine), empty at the start: the first job of an env builds it from
the store and keeps it, every later job links to it. Reported: the mean per task for plain and for
repro's later jobs (the steady state of an instance), the overhead and the ratio between them, the
first job's time, and the bootstrap's own breakdown as each job printed it.
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
import textwrap
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLOW = """
from metaflow import FlowSpec, step{imports}


class BenchBatchFlow(FlowSpec):
    {decorator}
    @step
    def start(self):
        self.x = 1
        self.next(self.end)

    {decorator}
    @step
    def end(self):
        pass


if __name__ == "__main__":
    BenchBatchFlow()
"""

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \[[^/]+/(\w+)/(\d+) \(pid \d+\)\] (.*)$")
BOOT = re.compile(
    r"repro: env \w+ (?:built from|from the instance cache) \S+ in [\d.]+ s \([^)]*\)[^\n]*"
    r"|repro bootstrap: warning: [^\n]*"
)


def task_seconds(log: str) -> list[tuple[float, bool]]:
    """(seconds, whether its env came from the instance cache) of each task that finished."""
    starts: dict[str, datetime] = {}
    cached: set[str] = set()
    out = []
    for line in log.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        when, task, text = datetime.fromisoformat(m.group(1)), f"{m.group(2)}/{m.group(3)}", m.group(4)
        if text == "Task is starting." and task not in starts:
            starts[task] = when
        elif "from the instance cache" in text:
            cached.add(task)
        elif text == "Task finished successfully." and task in starts:
            out.append(((when - starts[task]).total_seconds(), task in cached))
    return out


def run(folder: Path, env: dict, repro: bool) -> tuple[list[tuple[float, bool]], list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    body = FLOW.format(
        imports=", conda" if repro else "", decorator='@conda(libraries={"six": "1.16.0"})' if repro else ""
    )
    (folder / "flow.py").write_text(textwrap.dedent(body))
    if repro:
        (folder / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    cmd = [sys.executable, "flow.py"] + (["--environment=conda"] if repro else []) + ["run", "--with", "batch"]
    proc = subprocess.run(cmd, cwd=folder, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log[-4000:]}")
    return task_seconds(log), [m.group(0) for m in BOOT.finditer(log)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from tests import containers

    daemon = containers.start()  # the daemon at DOCKER_HOST if one answers, else our own (needs root)
    os.environ["DOCKER_HOST"] = docker_host = daemon.host
    from metaflow_repro.containers import image
    from metaflow_repro.settings import load_settings
    from tests import batch_setup

    base = image.build(load_settings(Path.cwd()).home, log=lambda m: None)
    proc, endpoint = batch_setup.start_moto(docker_host)
    world = None
    try:
        world = batch_setup.make_world(endpoint, docker_host, base.tag)
        env = {**world.env, "REPRO_STORE": world.store(), "METAFLOW_USER": os.environ.get("METAFLOW_USER", "bench")}
        plain: list[float] = []
        warm: list[float] = []
        cold: list[float] = []
        boots: list[str] = []
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
            for i in range(args.rounds):
                plain += [s for s, _ in run(Path(tmp) / f"plain{i}", env, repro=False)[0]]
                tasks, lines = run(Path(tmp) / f"repro{i}", env, repro=True)
                warm += [s for s, cached in tasks if cached]
                cold += [s for s, cached in tasks if not cached]
                boots += lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        daemon.stop()
        if world is not None:
            shutil.rmtree(world.cache, ignore_errors=True)
    p = statistics.mean(plain)
    print(f"plain --with batch: {len(plain)} tasks, mean {p:.2f} s per task")
    if cold:
        c = statistics.mean(cold)
        print(f"repro, a job that builds its env (first of the instance): {len(cold)} tasks, mean {c:.2f} s")
        print(f"first job of an env over a plain task: {c - p:.2f} s (target <= 2 s), {c / p:.2f}x plain")
    if warm:
        r = statistics.mean(warm)
        print(f"repro, a later job of the instance (env from its cache): {len(warm)} tasks, mean {r:.2f} s per task")
        print(
            f"per-task overhead of repro's bootstrap: {r - p:.2f} s (target < 1.5 s), {r / p:.2f}x plain; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
    for line in boots:
        print("  " + line)


if __name__ == "__main__":
    main()
