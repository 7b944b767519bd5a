"""What Batch staging (metaflow_repro.executors.batch._put_missing) costs per run, against moto's S3 server on
loopback, for one env's objects (a 29 MB interpreter-sized object + 11 package-sized ones):

    python benchmarks/bench_staging.py [--rounds 3]

* upload: an empty store;
* warm ledger: this host verified every object already (one HEAD each, as before the ledger);
* cold ledger: another host (or a fresh REPRO_HOME): each object hashed once (S3's own SHA-256
  checksum when the object has one, else a download);
* corrupt: the 29 MB object rewritten with the same size and other bytes: hashed and replaced.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _bench(f"http://127.0.0.1:{port}", rounds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _bench(endpoint: str, rounds: int) -> None:
    import boto3

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for _ in range(300):
        try:
            s3.create_bucket(Bucket="bench-staging")
            break
        except Exception:  # the server is still starting
            time.sleep(0.1)
    from metaflow_repro.env.cache import sha256_file
    from metaflow_repro.executors.batch import StagingLedger, _put_missing
    from metaflow_repro.settings import Home
    from metaflow_repro.store import open_store

    tmp = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    files = []
    for i, size in enumerate([29_000_000] + [200_000] * 11):
        path = tmp / f"object{i}.whl"
        path.write_bytes(os.urandom(size))
        files.append((path, sha256_file(path), f"packages/sha256/00/{i:064d}/{path.name}"))
    store = open_store("s3://bench-staging/store")

    def stage(home: Path) -> tuple[float, StagingLedger]:
        ledger = StagingLedger(Home(home))
        t = time.perf_counter()
        for path, sha, key in files:
            _put_missing(store, key, path, sha, ledger)
        return time.perf_counter() - t, ledger

    print(f"upload (empty store):         {stage(tmp / 'home')[0]:.3f} s")
    print(f"warm ledger (one HEAD each):  {min(stage(tmp / 'home')[0] for _ in range(rounds)):.3f} s")
    print(f"cold ledger (another host):   {min(stage(tmp / f'other{i}')[0] for i in range(rounds)):.3f} s")
    path, _, key = files[0]
    data = path.read_bytes()
    s3.put_object(Bucket="bench-staging", Key=f"store/{key}", Body=data[:-1] + bytes([data[-1] ^ 1]))
    took, ledger = stage(tmp / "home")
    print(f"same-size corrupt 29 MB object: {took:.3f} s (replaced: {len(ledger.replaced)})")


if __name__ == "__main__":
    main()
