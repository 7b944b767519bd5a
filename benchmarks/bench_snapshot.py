"""Snapshot speed, each measured side by side with its baseline in one run.

    python benchmarks/bench_snapshot.py

1. replay of the scikit-learn scenario from a local store with an empty REPRO_HOME, against the
   original `repro run` of it, also from an empty REPRO_HOME (target: replay ≤ 1.2× the original);
2. push and pull of that run's package files to moto's S3 server on loopback, against plain boto3
   `upload_file` / `download_file` of the same files (target: ≥ 70 % of boto3's throughput).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args, env) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "metaflow_repro", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"repro {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="repro-bench-snap-"))
    base = {
        **os.environ,
        "METAFLOW_USER": os.environ.get("METAFLOW_USER", "bench"),
        "REPRO_FROZEN": "1",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    store = (work / "store").as_uri()
    flow = ROOT / "scenarios" / "linear_sklearn.py"

    original = cli("run", str(flow), "--store", store, env={**base, "REPRO_HOME": str(work / "home-a")})
    replay = cli(
        "replay",
        "LinearSklearnFlow/latest",
        "--store",
        store,
        env={
            **base,
            "REPRO_HOME": str(work / "home-b"),
            "REPRO_INDEX_URL": "http://127.0.0.1:9/simple",
            "UV_OFFLINE": "1",
        },
    )

    # push / pull against plain boto3, same files, same server
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
            }
        )
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        from metaflow_repro.settings import load_settings
        from metaflow_repro.store import open_store
        from metaflow_repro.store.snapshot import list_records, pull, push, record_packages

        settings_a = load_settings(flow, environ={**base, "REPRO_HOME": str(work / "home-a")})
        record = list_records(open_store(store))[0]
        packages = record_packages(record)
        from metaflow_repro.env.cache import PackageCache

        cache = PackageCache(settings_a.home.packages)
        files = [cache.path(p) for p in packages]
        total = sum(f.stat().st_size for f in files) + (settings_a.home.code_package(record.code_sha256)).stat().st_size

        t = time.perf_counter()
        for f in files + [settings_a.home.code_package(record.code_sha256)]:
            s3.upload_file(str(f), "bench", f"plain/{f.name}")
        boto_up = time.perf_counter() - t
        target = open_store("s3://bench/repro")  # client creation is outside the timings, as for boto3
        t = time.perf_counter()
        push(record, target, settings_a)
        ours_up = time.perf_counter() - t

        down = work / "plain-down"
        down.mkdir()
        t = time.perf_counter()
        for f in files + [settings_a.home.code_package(record.code_sha256)]:
            s3.download_file("bench", f"plain/{f.name}", str(down / f.name))
        boto_down = time.perf_counter() - t
        settings_c = load_settings(flow, environ={**base, "REPRO_HOME": str(work / "home-c")})
        t = time.perf_counter()
        pull(record, target, settings_c)
        ours_down = time.perf_counter() - t
    finally:
        server.terminate()
        server.wait()

    mb = total / 1e6
    rows = [
        [
            "replay from empty REPRO_HOME (local store)",
            f"{replay:.1f} s",
            f"original repro run, empty home: {original:.1f} s",
            f"{replay / original:.2f}x",
            "<= 1.2x",
        ],
        [
            f"push {len(files) + 1} files, {mb:.0f} MB",
            f"{mb / ours_up:.0f} MB/s",
            f"boto3 upload_file loop: {mb / boto_up:.0f} MB/s",
            f"{boto_up / ours_up * 100:.0f} %",
            ">= 70 %",
        ],
        [
            f"pull {len(files) + 1} files, {mb:.0f} MB (verified)",
            f"{mb / ours_down:.0f} MB/s",
            f"boto3 download_file loop: {mb / boto_down:.0f} MB/s",
            f"{boto_down / ours_down * 100:.0f} %",
            ">= 70 %",
        ],
    ]
    print(tabulate(rows, headers=["measure", "repro", "baseline", "ratio", "target"]))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
