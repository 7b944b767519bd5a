"""Interpreter probes are cached on disk by path + mtime (issue 12, item 11)."""

import os
import subprocess
import sys
import time

import pytest

from metaflow_repro.env import pythons
from metaflow_repro.errors import PythonNotFound

FAKE = '#!/bin/sh\necho \'{"implementation": "cpython", "python": "%s"}\'\n'


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_HOME", str(tmp_path / "home"))
    pythons.probe.cache_clear()
    pythons.installed.cache_clear()
    yield tmp_path
    pythons.probe.cache_clear()
    pythons.installed.cache_clear()


def _find_missing_in_a_new_process(env) -> float:
    code = (
        "import time; from metaflow_repro.env import pythons\nt = time.perf_counter()\ntry:\n pythons.find('3.14')\n"
        "except Exception as e:\n assert 'is not installed' in str(e), e\nprint(time.perf_counter() - t)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout)


def test_a_missing_python_is_refused_fast_once_interpreters_were_probed(fresh):
    env = {**os.environ, "REPRO_HOME": str(fresh / "home")}
    cold = _find_missing_in_a_new_process(env)
    assert (fresh / "home" / "interpreters.json").is_file()
    warm = _find_missing_in_a_new_process(env)
    assert warm < 1.0 and warm < cold / 3, (cold, warm)


def test_an_interpreter_changed_on_disk_is_probed_again(fresh, monkeypatch):
    folder = fresh / "bin"
    folder.mkdir()
    fake = folder / "python3"
    fake.write_text(FAKE % "3.99.1")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert pythons.find("3.99").version == "3.99.1"
    pythons.probe.cache_clear()
    pythons.installed.cache_clear()
    assert pythons.find("3.99").version == "3.99.1"  # from the disk cache
    time.sleep(0.01)
    fake.write_text(FAKE % "3.99.2" + "# reinstalled\n")  # new mtime and size
    pythons.probe.cache_clear()
    pythons.installed.cache_clear()
    assert pythons.find("3.99").version == "3.99.2"
    with pytest.raises(PythonNotFound):
        pythons.find("3.98")


def test_facts_cached_by_another_probe_version_are_probed_again(fresh):
    """interpreters.json outlives repro upgrades (REPRO_HOME persists): facts written by a probe of
    another fingerprint version would make every env built from them look built by another repro."""
    import json

    pythons.probe(sys.executable)
    cache = fresh / "home" / "interpreters.json"
    data = json.loads(cache.read_text())
    entry = data[sys.executable]
    assert entry["probe"] == pythons.FINGERPRINT_VERSION
    entry["probe"] = pythons.FINGERPRINT_VERSION - 1  # as an older repro wrote it
    entry["info"]["fingerprint_version"] = pythons.FINGERPRINT_VERSION - 1
    cache.write_text(json.dumps(data))
    pythons.probe.cache_clear()
    again = pythons.probe(sys.executable)
    assert again is not None and again.facts["fingerprint_version"] == pythons.FINGERPRINT_VERSION
