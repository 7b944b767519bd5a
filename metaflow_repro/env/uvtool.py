"""Running uv: where its binary is and the environment every call gets."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from metaflow_repro.env import tls
from metaflow_repro.errors import InfraError


@functools.cache
def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise InfraError("uv is not installed: `pip install uv` (repro depends on it)") from None
        return found


def uv_env(cache_dir: Path | None, offline: bool = False) -> dict[str, str]:
    # The user's UV_* settings (private index) are honoured; pip's are not uv's (but its cert is: tls).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_NO_PROGRESS"] = "1"
    env["NO_COLOR"] = "1"
    if cache_dir is not None:
        env["UV_CACHE_DIR"] = str(cache_dir)
    if offline:
        env["UV_OFFLINE"] = "1"
    else:  # the index's certificates: SSL_CERT_FILE, REQUESTS_CA_BUNDLE, pip's cert, the system's store
        env.pop("SSL_CERT_FILE", None)
        env.update(tls.trust().uv_env())
    return env


def run_uv(
    args: list[str],
    cache_dir: Path | None,
    offline: bool = False,
    cwd: Path | None = None,
    timeout: float = 1800,
    extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    env = {**uv_env(cache_dir, offline), **(extra or {})}
    try:
        return subprocess.run([uv_bin(), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"uv {' '.join(args[:2])} timed out after {timeout:.0f}s") from exc
