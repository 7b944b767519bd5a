"""Find installed CPython interpreters: PATH, pyenv's versions folder, and uv's own list.

uv does not see pyenv's Pythons through its shims, so we look ourselves and always hand uv an
explicit interpreter path. Each candidate is asked for its exact version once per process.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from repro.errors import PythonNotFound

from metaflow_extensions.repro.plugins import probe as _probe_module

_PROBE = Path(_probe_module.__file__)


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # "3.11.7"
    implementation: str = "cpython"
    facts_json: str = "{}"  # probe.interpreter_facts() as printed by this interpreter

    @property
    def facts(self) -> dict:
        return json.loads(self.facts_json)

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def _candidates() -> list[str]:
    seen: dict[str, None] = {}
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for p in sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3"))):
        seen[p] = None
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or "shims" in Path(folder).parts:
            continue  # pyenv shims are scripts that pick a version by context: never trust them
        for name in ("python3",) + tuple(f"python3.{m}" for m in range(7, 20)):
            exe = os.path.join(folder, name)
            if os.path.isfile(exe) and os.access(exe, os.X_OK):
                seen[exe] = None
    seen[sys.executable] = None
    return list(seen)


@functools.lru_cache(maxsize=None)
def probe(path: str) -> Interpreter | None:
    try:
        out = subprocess.run([path, "-I", str(_PROBE), "--interpreter"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None  # e.g. Python 2, where the probe does not even parse
    info = json.loads(out.stdout)
    if info["implementation"] != "cpython":
        return None
    return Interpreter(path=path, version=info["python"], facts_json=json.dumps(info, sort_keys=True))


def _guess(path: str) -> str | None:
    """A version hint from the path (pyenv's folder name, python3.X) to avoid probing everything."""
    m = re.search(r"/versions/(3\.\d+\.\d+)/", path)
    if m:
        return m.group(1)
    m = re.search(r"python(3\.\d+)$", path)
    return m.group(1) if m else None


@functools.lru_cache(maxsize=None)
def installed() -> tuple[Interpreter, ...]:
    found: dict[str, Interpreter] = {}
    for path in _candidates():
        interp = probe(path)
        if interp is not None:
            found.setdefault(interp.version, interp)
    uv_found = _uv_pythons()
    for interp in uv_found:
        found.setdefault(interp.version, interp)
    usable = [i for i in found.values() if _version_key(i.version)[:2] >= (3, 7)]  # Metaflow's floor
    return tuple(sorted(usable, key=lambda i: _version_key(i.version)))


def _uv_pythons() -> list[Interpreter]:
    from repro.env.uvtool import uv_bin

    try:
        out = subprocess.run(
            [uv_bin(), "python", "list", "--only-installed", "--output-format", "json"],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        )
        entries = json.loads(out.stdout) if out.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    result = []
    for e in entries:
        if e.get("implementation") == "cpython" and e.get("path") and "shims" not in e["path"]:
            interp = probe(e["path"])
            if interp:
                result.append(interp)
    return result


def find(request: str, where: str = "") -> Interpreter:
    """The interpreter for ``request``: '3.11.7' exactly, or the newest installed '3.11.x'."""
    exact = request.count(".") == 2
    # Fast path: probe only the candidates whose path hints at the right version.
    hinted = [p for p in _candidates() if (_guess(p) or "").startswith(request if exact else request + ".")
              or _guess(p) == request]
    matches = [i for i in map(probe, hinted) if i and _match(i.version, request, exact)]
    if not matches:
        matches = [i for i in installed() if _match(i.version, request, exact)]
    if not matches:
        have = ", ".join(i.version for i in installed()) or "none"
        prefix = f"{where}: " if where else ""
        raise PythonNotFound(
            f"{prefix}Python {request} is not installed here (installed: {have}). "
            f"Install it (e.g. `pyenv install {request}`) or declare one of the installed versions."
        )
    return max(matches, key=lambda i: _version_key(i.version))


def _match(version: str, request: str, exact: bool) -> bool:
    return version == request if exact else version.startswith(request + ".")


def current() -> Interpreter:
    """The interpreter running repro (no subprocess: only its version is needed)."""
    v = "%d.%d.%d" % sys.version_info[:3]
    return Interpreter(path=sys.executable, version=v)

