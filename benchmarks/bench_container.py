"""Environment bootstrap inside a fresh container, from the S3 store alone, against Metaflow's published
5.29 s for its fast initializer on the same kind of env (a matplotlib env).

    python benchmarks/bench_container.py [--rounds 3]

A flow with a matplotlib step is run and pushed to S3 (moto's server on 127.0.0.1) once. Then, per
round, a fresh container of `repro image build`'s image (host network, empty REPRO_HOME, repro's
source and dependencies mounted read-only) does what a replay does before it runs anything:

1. fetch the interpreter snapshot from S3, verify its sha256, restore it at its prefix, while (overlapped,
   as ``replay.pull_and_restore`` does) every package file of the env is fetched from S3 and verified;
   and (overlapped too) the env's bytecode object its first build packed (``env/pycache``);
2. build the env offline with uv, its ``.pyc`` files restored from that object instead of compiled.

Reported: each phase and their sum (measured inside the container), the build's parts (uv venv, uv pip
install, bytecode, fingerprint, manifest: wall and CPU, subprocesses included), and the container's wall
time (start to exit). Target (issue 13): under 2.5 s on a warm store, against 5.29 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METAFLOW_FAST_INITIALIZER_S = 5.29

FLOW = """
from metaflow import FlowSpec, step, pypi

class PlotFlow(FlowSpec):
    @pypi(packages={"matplotlib": "3.9.2"})
    @step
    def start(self):
        import matplotlib
        self.version = matplotlib.__version__
        self.next(self.end)

    @step
    def end(self):
        pass

if __name__ == "__main__":
    PlotFlow()
"""

INSIDE = """
import functools, json, resource, sys, time
from pathlib import Path


def cpu():
    return sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


PARTS = {}


def timed(owner, name, part):
    # the build's parts, wall and CPU (its subprocesses' too), measured around the functions build.py calls
    f = getattr(owner, name)

    @functools.wraps(f)
    def wrapper(*a, **k):
        t, c = time.perf_counter(), cpu()
        try:
            return f(*a, **k)
        finally:
            key = part(a) if callable(part) else part
            PARTS[key] = PARTS.get(key, 0) + time.perf_counter() - t
            PARTS[key + " cpu"] = PARTS.get(key + " cpu", 0) + cpu() - c

    setattr(owner, name, wrapper)


t0 = time.perf_counter()
from metaflow_repro.settings import load_settings
from metaflow_repro.store import open_store
from metaflow_repro.store.snapshot import load_record, parse_ref
from metaflow_repro.operations.replay import pull_and_restore
from metaflow_repro.env.engine import environments
from metaflow_repro.env import build as B
from metaflow_repro.operations import replay as R
timed(B, "run_uv", lambda a: "  uv " + a[0][0] + (" install" if a[0][0] == "pip" else ""))
timed(B, "compile_site_packages", "  bytecode compile")
timed(B.pycache, "restore", "  bytecode restore")
timed(R, "fetch_bytecode", "  bytecode fetch (overlapped)")
timed(B.fingerprint, "of_env", "  fingerprint")
timed(B.manifest, "take", "  manifest")
settings = load_settings(Path.cwd())
store = open_store(sys.argv[2])
record = load_record(store, parse_ref(sys.argv[1]))
t1 = time.perf_counter()
c1 = cpu()
env_id, pl = next((e, p) for e, p in record.envs.items() if any(x.name == "matplotlib" for x in p.packages))
bytecode = {e: s for e, s in record.bytecode.items() if e == env_id}
only = type(record)(**{**record.__dict__, "envs": {env_id: pl}, "bytecode": bytecode})
locks, interpreters = pull_and_restore(only, store, settings, lambda m: None, bytecode=True)  # a container replay
t2 = time.perf_counter()
environments(settings).build(locks[env_id], interpreters[pl.python], offline=True, where="bench")
t3 = time.perf_counter()
print("RESULT " + json.dumps({"import+record": t1 - t0, "interpreter+packages": t2 - t1, "build": t3 - t2,
                              "packages_n": len(pl.packages), "bootstrap cpu": cpu() - c1, **PARTS}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("METAFLOW_USER", "bench")
    from tests import containers
    from tests.helpers import _wait_for_port, free_port

    daemon = containers.start()
    os.environ["DOCKER_HOST"] = daemon.host
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        aws = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": endpoint,
        }
        os.environ.update(aws)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        store = "s3://bench/team"
        work = Path(tempfile.mkdtemp(prefix="bench-container-"))
        (work / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
        flow = work / "plot.py"
        flow.write_text(textwrap.dedent(FLOW))
        mf = {
            "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "mf"),
            "METAFLOW_DEFAULT_DATASTORE": "local",
            "METAFLOW_DEFAULT_METADATA": "local",
        }
        r = subprocess.run(
            [sys.executable, "-m", "metaflow_repro", "run", str(flow), "--store", store],
            cwd=work,
            env={**os.environ, **mf},
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        from metaflow_repro.containers import image, runtime
        from metaflow_repro.executors.docker import container_env
        from metaflow_repro.settings import load_settings
        from metaflow_repro.store import layout, open_store
        from metaflow_repro.store.snapshot import list_records

        settings = load_settings(work)
        record = list_records(open_store(store))[0]
        built = image.build(settings.home, log=lambda m: None)
        rt = runtime.prepare(settings.home, built.python, log=lambda m: None)
        client = image.client()
        ref = f"{layout.flow_dir(record.flow, record.identity)}/{record.run_id}"
        rows = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            out = client.containers.run(
                built.tag,
                ["python3", "-c", INSIDE, ref, store],
                environment={**container_env(store, settings), "PYTHONPATH": rt.pythonpath, "PATH": rt.path},
                volumes=rt.volumes(),
                network_mode="host",
                working_dir="/tmp",
                remove=True,
            )
            wall = time.perf_counter() - started
            line = next(x for x in out.decode().splitlines() if x.startswith("RESULT "))
            d = json.loads(line[7:])
            d["bootstrap"] = d["interpreter+packages"] + d["build"]
            d["container wall"] = wall
            rows.append(d)
        parts = [k for k in rows[0] if k.startswith("  ")]
        keys = [
            "interpreter+packages",
            "build",
            *parts,
            "bootstrap",
            "bootstrap cpu",
            "import+record",
            "container wall",
        ]
        table = [[k, f"{statistics.median(r[k] for r in rows):.2f}", f"{min(r[k] for r in rows):.2f}"] for k in keys]
        print(tabulate(table, headers=["phase (s)", "median", "best"]))
        boot = statistics.median(r["bootstrap"] for r in rows)
        print(
            f"\nmatplotlib env ({rows[0]['packages_n']} packages) + interpreter from S3 in a fresh container: "
            f"{boot:.2f} s vs Metaflow's published {METAFLOW_FAST_INITIALIZER_S} s "
            f"(ratio {boot / METAFLOW_FAST_INITIALIZER_S:.2f}; target < 2.5 s); CPU time "
            f"{statistics.median(r['bootstrap cpu'] for r in rows):.2f} s; load average {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} cores"
        )
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        daemon.stop()


if __name__ == "__main__":
    main()
