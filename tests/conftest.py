"""Shared fixtures. Everything runs for real: uv against the package index, real interpreters,
real subprocesses. One REPRO_HOME per test session keeps downloads and builds shared."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


@pytest.fixture(scope="session", autouse=True)
def repro_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("repro-home")
    saved = {k: os.environ.get(k) for k in ("REPRO_HOME", "METAFLOW_USER", "REPRO_CONDA_SOURCE",
                                            "REPRO_STORE", "REPRO_PLATFORMS", "REPRO_INDEX_URL",
                                            "REPRO_FIND_LINKS")}
    for k in saved:
        os.environ.pop(k, None)
    os.environ["REPRO_HOME"] = str(home)
    os.environ["METAFLOW_USER"] = "repro-tests"
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def cli(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = 900) -> Result:
    """Run the real `repro` command line in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "repro", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def write_flow(folder: Path, body: str, name: str = "flow.py", conda_source: str | None = "pypi") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if conda_source:
        (folder / "pyproject.toml").write_text(f'[tool.repro]\nconda-source = "{conda_source}"\n')
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def installed_python(minor: str) -> Path | None:
    found = sorted(PYENV.glob(f"{minor}.*/bin/python3"))
    return found[-1] if found else None


@pytest.fixture
def flow_dir(tmp_path) -> Path:
    return tmp_path / "proj"
