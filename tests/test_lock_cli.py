"""`repro lock` against the real package index through uv."""

import sys

import pytest
import tomllib

from tests.helpers import cli, write_flow

SIX_FLOW = """
    from metaflow import FlowSpec, step, conda, conda_base

    @conda_base(libraries={"six": "1.16.0"})
    class SixFlow(FlowSpec):
        @step
        def start(self):
            self.next(self.b)

        @conda(libraries={"six": "%s", "idna": "3.10"})
        @step
        def b(self):
            self.next(self.end)

        @conda(disabled=True)
        @step
        def end(self):
            pass
"""


def test_lock_writes_a_deterministic_lock_and_check_passes(flow_dir):
    path = write_flow(flow_dir, SIX_FLOW % "1.17.0")
    first = cli("lock", path)
    assert first.code == 0, first.text
    lock_file = flow_dir / "flow.repro.lock"
    text = lock_file.read_text()
    doc = tomllib.loads(text)
    b = doc["steps"]["b"]
    assert b["libraries"] == {"idna": "3.10", "six": "1.17.0"} and b["implicit"] == {"requests": "2.32.3"}
    pkgs = {p["name"]: p for p in b["platforms"]["linux-64"]["packages"]}
    assert pkgs["six"]["version"] == "1.17.0" and pkgs["idna"]["version"] == "3.10"
    assert {"requests", "urllib3", "certifi", "charset-normalizer"} <= set(pkgs)  # transitive, locked too
    for p in pkgs.values():
        assert len(p["sha256"]) == 64 and p["size"] > 0 and p["url"].endswith(p["file"])
    assert doc["steps"]["end"]["disabled"] is True and "platforms" not in doc["steps"]["end"]
    # unchanged flow: nothing re-resolved, nothing rewritten
    again = cli("lock", path)
    assert again.code == 0 and "up to date" in again.out and "resolving" not in again.err
    assert lock_file.read_text() == text
    assert cli("lock", path, "--check").code == 0


def test_check_exits_1_with_a_readable_diff_and_leaves_the_lock_alone(flow_dir):
    path = write_flow(flow_dir, SIX_FLOW % "1.17.0")
    assert cli("lock", path).code == 0
    before = (flow_dir / "flow.repro.lock").read_text()
    write_flow(flow_dir, SIX_FLOW % "1.16.0")
    check = cli("lock", path, "--check")
    assert check.code == 1, check.text
    assert "b: ~ six 1.17.0 -> 1.16.0" in check.out and "start" not in check.out
    assert (flow_dir / "flow.repro.lock").read_text() == before
    # re-locking only re-resolves the step that changed
    update = cli("lock", path)
    assert update.code == 0 and "resolving SixFlow.b" in update.err and "SixFlow.start" not in update.err
    assert "b: linux-64: ~ six 1.17.0 -> 1.16.0 (stated)" in update.out


def test_locking_for_other_platforms_from_this_box(flow_dir):
    path = write_flow(
        flow_dir,
        """
        from metaflow import FlowSpec, step, pypi
        class NumpyFlow(FlowSpec):
            @pypi(packages={"numpy": "2.1.3"}, python="3.11.7")
            @step
            def start(self):
                self.next(self.end)
            @step
            def end(self):
                pass
    """,
    )
    r = cli("lock", path, "--platform", "linux-64", "--platform", "osx-arm64", "--export-pylock", flow_dir / "out")
    assert r.code == 0, r.text
    doc = tomllib.loads((flow_dir / "flow.repro.lock").read_text())
    plats = doc["steps"]["start"]["platforms"]
    files = {name: {p["name"]: p["file"] for p in pl["packages"]} for name, pl in plats.items()}
    assert "manylinux" in files["linux-64"]["numpy"] and "macosx" in files["osx-arm64"]["numpy"]
    assert "arm64" in files["osx-arm64"]["numpy"]
    assert plats["linux-64"]["env_id"] != plats["osx-arm64"]["env_id"]
    pylock = tomllib.loads((flow_dir / "out" / "pylock.flow-start-osx-arm64.toml").read_text())
    assert pylock["lock-version"] == "1.0" and pylock["requires-python"] == "==3.11.7"
    numpy = next(p for p in pylock["packages"] if p["name"] == "numpy")
    assert numpy["wheels"][0]["hashes"]["sha256"] and numpy["wheels"][0]["name"] == files["osx-arm64"]["numpy"]
    # the export is a real PEP 751 lock: uv installs from it (dry run, for this platform)
    import subprocess

    from metaflow_repro.env.uvtool import uv_bin

    linux = flow_dir / "out" / "pylock.flow-start-linux-64.toml"
    proc = subprocess.run(
        [uv_bin(), "pip", "install", "--dry-run", "--python", sys.executable, "-r", str(linux)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "numpy==2.1.3" in proc.stderr


@pytest.mark.parametrize(
    "libs,match",
    [
        ('{"surely-not-a-real-package-repro-xyz": "1.0.0"}', "surely-not-a-real-package-repro-xyz"),
        ('{"six": "99.99.99"}', "six"),
        ('{"urllib3": "1.20"}', "urllib3"),  # requests (implicit) needs urllib3>=1.21.1: conflicting pins
    ],
)
def test_unresolvable_declarations_exit_2_naming_flow_step_and_library(flow_dir, libs, match, local_index):
    path = write_flow(
        flow_dir,
        f"""
        from metaflow import FlowSpec, step, pypi
        class BadFlow(FlowSpec):
            @pypi(packages={libs})
            @step
            def start(self):
                self.next(self.end)
            @step
            def end(self):
                pass
    """,
    )
    # a name nobody has must stay unknown: resolve it from a local folder only, never from PyPI
    r = cli("lock", path, env=local_index if "surely-not" in libs else None)
    assert r.code == 2, r.text
    assert "BadFlow" in r.err and "step 'start'" in r.err and match in r.err
    assert not (flow_dir / "flow.repro.lock").exists()
    assert "Traceback" not in r.err


@pytest.mark.parametrize(
    "decl,match",
    [
        ('libraries={"pandas": ">=1.0"}', "'pandas' is not pinned to one exact version"),
        ('libraries={"pandas": ""}', "'pandas' is not pinned (empty version)"),
        ('libraries={"pandas": "1.*"}', "'pandas' is not pinned to one exact version"),
        ('python="3.6"', "Metaflow 2.19 needs Python 3.7 or newer"),
        ('python="3.14"', "Python 3.14 is not installed here (installed: 3.7"),
        ('libraries="pandas==2.2.3"', "must be a dict"),
    ],
)
def test_bad_declarations_exit_2_and_write_nothing(flow_dir, decl, match):
    path = write_flow(
        flow_dir,
        f"""
        from metaflow import FlowSpec, step, conda
        class BadFlow(FlowSpec):
            @conda({decl})
            @step
            def start(self):
                self.next(self.end)
            @step
            def end(self):
                pass
    """,
    )
    r = cli("lock", path)
    assert r.code == 2, r.text
    assert match in r.err and "BadFlow" in r.err and "'start'" in r.err
    assert not (flow_dir / "flow.repro.lock").exists()


def test_conda_flow_without_a_reachable_channel_gets_told_how_to_serve_it_from_pypi(flow_dir):
    path = write_flow(flow_dir, SIX_FLOW % "1.17.0", conda_source=None)  # the default: conda
    r = cli("lock", path, env={"REPRO_CONDA_CHANNELS": "http://127.0.0.1:9/conda-forge"})  # nothing listens
    assert r.code == 3 and "127.0.0.1:9/conda-forge" in r.err and 'conda-source = "pypi"' in r.err, r.text
    r = cli("lock", path, env={"REPRO_CONDA_SOURCE": "pypi"})
    assert r.code == 0, r.text


def test_flow_file_that_does_not_import_exits_2(flow_dir):
    path = write_flow(flow_dir, "from metaflow import FlowSpec\nraise RuntimeError('boom at import')\n")
    r = cli("lock", path)
    assert r.code == 2 and "does not import" in r.err and "boom at import" in r.err
    assert cli("lock", flow_dir / "missing.py").code == 2


def test_hand_edited_lock_is_refused_by_every_command(flow_dir):
    path = write_flow(flow_dir, SIX_FLOW % "1.17.0")
    assert cli("lock", path).code == 0
    lock_file = flow_dir / "flow.repro.lock"
    lock_file.write_text(lock_file.read_text().replace('version = "1.17.0"', 'version = "1.16.0"', 1))
    for args in (("lock", path, "--check"), ("env", "show", path), ("env", "build", path)):
        r = cli(*args)
        assert r.code == 2, (args, r.text)
        assert str(lock_file) in r.err and "edited by hand" in r.err


def test_usage_errors_exit_2():
    assert cli("lock").code == 2
    assert cli("frobnicate").code == 2
    assert cli("lock", "x.py", "--platform", "linux-32").code == 2


def test_an_unreachable_index_is_exit_3_not_a_resolution_error(flow_dir):
    """Pins: uv's exit code (2 = error), not the wording of its message, tells an index that cannot be
    reached (infrastructure, exit 3) from declarations that cannot be resolved (exit 2)."""
    path = write_flow(flow_dir, SIX_FLOW % "1.17.0")
    r = cli("lock", path, env={"REPRO_INDEX_URL": "http://127.0.0.1:9/simple", "UV_NO_CACHE": "1"})
    assert r.code == 3, r.text
    assert "cannot reach the package index" in r.err and not (flow_dir / "flow.repro.lock").exists()


def test_platform_adds_to_the_lock_and_only_remove_platform_drops_one(flow_dir):
    path = write_flow(flow_dir, SIX_FLOW % "1.17.0")
    lock_file = flow_dir / "flow.repro.lock"

    def platforms():
        doc = tomllib.loads(lock_file.read_text())
        return {step: sorted(s.get("platforms", {})) for step, s in doc["steps"].items()}

    assert cli("lock", path).code == 0
    assert platforms()["b"] == ["linux-64"]
    added = cli("lock", path, "--platform", "win-64")
    assert added.code == 0, added.text
    assert platforms()["b"] == ["linux-64", "win-64"] and platforms()["start"] == ["linux-64", "win-64"]
    assert "b: win-64: + platform added" in added.out
    assert cli("lock", path, "--check").code == 0
    # a platform that is not locked yet: the advice is a command that adds it
    check = cli("lock", path, "--check", "--platform", "osx-arm64")
    assert check.code == 1 and "+ platform osx-arm64 is not locked" in check.out
    assert f"repro lock {path} --platform osx-arm64" in check.out
    removed = cli("lock", path, "--remove-platform", "win-64")
    assert removed.code == 0, removed.text
    assert platforms()["b"] == ["linux-64"] and "b: win-64: - platform removed from the lock" in removed.out
    nothing_left = cli("lock", path, "--remove-platform", "linux-64")
    assert nothing_left.code == 2 and "no platform" in nothing_left.err
    assert platforms()["b"] == ["linux-64"]
