"""scenarios/catch_switch.py for tests/test_catch.py and tests/test_switch.py: run by `pytest --repro` and
pushed to a folder store, then replayed from that store alone: an empty REPRO_HOME, no network
(`unshare -n`), no package index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

from metaflow_repro.model.record import RunRecord, from_json
from tests.helpers import SCENARIOS, cli
from tests.netns import can_unshare, offline

NAME = "catch_switch"
EXPECTED = tomllib.loads((SCENARIOS / "expected.toml").read_text())[NAME]
NO_INDEX = {"REPRO_INDEX_URL": "http://127.0.0.1:9/simple", "UV_OFFLINE": "1"}


@dataclass
class Recorded:
    proc: subprocess.CompletedProcess
    proj: Path
    store: str
    env: dict
    junit: dict[str, tuple[str, str]]  # test case name -> (passed | failure | error | skipped, message)
    report: dict  # the flow's part of reports/repro-report.json
    record: RunRecord  # as pushed to the store

    @property
    def steps(self) -> dict[str, dict]:
        return {s["step"]: s for s in self.report["steps"]}


def _junit(path: Path) -> dict[str, tuple[str, str]]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        marks = [c for c in case if c.tag in ("failure", "error", "skipped")]
        out[case.get("name")] = (marks[0].tag, marks[0].get("message") or "") if marks else ("passed", "")
    return out


def record_with_pytest(root: Path) -> Recorded:
    """`pytest --repro catch_switch.py --repro-store file://... --repro-update`, frozen as in CI."""
    proj = root / "proj"
    proj.mkdir(parents=True)
    for suffix in (".py", ".repro.lock"):
        shutil.copy(SCENARIOS / f"{NAME}{suffix}", proj / f"{NAME}{suffix}")
    (proj / "pyproject.toml").write_text('[tool.repro]\nconda-source = "pypi"\n')
    store = f"file://{root / 'store'}"
    env = {
        **os.environ,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_FROZEN": "1",
    }
    env.pop("COMPUTE_RAISES", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--repro", f"{NAME}.py", "-v", "-rA"]
        + ["--repro-store", store, "--repro-update", "--junitxml", "junit.xml"],
        capture_output=True,
        text=True,
        cwd=proj,
        env=env,
        timeout=900,
    )
    report = json.loads((proj / "reports" / "repro-report.json").read_text())["flows"][0]
    folder = next((root / "store" / "runs").glob(f"{EXPECTED['flow']}@*"))
    run_id = (folder / "latest").read_text().strip()
    record = from_json((folder / run_id / "record.json").read_text(), "record.json")
    return Recorded(proc, proj, store, env, _junit(proj / "junit.xml"), report, record)


def replay_cold_offline(rec: Recorded, root: Path, **variables: str) -> subprocess.CompletedProcess:
    """`repro replay` of the recorded run from an empty REPRO_HOME with no network; ``variables`` reach
    the replay's tasks (COMPUTE_RAISES makes the scenario's variants)."""
    if not can_unshare():
        pytest.skip("cannot create a network namespace here (unshare -n)")
    home = root / f"empty-home-{len(list(root.glob('empty-home-*')))}"
    env = {**rec.env, **NO_INDEX, **variables, "REPRO_HOME": str(home)}
    env.pop("REPRO_FROZEN", None)
    return offline(
        [sys.executable, "-m", "metaflow_repro", "replay", rec.record.ref, "--store", rec.store], env, rec.proj
    )


def repro_report(rec: Recorded) -> dict:
    """`repro report REF --format json`: the record alone, read back from the store."""
    r = cli("report", rec.record.ref, "--store", rec.store, "--format", "json", env=rec.env, cwd=rec.proj)
    assert r.code == 0, r.text
    return json.loads(r.out)["flows"][0]
