"""conda envs (py-rattler) against their baselines, measured side by side in one run.

    python benchmarks/bench_conda.py [--rounds 5]

A local channel (``metaflow_repro.testing.conda_channel``, built once and cached under the temp folder) holds
the same 30 packages as PyPI serves for the declaration below, plus the channel's python.

1. solve + install of that 30-package env from a warm cache (package files cached, env removed
   each round): conda-source = conda (rattler solve + our install) against the PyPI path
   (uv pip compile + uv venv/install) for the same declaration (target ≤ 1.5×);
2. install alone: ``Environments.build`` (sha256 re-check stamps, archive member check stamps,
   rattler.install, fingerprint, marker) against ``rattler.install`` called directly on the same
   records with the same warm rattler cache (target ≤ 1.2×).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PINS = {
    "requests": "2.32.3",
    "flask": "3.0.3",
    "rich": "13.9.4",
    "httpx": "0.27.2",
    "attrs": "24.2.0",
    "python-dateutil": "2.9.0.post0",
    "pytz": "2024.2",
    "pyyaml": "6.0.2",
    "toolz": "1.0.0",
    "tqdm": "4.67.1",
    "packaging": "24.2",
    "tzdata": "2024.2",
    "platformdirs": "4.3.6",
    "tomli": "2.2.1",
    "wrapt": "1.17.0",
}


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="repro-bench-conda-"))
    os.environ["REPRO_HOME"] = str(work / "home")
    os.environ.setdefault("METAFLOW_USER", "bench")

    import rattler

    from metaflow_repro.env import conda, pypi
    from metaflow_repro.env.engine import environments
    from metaflow_repro.model.spec import EnvSpec
    from metaflow_repro.settings import load_settings
    from metaflow_repro.testing.conda_channel import cached_channel

    python = ".".join(map(str, sys.version_info[:3]))
    channel = cached_channel(
        Path(tempfile.gettempdir()) / "repro-bench-channels", [python], [f"{n}=={v}" for n, v in PINS.items()]
    )
    (work / "pyproject.toml").write_text(f'[tool.repro]\nchannels = ["{channel}"]\n')
    settings = load_settings(work)
    libs = tuple(sorted(PINS.items()))
    conda_spec = EnvSpec("Bench", "start", "conda", "conda", python, libraries=libs, channels=(str(channel),))
    pypi_spec = EnvSpec("Bench", "start", "pypi", "pypi", python, libraries=libs)
    envs = environments(settings)
    from metaflow_repro.env import pythons

    interp = pythons.find(python)

    def conda_path():
        pl = conda.resolve(conda_spec, "linux-64", settings, work)
        envs.remove(pl.env_id)
        envs.build(pl, None)
        return pl

    def pypi_path():
        pl = pypi.resolve(pypi_spec, "linux-64", python, settings)
        envs.remove(pl.env_id)
        envs.build(pl, interp)
        return pl

    conda_pl, pypi_pl = conda_path(), pypi_path()  # warm every cache once
    print(
        f"env: {len([p for p in conda_pl.packages if p.name != 'python'])} conda packages + python; "
        f"{len(pypi_pl.packages)} PyPI wheels"
    )
    rows = []
    c, p = [], []
    for _ in range(args.rounds):  # interleaved: load on a shared machine hits both alike
        c.append(timed(conda_path))
        p.append(timed(pypi_path))
    rows.append(["solve + install, warm cache", statistics.median(c), statistics.median(p), "PyPI path (uv)", 1.5])

    # 2. install alone vs rattler.install on the same records
    files = envs.fetcher.ensure(conda_pl.packages)
    records = asyncio.run(_records(rattler, [files[x.sha256] for x in conda_pl.packages]))
    # ours, like rattler.install, links into a prefix given records it was handed (no solve); ours
    # also checks every cached file's stamp, reads each archive's member check, fingerprints, marks
    rcache = settings.home.conda_pkgs

    def ours():
        envs.remove(conda_pl.env_id)
        envs.build(conda_pl, None)

    def theirs():
        target = work / "direct"
        shutil.rmtree(target, ignore_errors=True)
        asyncio.run(rattler.install(records, target, cache_dir=rcache, show_progress=False))

    ours()
    theirs()
    o, t = [], []
    for _ in range(args.rounds):
        o.append(timed(ours))
        t.append(timed(theirs))
    rows.append(["install (same records)", statistics.median(o), statistics.median(t), "rattler.install", 1.2])

    table = [
        [name, f"{a * 1000:.0f} ms", f"{b * 1000:.0f} ms", base, f"{a / b:.2f}×", f"≤ {target}×"]
        for name, a, b, base, target in rows
    ]
    print(tabulate(table, headers=["measure", "repro (median)", "baseline (median)", "baseline", "ratio", "target"]))
    shutil.rmtree(work, ignore_errors=True)
    return 0


async def _records(rattler, paths):
    return [await rattler.RepoDataRecord.from_package_archive(p) for p in paths]


if __name__ == "__main__":
    sys.exit(main())
