"""Materialise one environment per env id under ``REPRO_HOME/envs``.

* shared: steps and flows with the same env id use the same folder;
* concurrent: a file lock per env id, so several processes building it give one build;
* crash-safe: a marker written last says the build completed; a folder without it is a
  leftover of a killed build and is removed and rebuilt;
* checked before reuse: a manifest of every file written at the build (``metaflow_repro.env.manifest``)
  is checked against the folder (stamps first, content where a stamp changed); a damaged env is rebuilt;
* offline: ``uv pip install --offline --no-index --require-hashes`` from the package cache only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from metaflow_extensions.repro.plugins import bytecode, probe, protocol
from metaflow_repro.env import fingerprint, manifest, pycache, sdist
from metaflow_repro.env.cache import PackageCache
from metaflow_repro.env.pythons import Interpreter
from metaflow_repro.env.uvtool import run_uv
from metaflow_repro.errors import InfraError, IntegrityError
from metaflow_repro.model.lock import Package, PlatformLock
from metaflow_repro.model.validate import cap
from metaflow_repro.settings import Home

MARKER = protocol.ENV_MARKER  # tasks read it too (task_check.py)
#: what an env's folder holds that its manifest does not list: the marker (and its name while written)
NOT_LISTED = (MARKER, MARKER + ".tmp")
#: What ``probe.interpreter_facts()`` reports (the rest of a fingerprint is computed from the files).
_FACT_KEYS = ("fingerprint_version", "python", "implementation", "build", "compiler", "system", "machine", "libc")
#: folders of an env whose modules are not compiled at its build: packages' own test suites (numpy's and
#: matplotlib's are 40% of that env's compile time), which steps do not import; one that is imported is compiled
#: in memory, as any source without bytecode is
NOT_COMPILED = ("tests",)


#: a second source of package files for an offline build (a replay's store): puts ``pkg`` into the package
#: cache, verified, when the cache lost it (``refetch(pkg, where)``)
Refetch = Callable[[Package, str], object]


class EvictedFiles(IntegrityError):
    """An install failed because cached files no longer matched their sha256; they were removed."""


@dataclass(frozen=True)
class BuiltEnv:
    env_id: str
    platform: str
    path: Path
    python: Path
    interpreter: str  # the base interpreter the venv was made from
    fingerprint: dict
    reused: bool = False


def env_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


class Environments:
    def __init__(self, root: Path, cache: PackageCache, uv_cache: Path, conda_pkgs: Path | None = None):
        self.root = Path(root)
        self.cache = cache
        self.fetcher = sdist.fetcher(cache, uv_cache)  # what the lock names, fetched into ``cache``
        self.uv_cache = uv_cache
        self.conda_pkgs = Path(conda_pkgs) if conda_pkgs else Home(self.root.parent).conda_pkgs

    def path(self, env_id: str) -> Path:
        return self.root / env_id[:16]

    def manifest_path(self, env_id: str) -> Path:
        """The env's file manifest, beside its folder (the folder holds what the installer made, and the marker)."""
        return self.root / f"{env_id[:16]}.files.json"

    def _lock_path(self, env_id: str) -> str:
        return str(self.path(env_id)) + ".lock"

    def marker(self, env_id: str) -> dict | None:
        try:
            data = json.loads((self.path(env_id) / MARKER).read_text())
        except (OSError, ValueError):
            return None
        if data.get(protocol.MARKER_ENV_ID) != env_id:
            return None
        if data.get(protocol.MARKER_FINGERPRINT, {}).get("fingerprint_version") != probe.FINGERPRINT_VERSION:
            return None  # built by a repro whose fingerprints mean something else: rebuild
        return data

    def get(self, env_id: str) -> BuiltEnv | None:
        """The built environment, or None. Cheap: one small file read, no subprocess."""
        m = self.marker(env_id)
        if m is None:
            return None
        path = self.path(env_id)
        return BuiltEnv(
            env_id=env_id,
            platform=m["platform"],
            path=path,
            python=env_python(path),
            interpreter=m["interpreter"],
            fingerprint=m[protocol.MARKER_FINGERPRINT],
            reused=True,
        )

    def damage(self, built: BuiltEnv, lock: PlatformLock, full: bool = False) -> list[str]:
        """What is wrong with a built environment (empty: intact), each problem naming its file. Cheap
        (no interpreter start-up): every entry of the folder is stat-ed against the manifest written at
        the build, and only a file whose size, modification time or inode changed is re-hashed, so a
        file added, deleted or edited (even to the same size) is seen. ``full`` re-hashes every file,
        whatever its stamp (``repro env build --repair``: bit rot under a kept stamp)."""
        problems = self._content_problems(built, full)
        if problems:  # what changed, by distribution too (a version, a file gone), before the files named
            problems = list(dict.fromkeys(self._fingerprint_problems(built, lock) + problems))
        return problems

    @staticmethod
    def _fingerprint_problems(built: BuiltEnv, lock: PlatformLock) -> list[str]:
        facts = {
            k: v
            for k, v in built.fingerprint.items()
            if k not in ("distributions", "digest", "locations", "executable", "prefix", "platform", "conda")
        }
        now = fingerprint.of_env(built.path, facts, conda=lock.is_conda)
        if now.get("digest") == built.fingerprint.get("digest"):
            return []
        return fingerprint.differences(now, lock) + fingerprint.changed_on_disk(built.fingerprint, now)

    def _content_problems(self, built: BuiltEnv, full: bool = False) -> list[str]:
        found = manifest.check(built.path, self.manifest_path(built.env_id), built.env_id, NOT_LISTED, full)
        if found.refreshed is not None:
            self._refresh(built.env_id, found.refreshed)
        return found.problems

    def _refresh(self, env_id: str, refreshed: dict) -> None:
        """Keep the new stamps of files that were re-hashed and matched (touched, or the env copied), so the
        next check takes the fast path again: only when no build holds the env's lock, and only over the
        manifest that was checked (a build since then wrote its own)."""
        path = self.manifest_path(env_id)
        try:
            with FileLock(self._lock_path(env_id), timeout=0):
                now = manifest.read(path, env_id, files=False)
                if now is not None and now.get("nonce") == refreshed.get("nonce"):
                    manifest.write(path, refreshed)
        except (Timeout, OSError):
            pass  # refreshed next time

    def build(
        self,
        lock: PlatformLock,
        interpreter: Interpreter | None,
        offline: bool = False,
        where: str = "",
        repair: bool = False,
        log=lambda msg: None,
        refetch: Refetch | None = None,
    ) -> BuiltEnv:
        """Build the env, or reuse it if it is intact (checked cheaply; fully with ``repair``): a
        damaged env is rebuilt. An install that fails on damaged cached files retries once, with those
        files fetched anew: from ``refetch`` when offline (a replay's store), else from where the lock says."""
        env_id = lock.env_id
        found = self.get(env_id)
        if found and not self.damage(found, lock, full=repair):
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self._lock_path(env_id)):
            found = self.get(env_id)  # another process may have built (or repaired) it while we waited
            if found:
                problems = self.damage(found, lock, full=repair)
                if not problems:
                    return found
                log(f"env {env_id[:12]} at {found.path} is damaged ({cap(problems)}): rebuilding it")
                (found.path / MARKER).unlink(missing_ok=True)
            fresh = found is not None  # uv may have hard-linked the damaged files from its cache: bypass it
            files = self._files(lock, offline, where, refetch)
            try:
                return self._build_locked(lock, interpreter, files, where, fresh=fresh)
            except EvictedFiles as exc:  # bit rot the stamps could not see: fetched anew, once
                log(f"{exc}\nretrying once with the files fetched anew")
                files = self._files(lock, offline, where, refetch)
                return self._build_locked(lock, interpreter, files, where, fresh=True)

    def _files(self, lock: PlatformLock, offline: bool, where: str, refetch: Refetch | None) -> dict:
        """Every package file of ``lock`` in the cache, verified: {sha256: path}. Offline with ``refetch``,
        a file the cache lost or holds damaged is fetched again from there instead of being an error."""
        if offline and refetch is not None:
            for p in {p.sha256: p for p in lock.packages}.values():
                if self.cache.has(p):
                    try:
                        self.cache.check(p, where)
                        continue
                    except IntegrityError:
                        pass  # removed from the cache: fetched again below
                refetch(p, where)
        return self.fetcher.ensure(lock.packages, offline=offline, where=where)

    def _build_locked(
        self, lock: PlatformLock, interpreter: Interpreter | None, files: dict, where: str, fresh: bool = False
    ) -> BuiltEnv:
        path = self.path(lock.env_id)
        if path.exists():  # no marker: a build that died half-way
            shutil.rmtree(path)
        if lock.is_conda:
            return self._build_conda(lock, files, where, fresh)
        assert interpreter is not None, "a PyPI env is made from an installed interpreter"
        proc = run_uv(
            ["venv", "--quiet", "--no-project", "--python", interpreter.path, str(path)], self.uv_cache, offline=True
        )
        if proc.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            raise InfraError(
                f"{where}: uv venv failed for Python {interpreter.version} ({interpreter.path}):\n{proc.stderr.strip()}"
            )
        self._pip_install(lock, list(lock.packages), path, files, where, fresh)
        self._bytecode(lock, path, where)
        fp = fingerprint.of_env(path, interpreter.facts, fresh=True)
        return self._finish(lock, path, interpreter.path, fp, where)

    def _bytecode(self, lock: PlatformLock, path: Path, where: str) -> None:
        """The env's ``.pyc`` files: restored from its bytecode object when a replay in a container fetched
        one for it (from the store, verified: ``operations/replay.fetch_bytecode``), else compiled. Removes
        ``path`` if either fails."""
        home = Home(self.root.parent)
        sha = pycache.known(home, lock.env_id)
        if not sha:
            compile_site_packages(path)
            return
        try:
            pycache.restore(path, pycache.object_path(home, sha), sha, lock.python, f"{where}: env {lock.env_id[:12]}")
        except pycache.CorruptBytecode:  # the copy kept here rotted: forgotten, and compiled as without one
            pycache.forget(home, lock.env_id, sha)
            compile_site_packages(path)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def _pip_install(
        self, lock: PlatformLock, packages: list, path: Path, files: dict, where: str, fresh: bool
    ) -> None:
        """uv: offline, no index, no dependencies, every file hash-checked (removes ``path`` on failure)."""
        with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="repro-req-", delete=False) as req:
            for p in packages:
                req.write(f"{p.name} @ {files[p.sha256].as_uri()} --hash=sha256:{p.sha256}\n")
        try:
            args = install_args(env_python(path), Path(req.name))
            if fresh:  # unpack from our verified wheels, not from uv's cache (its files may be the damaged ones)
                args += ["--no-cache", "--link-mode", "copy"]
            proc = run_uv(args, self.uv_cache, offline=True)
        finally:
            os.unlink(req.name)
        if proc.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            self._raise_install_error(proc.stderr, lock, where)

    def _build_conda(self, lock: PlatformLock, files: dict, where: str, fresh: bool = False) -> BuiltEnv:
        """Link the conda packages with rattler; the env's interpreter is its own ``python`` package."""
        from metaflow_repro.env import conda

        path = self.path(lock.env_id)
        try:
            conda.install(lock, path, files, self.conda_pkgs, where)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        python = env_python(path)
        if not python.exists():
            shutil.rmtree(path, ignore_errors=True)
            raise InfraError(f"{where}: the conda env {lock.env_id[:12]} has no bin/python (its python package)")
        pip = [p for p in lock.packages if not p.is_conda]
        if pip:  # the pixi model: PyPI packages on top of the conda env, after it, with no dependencies
            self._pip_install(lock, pip, path, files, where, fresh)
        compile_site_packages(path)
        facts = self._conda_python_facts(lock, python)
        fp = fingerprint.of_env(path, facts, fresh=True, conda=True)
        return self._finish(lock, path, str(python), fp, where)

    def _conda_python_facts(self, lock: PlatformLock, python: Path) -> dict:
        """What the env's interpreter says about itself, asked once per conda python package (by its
        sha256: the same package file is the same interpreter) and kept under ``envs/.conda-pythons``."""
        pkg = next((p for p in lock.packages if p.is_conda and p.name == "python"), None)
        cache = self.root / ".conda-pythons" / f"{pkg.sha256}.json" if pkg else None
        if cache is not None:
            try:
                facts = json.loads(cache.read_text())
                if facts.get("fingerprint_version") == probe.FINGERPRINT_VERSION:
                    return facts
            except (OSError, ValueError):
                pass
        facts = {k: v for k, v in fingerprint.take(python).items() if k in _FACT_KEYS}
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}")
            tmp.write_text(json.dumps(facts, sort_keys=True))
            os.replace(tmp, cache)
        return facts

    def _finish(self, lock: PlatformLock, path: Path, interpreter: str, fp: dict, where: str) -> BuiltEnv:
        """Check the built env against its lock, then write the marker (last: the env exists from here on)."""
        env_id = lock.env_id
        problems = fingerprint.differences(fp, lock)
        if problems:
            shutil.rmtree(path, ignore_errors=True)
            raise InfraError(
                f"{where}: the environment built for env {env_id[:12]} does not match its lock: "
                + cap(problems, sep="; ")
            )
        marker = {
            protocol.MARKER_ENV_ID: env_id,
            "platform": lock.platform,
            "python": lock.python,
            "interpreter": interpreter,
            protocol.MARKER_FINGERPRINT: fp,
            "built_at": time.time(),
        }
        manifest.write(self.manifest_path(env_id), manifest.take(path, env_id, NOT_LISTED))  # before the marker
        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker, sort_keys=True))
        os.replace(tmp, path / MARKER)  # written last: the env exists only from here on
        return BuiltEnv(
            env_id=env_id,
            platform=lock.platform,
            path=path,
            python=env_python(path),
            interpreter=interpreter,
            fingerprint=fp,
        )

    def _raise_install_error(self, stderr: str, lock: PlatformLock, where: str):
        """An install failed: re-hash every file it used (a stamp can hide bit rot), evict the ones
        that no longer match, and name them; otherwise it is uv's failure, shown as uv said it."""
        bad = [p for p in lock.packages if not self.cache.verify(p)]
        for p in bad:
            self.cache.path(p).unlink(missing_ok=True)  # never used again; the next build fetches it anew
        if bad:
            names = cap(f"{self.cache.path(p)} ({p.name} {p.version}, sha256 {p.sha256})" for p in bad)
            raise EvictedFiles(
                f"{where}: cached package file(s) {names} do not match their sha256; they "
                f"were removed from the cache and not used. Run the build again to fetch them "
                f"anew.\n{stderr.strip()}",
                library=bad[0].name,
                path=str(self.cache.path(bad[0])),
            )
        raise InfraError(f"{where}: installing env {lock.env_id[:12]} failed:\n{stderr.strip()}")

    def remove(self, env_id: str) -> None:
        shutil.rmtree(self.path(env_id), ignore_errors=True)
        self.manifest_path(env_id).unlink(missing_ok=True)


def compile_site_packages(path: Path) -> None:
    """Compile the env's site-packages with its own interpreter (``plugins/bytecode.py``: each .pyc written
    whole, or the build fails), before its manifest lists them: tasks never write bytecode
    (PYTHONDONTWRITEBYTECODE=1) and read these (those of ``NOT_COMPILED`` folders aside). Removes ``path`` and
    raises OSError (ENOSPC...) on failure."""
    sites = [str(p) for p in sorted(path.glob("lib/python3*/site-packages"))]
    try:
        bytecode.compile_with(str(env_python(path)), sites, skip=NOT_COMPILED)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        raise


def install_args(python: Path, requirements: Path) -> list[str]:
    """The one uv call that installs an environment: offline, no index, every file hash-checked."""
    return [
        "pip",
        "install",
        "--quiet",
        "--offline",
        "--no-index",
        "--require-hashes",
        "--no-deps",
        "--python",
        str(python),
        "-r",
        str(requirements),
    ]
