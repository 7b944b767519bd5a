"""Host side of fingerprints: run ``probe.py`` inside an environment and compare with a lock."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from metaflow_extensions.repro.plugins import probe
from metaflow_repro.errors import InfraError
from metaflow_repro.model.lock import PlatformLock

PROBE = Path(probe.__file__)


def take(python: Path | str) -> dict:
    """Fingerprint the environment of interpreter ``python`` (isolated mode: no PYTHONPATH, no user site)."""
    proc = subprocess.run([str(python), "-I", str(PROBE)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise InfraError(f"cannot fingerprint the environment of {python}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def of_env(env: Path, facts: dict, fresh: bool = False, conda: bool = False) -> dict:
    """The same fingerprint as ``take``, computed from outside the environment (no interpreter
    start-up): its site-packages plus the facts its base interpreter reported about itself.
    ``fresh``: the env was just installed, so RECORD's sizes can stand in for stat calls."""
    sites = sorted(str(p) for p in Path(env).glob("lib/python3*/site-packages")) or sorted(
        str(p) for p in Path(env).glob("Lib/site-packages")
    )
    return probe.fingerprint(
        site_dirs=[os.path.normcase(os.path.realpath(s)) for s in sites],
        facts=facts,
        trust_record=fresh,
        conda_prefix=str(env) if conda else None,
    )


def differences(fp: dict, lock: PlatformLock) -> list[str]:
    """What differs between an environment's fingerprint and the lock it was built from."""
    lines = []
    if fp.get("python") != lock.python:
        lines.append(f"interpreter is Python {fp.get('python')}, lock says {lock.python}")
    conda_have = {d["name"]: d for d in fp.get("conda", [])}
    for p in lock.packages:
        if not p.is_conda:
            continue
        got = conda_have.pop(p.name, None)
        if got is None:
            lines.append(f"conda package {p.name} {p.version} is missing")
        elif (got["version"], got["build"]) != (p.version, p.build):
            lines.append(
                f"conda package {p.name} is {got['version']} ({got['build']}), lock says {p.version} ({p.build})"
            )
    lines += [
        f"conda package {n} {d['version']} is installed but not in the lock" for n, d in sorted(conda_have.items())
    ]
    # distributions a conda package installed (INSTALLER "conda") are checked above, as conda packages
    have = {d["name"]: d for d in fp.get("distributions", []) if d.get("installer") != "conda"}
    want = {p.name: p.version for p in lock.packages if not p.is_conda}
    for name in sorted(set(have) | set(want)):
        if name not in have:
            lines.append(f"{name} {want[name]} is missing")
        elif name not in want:
            lines.append(f"{name} {have[name]['version']} is installed but not in the lock")
        elif have[name]["version"] != want[name]:
            lines.append(f"{name} is {have[name]['version']}, lock says {want[name]}")
        elif have[name].get("missing_files"):
            lines.append(f"{name} {want[name]}: {have[name]['missing_files']} file(s) listed in RECORD are gone")
    return lines


def runtime_problems(built, lock: PlatformLock) -> list[str]:
    """Runtime drift of a built environment (a ``BuiltEnv``): what differs now from its lock and
    from what it was built as. One interpreter start-up."""
    now = take(built.python)
    return list(dict.fromkeys(differences(now, lock) + changed_on_disk(built.fingerprint, now)))


def changed_on_disk(built: dict, now: dict) -> list[str]:
    """What changed in an environment since it was built (stdlib logic shared with tasks)."""
    return probe.compare(built, now)
