"""`python flow.py --environment=conda run`, for real, with repro's Metaflow extension."""

import json
import re
import sys
from pathlib import Path

import pytest
import tomllib

from metaflow_repro.env.engine import open_flow
from tests.helpers import SCENARIOS, require_locked_pythons, run_flow, same_file, write_flow

EXPECTED = tomllib.loads((SCENARIOS / "expected.toml").read_text())
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def datastore(tmp_path_factory):
    return tmp_path_factory.mktemp("metaflow")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_runs_as_expected(name, datastore, repro_home):
    want, path = EXPECTED[name], SCENARIOS / f"{name}.py"
    require_locked_pythons(SCENARIOS / f"{name}.repro.lock")
    run = run_flow(path, datastore, environment=want["run"]["environment"], env={"REPRO_FROZEN": "1"})
    result = want["run"]
    # what repro did, not Metaflow's "Bootstrapping conda environment...(this could take a few minutes)"
    assert "Bootstrapping" not in run.text and re.search(r"repro: \d+ step\(s\), \d+ environment\(s\)", run.text)
    assert "lock updated" not in run.text  # REPRO_FROZEN: the committed lock is used as is
    info = run.inspect(want["flow"])
    if result["outcome"] == "failure":
        assert run.code != 0
        failed = info["steps"][result["failed_step"]]
        assert not failed[0]["successful"] and result["error"] in run.text
        return
    assert run.code == 0, run.text[-3000:]
    assert info["successful"]
    for line in result.get("stdout", []):
        assert line in run.text
    for step, count in result.get("tasks", {}).items():
        assert len(info["steps"][step]) == count
    for step, artifacts in result.get("artifacts", {}).items():
        for task in info["steps"][step]:
            for key, value in artifacts.items():
                if value == "$USER_PYTHON":  # the same interpreter file, however its path was spelled
                    assert same_file(task["artifacts"][key], sys.executable), (step, key, task["artifacts"][key])
                else:
                    assert task["artifacts"][key] == value, (step, key)
    # every task ran in the env its lock names, recorded its fingerprint and the hash seed
    flow = open_flow(path)
    for step, tasks in info["steps"].items():
        spec = flow.specs[step]
        for task in tasks:
            md = task["metadata"]
            assert md["repro-pythonhashseed"] == "0"
            if spec.disabled:
                assert md["repro-env-id"] == "disabled"
                assert same_file(md["repro-interpreter"], sys.executable), md["repro-interpreter"]
                continue
            env_id = flow.lock.steps[step].platforms["linux-64"].env_id
            assert md["repro-env-id"] == env_id and md["repro-spec-id"] == spec.spec_id
            assert Path(md["repro-interpreter"]).absolute().is_relative_to((repro_home / "envs").absolute())
            fp = json.loads(md["repro-fingerprint"])
            assert fp["distributions"] == {
                p.name: p.version for p in flow.lock.steps[step].platforms["linux-64"].packages
            }


def _flow(decorator: str, name: str = "BadRunFlow") -> str:
    return f"""
        from metaflow import FlowSpec, step, conda, pypi
        class {name}(FlowSpec):
            {decorator}
            @step
            def start(self):
                self.value = hash("reproducible")
                self.next(self.end)
            @step
            def end(self):
                pass
        if __name__ == "__main__":
            {name}()
    """


@pytest.mark.parametrize(
    "decorator,match",
    [
        ('@conda(libraries={"pandas": ">=1.0"})', "'pandas' is not pinned to one exact version"),
        ('@conda(libraries={"surely-not-a-real-package-repro-xyz": "1.0"})', "surely-not-a-real-package-repro-xyz"),
        ('@conda(python="3.14")', "Python 3.14 is not installed here"),
        (
            '@conda(libraries={"six": "1.16.0"})\n            @pypi(packages={"six": "1.16.0"})',
            "@conda and @pypi cannot both be used on the same step",
        ),
    ],
)
def test_bad_declarations_stop_the_run_before_any_task(decorator, match, tmp_path, datastore, local_index):
    path = write_flow(tmp_path / "proj", _flow(decorator))
    # a name nobody has must stay unknown: resolve it from a local folder only, never from PyPI
    run = run_flow(path, datastore, env=local_index if "surely-not" in decorator else None)
    assert run.code != 0
    assert match in run.text and "BadRunFlow" in run.text and "start" in run.text
    assert "Workflow starting" not in run.text and "Task is starting" not in run.text


def test_stale_lock_is_relocked_and_reported_or_refused_when_frozen(tmp_path, datastore):
    path = write_flow(tmp_path / "proj", _flow('@conda(libraries={"six": "1.16.0"})', "StaleFlow"))
    assert run_flow(path, datastore).code == 0
    path.write_text(path.read_text().replace('"1.16.0"', '"1.17.0"'))
    frozen = run_flow(path, datastore, env={"REPRO_FROZEN": "1"})
    assert frozen.code != 0 and "REPRO_FROZEN" in frozen.text and "six 1.16.0 -> 1.17.0" in frozen.text
    assert "Task is starting" not in frozen.text
    relock = run_flow(path, datastore)
    assert relock.code == 0, relock.text
    assert "lock updated for StaleFlow.start" in relock.text and "six 1.16.0 -> 1.17.0" in relock.text
    assert 'version = "1.17.0"' in (tmp_path / "proj" / "flow.repro.lock").read_text()


def test_an_environment_changed_on_disk_is_named_and_rebuilt_before_any_task(tmp_path, datastore, repro_home):
    path = write_flow(tmp_path / "proj", _flow('@conda(libraries={"six": "1.12.0"})', "TamperFlow"))
    first = run_flow(path, datastore)
    assert first.code == 0, first.text
    env_python = first.inspect("TamperFlow")["steps"]["start"][0]["metadata"]["repro-interpreter"]
    six_py = next(Path(env_python).parent.parent.glob("lib/python3*/site-packages/six.py"))
    six_py.write_text(six_py.read_text() + "\n# tampered\n")
    second = run_flow(path, datastore)
    # issue 11: a damaged env is never reused; the run says what changed and rebuilds it from the lock
    assert second.code == 0, second.text
    assert "is damaged" in second.text and "six 1.12.0 changed on disk" in second.text, second.text
    assert "# tampered" not in six_py.read_text()


def test_hash_seed_is_pinned_so_hash_based_results_repeat(tmp_path, datastore):
    path = write_flow(tmp_path / "proj", _flow("", "SeedFlow"))
    runs = [run_flow(path, datastore) for _ in range(2)]
    values = [r.inspect("SeedFlow")["steps"]["start"][0]["artifacts"]["value"] for r in runs]
    assert values[0] == values[1]
    other = run_flow(path, datastore, env={"REPRO_PYTHONHASHSEED": "7"})
    info = other.inspect("SeedFlow")["steps"]["start"][0]
    assert info["metadata"]["repro-pythonhashseed"] == "7" and info["artifacts"]["value"] != values[0]


def test_conda_decorator_without_the_conda_environment_is_refused(tmp_path, datastore):
    path = write_flow(tmp_path / "proj", _flow('@conda(libraries={"six": "1.16.0"})', "NoEnvFlow"))
    run = run_flow(path, datastore, environment="")
    assert run.code != 0 and "--environment=conda" in run.text
