"""The pytest plugin stays light: installing repro loads it into every pytest run of every project in
the environment, so loading it (and a run without ``--repro``) must not import Metaflow, the cloud
and container clients, the package solver or repro's own session. benchmarks/bench_plugin_import.py
measures what it costs; these tests say what it must not import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from metaflow_repro.pytest import plugin
from metaflow_repro.settings import REPLAY_PLACES

#: what a run without --repro must never import: top-level packages, and repro's session module
#: (which brings them all)
HEAVY = ("metaflow", "boto3", "botocore", "rattler", "docker", "jinja2", "rich", "tabulate")
SESSION_MODULE = "metaflow_repro.pytest.session"

REPORT_MODULES = """
import json, os, sys


def pytest_sessionfinish(session):
    with open(os.environ["MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)
"""


def heavy_in(modules) -> list[str]:
    """The heavy top-level packages among ``modules``, and the session module if it is there."""
    found = {m.split(".")[0] for m in modules} & set(HEAVY)
    return sorted(found | ({SESSION_MODULE} & set(modules)))


def clean_env() -> dict[str, str]:
    """This run's environment without what pytest tells its own children (PYTEST_ADDOPTS, the current
    test, xdist's worker id, a disabled autoload): the child is a user's ordinary pytest run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def test_importing_the_plugin_imports_nothing_heavy():
    code = "import json, sys; import metaflow_repro.pytest.plugin; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), check=True, timeout=120
    )
    modules = json.loads(done.stdout)
    assert "metaflow_repro.pytest.plugin" in modules
    assert heavy_in(modules) == []


def test_a_run_without_repro_imports_nothing_heavy(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(REPORT_MODULES)
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_one.py"],
        cwd=tmp_path,
        env={**clean_env(), "MODULES_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    modules = json.loads(out.read_text())
    assert "metaflow_repro.pytest.plugin" in modules  # the entry point did load the plugin
    assert heavy_in(modules) == []


def test_the_places_of_repro_on_are_the_settings_places():
    """The plugin spells the places itself (importing settings at load costs every run); they must
    stay the ones the settings and the CLI accept."""
    assert plugin.REPLAY_PLACES == REPLAY_PLACES
