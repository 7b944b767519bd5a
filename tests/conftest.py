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


@dataclass
class FlowRun:
    code: int
    out: str
    err: str
    run_id: str | None
    env: dict

    @property
    def text(self) -> str:
        return self.out + self.err

    def inspect(self, flow_name: str) -> dict:
        """The run's steps, tasks, artifacts and repro metadata, read with Metaflow's client."""
        import json

        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mf_inspect.py"), f"{flow_name}/{self.run_id}"],
                              capture_output=True, text=True, env=self.env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def run_flow(path: Path, datastore: Path, environment: str = "conda", env: dict | None = None,
             args: tuple = (), timeout: float = 900) -> FlowRun:
    """`python FLOW.py --environment=<environment> run` for real, with a private local datastore."""
    datastore.mkdir(parents=True, exist_ok=True)
    run_id_file = datastore / f"run-id-{Path(path).stem}-{os.getpid()}-{len(list(datastore.iterdir()))}"
    full_env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(datastore),
                "METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DEFAULT_METADATA": "local", **(env or {})}
    cmd = [sys.executable, str(path)]
    if environment:
        cmd.append(f"--environment={environment}")
    cmd += ["run", "--run-id-file", str(run_id_file), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=datastore, timeout=timeout)
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    return FlowRun(proc.returncode, proc.stdout, proc.stderr, run_id, full_env)
