"""Find installed CPython interpreters: PATH, pyenv's versions folder, and uv's own list.

uv does not see pyenv's Pythons through its shims, so we look ourselves and always hand uv an
explicit interpreter path. Each candidate is asked for its exact version once: the answer is kept in
``$REPRO_HOME/interpreters.json`` under its path and the file's mtime, size and inode (a reinstall
asks again), and so is ``uv python list``'s answer, under PATH and the mtimes of the folders where
interpreters appear.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from metaflow_extensions.repro.plugins import probe as _probe_module
from metaflow_repro.errors import PythonNotFound

_PROBE = Path(_probe_module.__file__)
FINGERPRINT_VERSION = _probe_module.FINGERPRINT_VERSION  # cache entries from another probe are stale


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


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)  # the interpreter the path leads to: a reinstall changes these
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def _cache_file() -> Path | None:
    from metaflow_repro.errors import BadInput
    from metaflow_repro.settings import Home, env_setting

    try:
        return Home(env_setting("home")).interpreters
    except BadInput:
        return None


def _read_cache(file: Path | None) -> dict:
    try:
        data = json.loads(file.read_text()) if file else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@functools.cache
def probe(path: str) -> Interpreter | None:
    """What the interpreter at ``path`` is (None: not a usable CPython). Remembered on disk under
    REPRO_HOME by path + the file's mtime, size and inode, so each interpreter is run once, not
    once per process."""
    key = _stat_key(path)
    if key is None:
        return None
    file = _cache_file()
    entry = _read_cache(file).get(path)
    # an entry is as good as the probe that wrote it: facts carry its fingerprint version, and envs built
    # from stale facts would be refused as built by another repro (Environments.marker)
    if isinstance(entry, dict) and entry.get("stat") == key and entry.get("probe") == FINGERPRINT_VERSION:
        info = entry.get("info")
        if info is None:
            return None
        if isinstance(info, dict) and isinstance(info.get("python"), str):
            return Interpreter(path=path, version=info["python"], facts_json=json.dumps(info, sort_keys=True))
    found = _run_probe(path)
    if file is not None:
        from metaflow_repro.fsutil import atomic_write

        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            data = _read_cache(file)  # read again: another process may have added entries
            data[path] = {
                "stat": key,
                "probe": FINGERPRINT_VERSION,
                "info": json.loads(found.facts_json) if found else None,
            }
            atomic_write(file, json.dumps(data, sort_keys=True, indent=0))
        except OSError:
            pass  # a read-only REPRO_HOME only costs time
    return found


def _run_probe(path: str) -> Interpreter | None:
    try:
        out = subprocess.run([path, "-I", str(_PROBE), "--interpreter"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None  # e.g. Python 2, where the probe does not even parse
    info = json.loads(out.stdout)
    if info["implementation"] != "cpython":
        return None
    return Interpreter(path=path, version=info["python"], facts_json=json.dumps(info, sort_keys=True))


#: how long an interpreter restored into a staging folder may take to print its facts
STAGED_TIMEOUT = 60.0
#: the most a staged interpreter's answer may be (its facts are a few hundred bytes)
_STAGED_MAX_OUTPUT = 1 << 16


def _run_alone(cmd: list[str], cwd: str, env: dict, out, timeout: float) -> int:
    """Run ``cmd`` in a process group of its own; whatever of the group is left when it exits or times
    out is killed (an untrusted program leaves nothing running behind it)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        return proc.wait(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass  # the group is gone already
        proc.wait()


def staged_facts(root: str, executable: str, timeout: float | None = None) -> tuple[dict | None, str]:
    """(facts, "") of the interpreter ``root/executable`` that was just extracted into the staging folder
    ``root`` and is not trusted yet, or (None, why not). It runs there only: isolated (``-I``), from
    ``root``, with an environment of nothing but a plain PATH and ``root/lib`` for its shared library
    (pyenv links ``libpython`` by the final prefix, which does not exist yet), killed after ``timeout``
    seconds (``STAGED_TIMEOUT``). Nothing is cached: the answer is only as good as the check that reads it."""
    timeout = STAGED_TIMEOUT if timeout is None else timeout
    env = {"PATH": os.defpath, "LD_LIBRARY_PATH": os.path.join(root, "lib"), "LC_ALL": "C"}
    cmd = [os.path.join(root, executable), "-I", "-S", str(_PROBE), "--interpreter"]
    with tempfile.TemporaryFile() as answer:  # a file, not a pipe: what it prints is read up to a bound
        try:
            code = _run_alone(cmd, root, env, answer, timeout)
        except subprocess.TimeoutExpired:
            return None, f"it did not answer within {timeout:g} s"
        except OSError as exc:
            return None, f"it cannot be run ({exc.strerror or exc})"
        answer.seek(0)
        text = answer.read(_STAGED_MAX_OUTPUT)
    if code != 0:
        return None, f"it exited with code {code}"
    try:
        info = json.loads(text.decode("utf-8"))
    except ValueError:
        return None, "its answer is not the probe's"
    if not isinstance(info, dict) or not isinstance(info.get("python"), str):
        return None, "its answer is not the probe's"
    return info, ""


def _guess(path: str) -> str | None:
    """A version hint from the path (pyenv's folder name, python3.X) to avoid probing everything."""
    m = re.search(r"/versions/(3\.\d+\.\d+)/", path)
    if m:
        return m.group(1)
    m = re.search(r"python(3\.\d+)$", path)
    return m.group(1) if m else None


@functools.cache
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


def _uv_list_key() -> list:
    """What `uv python list` depends on: PATH and the folders where interpreters appear (their mtimes
    change when one is installed or removed)."""
    folders = [f for f in os.environ.get("PATH", "").split(os.pathsep) if f]
    folders.append(os.path.join(os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv"), "versions"))
    folders.append(
        os.environ.get("UV_PYTHON_INSTALL_DIR")
        or os.path.join(os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "uv", "python")
    )
    key: list = [os.environ.get("UV_PYTHON_PREFERENCE", "")]
    for f in folders:
        try:
            key.append([f, os.stat(f).st_mtime_ns])
        except OSError:
            key.append([f, None])
    return key


def _uv_pythons() -> list[Interpreter]:
    file = _cache_file()
    key = _uv_list_key()
    cached = _read_cache(file).get(UV_LIST)
    if isinstance(cached, dict) and cached.get("key") == key and isinstance(cached.get("paths"), list):
        paths = [p for p in cached["paths"] if isinstance(p, str)]
    else:
        paths = _uv_list_paths()
        if file is not None:
            from metaflow_repro.fsutil import atomic_write

            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                data = _read_cache(file)
                data[UV_LIST] = {"key": key, "paths": paths}
                atomic_write(file, json.dumps(data, sort_keys=True, indent=0))
            except OSError:
                pass
    return [i for i in map(probe, paths) if i]


#: the cache entry for `uv python list` (interpreter entries are keyed by absolute paths)
UV_LIST = "uv python list"


def _uv_list_paths() -> list[str]:
    from metaflow_repro.env.uvtool import uv_bin

    try:
        out = subprocess.run(
            [uv_bin(), "python", "list", "--only-installed", "--output-format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        )
        entries = json.loads(out.stdout) if out.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    return [
        e["path"]
        for e in entries
        if e.get("implementation") == "cpython" and e.get("path") and "shims" not in e["path"]
    ]


def find(request: str, where: str = "") -> Interpreter:
    """The interpreter for ``request``: '3.11.7' exactly, the newest installed '3.11.x', or the newest
    installed one a PEP 440 specifier admits ('==3.11.*', '>=3.10,<3.12')."""
    from metaflow_repro.model.spec import python_matches, python_specifier

    matches: list[Interpreter] = []
    if python_specifier(request) is None:
        exact = request.count(".") == 2
        # Fast path: probe only the candidates whose path hints at the right version.
        hinted = [
            p
            for p in _candidates()
            if (_guess(p) or "").startswith(request if exact else request + ".") or _guess(p) == request
        ]
        matches = [i for i in map(probe, hinted) if i and python_matches(i.version, request)]
    if not matches:
        matches = [i for i in installed() if python_matches(i.version, request)]
    if not matches:
        have = ", ".join(i.version for i in installed()) or "none"
        prefix = f"{where}: " if where else ""
        example = request if request[:1].isdigit() and "*" not in request else "3.X.Y"
        raise PythonNotFound(
            f"{prefix}Python {request} is not installed here (installed: {have}). "
            f"Install it (e.g. `pyenv install {example}`) or declare one of the installed versions."
        )
    return max(matches, key=lambda i: _version_key(i.version))


def current() -> Interpreter:
    """The interpreter running repro (no subprocess: only its version is needed)."""
    v = ".".join(str(x) for x in sys.version_info[:3])
    return Interpreter(path=sys.executable, version=v)
