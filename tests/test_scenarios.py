"""The seed's flows as scenarios: their committed locks are current, and they build and show as
scenarios/expected.toml says; every key of that file is asserted by some test."""

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
import tomllib

from tests.helpers import ROOT, SCENARIOS, cli, env_paths, require_locked_pythons

EXPECTED = tomllib.loads((SCENARIOS / "expected.toml").read_text())


def test_every_scenario_has_expectations_and_a_committed_lock():
    flows = {p.stem for p in SCENARIOS.glob("*.py") if p.name != "conftest.py"}
    assert flows == set(EXPECTED)
    for name in flows:
        assert (SCENARIOS / f"{name}.repro.lock").is_file(), f"commit scenarios/{name}.repro.lock"


def test_committed_locks_match_the_flows():
    r = cli("lock", "--check", SCENARIOS)
    assert r.code == 0, r.text
    assert r.out.count("lock is up to date") == len(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_builds_and_shows_as_expected(name):
    want = EXPECTED[name]
    path = SCENARIOS / f"{name}.py"
    require_locked_pythons(SCENARIOS / f"{name}.repro.lock")
    r = cli("env", "build", path)
    assert r.code == 0, r.text
    assert "lock updated" not in r.err  # the committed lock was used as is
    envs = env_paths(r.out)
    for group in want.get("same_env", []):
        assert len({envs[s] for s in group}) == 1, (group, envs)
    for step, exp in want["steps"].items():
        if exp.get("disabled"):
            assert step not in envs and f"{want['flow']}.{step}: disabled" in r.out
            continue
        py = envs[step] / "bin" / "python"
        for module, version in exp.get("imports", {}).items():
            got = subprocess.run(
                [py, "-c", f"import {module}; print({module}.__version__)"], capture_output=True, text=True
            )
            assert got.stdout.strip() == version, (step, module, got.stderr)
        for module in exp.get("absent", []):
            got = subprocess.run([py, "-c", f"import {module}"], capture_output=True, text=True)
            assert f"No module named '{module}'" in got.stderr, (step, module)
    show = cli("env", "show", path)
    assert show.code == 0, show.text
    for step, exp in want["steps"].items():
        row = next(line for line in show.out.splitlines() if line.split()[:1] == [step])
        if exp.get("disabled"):
            assert "disabled" in row
        else:
            assert "built" in row and "matches lock" in row
            for lib, version in exp.get("libraries", {}).items():
                assert f"{lib}=={version}" in row


# Which test file asserts each key of scenarios/expected.toml (flow level, steps.<step>.*, run.*).
CONSUMERS = {
    "flow": "test_scenarios.py",
    "same_env": "test_scenarios.py",
    "steps": "test_scenarios.py",
    "libraries": "test_scenarios.py",
    "disabled": "test_scenarios.py",
    "imports": "test_scenarios.py",
    "absent": "test_scenarios.py",
    "run": "test_metaflow_runs.py",
    "environment": "test_metaflow_runs.py",
    "outcome": "test_metaflow_runs.py",
    "failed_step": "test_metaflow_runs.py",
    "error": "test_metaflow_runs.py",
    "artifacts": "test_metaflow_runs.py",
    "tasks": "test_metaflow_runs.py",
    "stdout": "test_metaflow_runs.py",
    "pickle": "test_snapshots.py",
    "replay": "test_snapshots.py",
    "replay_detail": "test_snapshots.py",
    "pytest_xfail": "test_scenarios.py",
}


def test_every_key_of_expected_toml_is_read_by_a_test():
    """expected.toml says every line is asserted: each key it uses has a test file that reads it
    (a key nobody reads would be a promise nobody checks)."""
    used = set()
    for want in EXPECTED.values():
        used |= set(want)
        for exp in want.get("steps", {}).values():
            used |= set(exp)
        used |= set(want.get("run", {}))
    assert used <= set(CONSUMERS), f"keys no test reads: {sorted(used - set(CONSUMERS))}"
    for key, consumer in CONSUMERS.items():
        source = (ROOT / "tests" / consumer).read_text()
        assert re.search(rf"""\[["']{key}["']\]|get\(["']{key}["']""", source), (key, consumer)
    header = (SCENARIOS / "expected.toml").read_text().split("\n[", 1)[0]
    for key in used - {"steps", "run"}:
        assert key in header, f"expected.toml's header does not document {key!r}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if "pytest_xfail" in EXPECTED[n]))
def test_pytest_repro_fails_exactly_the_items_expected_toml_names(name, pytester):
    """`pytest_xfail`: without scenarios/conftest.py's strict xfails, `pytest --repro` on the
    scenario fails exactly those items and passes all others."""
    require_locked_pythons(SCENARIOS / f"{name}.repro.lock")
    for suffix in (".py", ".repro.lock"):
        shutil.copy(SCENARIOS / f"{name}{suffix}", pytester.path / f"{name}{suffix}")
    pytester.makefile(".toml", pyproject='[tool.repro]\nconda-source = "pypi"\n')
    pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--repro", f"{name}.py", "--junitxml", "junit.xml", timeout=1800
    )
    failed, passed = set(), set()
    for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase"):
        bad = [c for c in case if c.tag in ("failure", "error", "skipped")]
        (failed if bad else passed).add(case.get("name"))
    assert failed == set(EXPECTED[name]["pytest_xfail"]), (failed, passed)
    assert passed and not passed & failed
