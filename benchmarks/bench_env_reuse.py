"""What checking a built env before reuse costs, on an env already built (read only: nothing in it changes).

    python benchmarks/bench_env_reuse.py REPRO_HOME/envs/<env folder> [--rounds 10]

1. the content check reuse does now (``env/manifest.check``: every entry stat-ed, one digest of their
   stamps compared with the manifest's; nothing else read when it is the same), against
2. the size-only check it replaced (``fingerprint.of_env``: every file RECORD lists stat-ed, digest compared);
3. the content check when one file was touched (its stamp changed: the list read, that file re-hashed);
4. what the build pays once for the manifest (``manifest.take``: RECORD's sha256 for what uv installed,
   every other file hashed), and what hashing every file would cost instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    from tabulate import tabulate

    from metaflow_extensions.repro.plugins import protocol
    from metaflow_repro.env import fingerprint, manifest
    from metaflow_repro.env.build import NOT_LISTED

    ap = argparse.ArgumentParser()
    ap.add_argument("env", type=Path, help="a built env's folder (it has a .repro-env.json)")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    env = args.env.resolve()
    marker = json.loads((env / protocol.ENV_MARKER).read_text())
    fp = marker[protocol.MARKER_FINGERPRINT]
    facts = {k: v for k, v in fp.items() if k not in ("distributions", "digest", "locations", "conda")}
    conda = bool(fp.get("conda"))

    env_id = marker[protocol.MARKER_ENV_ID]
    take_ms = median_ms(lambda: manifest.take(env, env_id, NOT_LISTED), 3)
    all_ms = median_ms(lambda: manifest.take(env, env_id, NOT_LISTED, fresh=False), 3)
    listed = manifest.take(env, env_id, NOT_LISTED)
    with tempfile.TemporaryDirectory() as tmp:  # the manifest's own read is part of reuse: from a file
        path = Path(tmp) / "env.files.json"
        manifest.write(path, listed)

        def content_check():
            found = manifest.check(env, path, env_id, NOT_LISTED)
            assert not found.problems and found.refreshed is None, found.problems[:3]

        def size_check():
            fingerprint.of_env(env, facts, conda=conda)

        rounds = args.rounds
        new, old = [], []
        for _ in range(rounds):  # interleaved, so a warm or cold cache favours neither
            new.append(median_ms(content_check, 1))
            old.append(median_ms(size_check, 1))
        one = sorted(listed["files"])[len(listed["files"]) // 2]  # as if this file had been touched
        listed["files"][one] = listed["files"][one][:2] + [0, 0, 0]
        listed["stamps"] = ""
        manifest.write(path, listed)
        touched = median_ms(lambda: manifest.check(env, path, env_id, NOT_LISTED), rounds)
        size_kb = path.stat().st_size / 1024
    rows = [
        ["reuse check: content (manifest, stamps)", f"{statistics.median(new):.1f} ms"],
        ["reuse check before: sizes (fingerprint)", f"{statistics.median(old):.1f} ms"],
        ["reuse check, one file touched (list read, file re-hashed)", f"{touched:.1f} ms"],
        ["build: write the manifest, once (RECORD's sha256 for uv's files)", f"{take_ms:.0f} ms"],
        ["  (hashing every file instead)", f"{all_ms:.0f} ms"],
    ]
    print(tabulate(rows, headers=["measure", "median"]))
    print(f"({len(listed['files'])} files and links, manifest {size_kb:.0f} KiB, {rounds} rounds, env {env})")


if __name__ == "__main__":
    main()
