"""The seed's flows as scenarios: their committed locks are current, and they build and show as
scenarios/expected.toml says."""

import subprocess
import tomllib

import pytest

from tests.helpers import SCENARIOS, require_locked_pythons, cli, env_paths

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
            got = subprocess.run([py, "-c", f"import {module}; print({module}.__version__)"],
                                 capture_output=True, text=True)
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
