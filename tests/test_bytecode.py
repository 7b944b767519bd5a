"""Tasks write no bytecode (PYTHONDONTWRITEBYTECODE=1) and read what repro compiled ahead, beside the sources,
each .pyc written whole (issue 22 item 5): an env's site-packages at its build, listed in its manifest so a
damaged .pyc gets the env rebuilt, and the code package's modules at its extraction, by the step's interpreter."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from metaflow_repro.env import manifest
from tests.helpers import cli, write_flow

FLOW = """
    from metaflow import FlowSpec, pypi, step

    class BytecodeFlow(FlowSpec):
        @pypi(packages={"six": "1.16.0"})
        @step
        def start(self):
            import six
            self.version = six.__version__
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        BytecodeFlow()
"""


def _tag(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True, text=True
    ).stdout.strip()


def _reads_its_pyc(folder: Path, site: Path) -> bool:
    """The env's python, as a task runs it, imports six from its .pyc (not compiled in memory)."""
    proc = subprocess.run(
        [str(folder / "bin" / "python"), "-v", "-c", "import six"],
        capture_output=True,
        text=True,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    return proc.returncode == 0 and f"matches {site / 'six.py'}" in proc.stderr


def test_envs_and_code_packages_hold_whole_bytecode_and_a_damaged_pyc_rebuilds_the_env(tmp_path):
    flow = write_flow(tmp_path / "proj", FLOW)
    home = tmp_path / "home"
    env = {"REPRO_HOME": str(home), "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf")}
    r = cli("run", flow, env=env, cwd=tmp_path)
    assert r.code == 0, r.text[-3000:]
    [folder] = [p for p in (home / "envs").iterdir() if p.is_dir() and any(p.glob("lib/python3*/site-packages/six.py"))]
    tag = _tag(folder / "bin" / "python")
    [site] = folder.glob("lib/python3*/site-packages")
    pyc = site / "__pycache__" / f"six.{tag}.pyc"
    assert pyc.is_file()
    with open(home / "envs" / f"{folder.name}.files.json") as fh:
        env_id = json.loads(fh.readline())["env_id"]
    listed = manifest.read(home / "envs" / f"{folder.name}.files.json", env_id)
    assert listed is not None and listed["files"][str(pyc.relative_to(folder))][0] == manifest.FILE  # hashed
    # the code package: Metaflow's modules compiled by the step's interpreter before the folder was renamed
    [code] = home.glob("code/*/.mf_code/metaflow")
    assert (code / "__pycache__" / f"__init__.{tag}.pyc").is_file()
    assert _reads_its_pyc(folder, site)

    whole = pyc.read_bytes()
    pyc.write_bytes(whole[:24])  # what a short write leaves: a header and the first bytes of the code
    r = cli("env", "build", flow, env=env, cwd=tmp_path)
    assert r.code == 0, r.text[-3000:]
    assert re.search(rf"is damaged \(.*__pycache__/six\.{tag}\.pyc changed", r.text), r.text[-3000:]
    assert len(pyc.read_bytes()) == len(whole) and _reads_its_pyc(folder, site)  # compiled anew (new mtime)
