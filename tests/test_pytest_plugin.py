"""`pytest --repro`, driven through pytest's own pytester (each run a real pytest subprocess)."""

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from metaflow_repro.report.render import SCHEMA_FILE
from tests.helpers import cli, make_wheel, require_chromium, screenshot

pytestmark = pytest.mark.slow

FLOW = """
from metaflow import FlowSpec, step, pypi

class {name}(FlowSpec):
    @pypi(packages={{"six": "{six}"}})
    @step
    def start(self):
        import six
        self.six_version = six.__version__
        self.next(self.b)

    @step
    def b(self):
        {b_body}
        self.next(self.end)

    @step
    def end(self):
        pass

if __name__ == "__main__":
    {name}()
"""


@pytest.fixture
def project(pytester, tmp_path):
    """A user's project: a pyproject, a private Metaflow datastore, a store folder."""
    pytester.makefile(".toml", pyproject='[tool.repro]\nconda-source = "pypi"\n')
    os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(pytester.path / "mf")
    yield pytester
    os.environ.pop("METAFLOW_DATASTORE_SYSROOT_LOCAL", None)


def flow(pytester, name="DemoFlow", six="1.16.0", b_body="self.value = 42", file="demo_flow.py"):
    path = pytester.path / file
    path.write_text(FLOW.format(name=name, six=six, b_body=b_body))
    return path


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=900)


def test_collection_names_and_nothing_without_repro(project):
    flow(project)
    r = run(project, "--repro", "demo_flow.py", "--collect-only", "-q")
    lines = [line for line in r.outlines if "::" in line]
    assert lines == [
        "demo_flow.py::DemoFlow::start",
        "demo_flow.py::DemoFlow::b",
        "demo_flow.py::DemoFlow::end",
        "demo_flow.py::DemoFlow::[lock]",
        "demo_flow.py::DemoFlow::[pickle]",
    ]
    r = run(project, "--repro", "demo_flow.py", "--collect-only", "-q", "--repro-baseline", "latest")
    assert "demo_flow.py::DemoFlow::[baseline]" in r.outlines
    r = run(project, "demo_flow.py", "--collect-only", "-q")
    assert not [line for line in r.outlines if "DemoFlow" in line]
    r = run(project, "-p", "no:repro", "demo_flow.py", "--collect-only", "-q")
    assert not [line for line in r.outlines if "DemoFlow" in line]


def test_passing_run_runs_the_flow_once_and_writes_reports(project):
    flow(project)
    assert cli("lock", project.path / "demo_flow.py").code == 0
    r = run(project, "--repro", "demo_flow.py", "--junitxml", "junit.xml")
    r.assert_outcomes(passed=5)
    runs = list((project.path / "mf" / ".metaflow" / "DemoFlow").glob("[0-9]*"))
    assert len(runs) == 1  # one run for five items
    text = r.stdout.str()
    assert "DemoFlow (demo_flow.py)" in text and "pickle ok/warn/fail" in text
    # the three report files, well-formed
    import jsonschema

    doc = json.loads((project.path / "reports" / "repro-report.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))
    assert doc["flows"][0]["status"] == "passed" and [s["step"] for s in doc["flows"][0]["steps"]] == [
        "start",
        "b",
        "end",
    ]
    md = (project.path / "reports" / "repro-report.md").read_text()
    assert "## DemoFlow — passed" in md and "| start " in md
    html = (project.path / "reports" / "repro-report.html").read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html
    assert "<link" not in html and "<script" not in html and "src=" not in html  # self-contained
    # JUnit carries env id and fingerprint as properties
    cases = {c.get("name"): c for c in ET.parse(project.path / "junit.xml").getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["start"].iter("property")}
    assert re.fullmatch(r"[0-9a-f]{64}", props["repro_env_id"]) and re.fullmatch(
        r"[0-9a-f]{64}", props["repro_fingerprint"]
    )


def test_without_a_lock_one_is_written_and_the_lock_item_says_commit_it(project):
    flow(project)
    r = run(project, "--repro", "demo_flow.py")
    r.assert_outcomes(passed=4, failed=1)
    assert "no lock file demo_flow.repro.lock" in r.stdout.str()
    assert (project.path / "demo_flow.repro.lock").exists()
    run(project, "--repro", "demo_flow.py").assert_outcomes(passed=5)


def test_a_failing_step_fails_its_item_with_the_error(project):
    path = flow(project, b_body='raise ValueError("boom in b")')
    assert cli("lock", path).code == 0
    r = run(project, "--repro", "demo_flow.py")
    r.assert_outcomes(passed=3, failed=2)  # start, [lock], [pickle] pass; b and end fail
    text = r.stdout.str()
    assert "DemoFlow.b failed" in text and "boom in b" in text
    assert "DemoFlow.end failed" in text and "not run: an earlier step failed" in text
    r = run(project, "--repro", "demo_flow.py", "-x")
    r.assert_outcomes(passed=1, failed=1)
    r = run(project, "--repro", "demo_flow.py", "-k", "start")
    r.assert_outcomes(passed=1)


def test_stale_lock_locally_is_relocked_and_only_the_lock_item_fails(project):
    path = flow(project)
    assert cli("lock", path).code == 0
    path.write_text(path.read_text().replace('"1.16.0"', '"1.17.0"'))
    r = run(project, "--repro", "demo_flow.py")
    text = r.stdout.str()
    r.assert_outcomes(passed=4, failed=1)  # the steps ran on the re-locked environments
    assert "spec drift: start: ~ six 1.16.0 -> 1.17.0" in text
    assert "commit the updated lock demo_flow.repro.lock" in text and "REPRO_FROZEN" not in text
    assert 'six = "1.17.0"' in (project.path / "demo_flow.repro.lock").read_text()
    run(project, "--repro", "demo_flow.py").assert_outcomes(passed=5)


@pytest.mark.parametrize("how", ["option", "variable"])
def test_stale_lock_when_frozen_fails_the_lock_item_and_skips_the_steps(project, how):
    path = flow(project)
    assert cli("lock", path).code == 0
    before = (project.path / "demo_flow.repro.lock").read_text()
    path.write_text(path.read_text().replace('"1.16.0"', '"1.17.0"'))
    if how == "option":
        r = run(project, "--repro", "demo_flow.py", "--repro-frozen", "-rs")
    else:
        os.environ["REPRO_FROZEN"] = "1"
        try:
            r = run(project, "--repro", "demo_flow.py", "-rs")
        finally:
            del os.environ["REPRO_FROZEN"]
    text = r.stdout.str()
    r.assert_outcomes(failed=1, skipped=4)
    assert "spec drift: start: ~ six 1.16.0 -> 1.17.0" in text and "run `repro lock demo_flow.py`" in text
    assert text.count("the lock is stale and frozen") == 1  # one line for the skipped items, no error repeated
    assert "SKIPPED [4]" in text
    assert not list((project.path / "mf" / ".metaflow").glob("DemoFlow/[0-9]*"))  # nothing ran
    assert (project.path / "demo_flow.repro.lock").read_text() == before


def test_a_declaration_that_cannot_be_locked_fails_the_lock_item(project):
    # the default conda-source (conda), with a channel nobody serves: the lock cannot be made
    (project.path / "pyproject.toml").write_text('[tool.repro]\nchannels = ["http://127.0.0.1:9/none"]\n')
    path = project.path / "conda_flow.py"
    path.write_text(
        FLOW.format(name="CondaFlow", six="1.16.0", b_body="pass")
        .replace("pypi", "conda")
        .replace("packages=", "libraries=")
    )
    r = run(project, "--repro", "conda_flow.py", "-rs")
    text = r.stdout.str()
    r.assert_outcomes(failed=1, skipped=4)
    assert "CondaFlow::[lock] FAILED" in text or "[lock]" in text
    assert 'conda-source = "pypi"' in text and "the flow's declarations cannot be locked" in text


def test_resolution_drift_only_with_repro_drift(project, local_index, monkeypatch):
    links = Path(local_index["REPRO_FIND_LINKS"])  # local folder only: the names never reach PyPI
    make_wheel(links, "repro-drift-top", "1.0", requires=("repro-drift-dep>=1.0",))
    make_wheel(links, "repro-drift-dep", "1.0")
    path = project.path / "drift_flow.py"
    path.write_text(
        FLOW.format(name="DriftFlow", six="1.16.0", b_body="pass").replace(
            '{"six": "1.16.0"}', '{"six": "1.16.0", "repro-drift-top": "1.0"}'
        )
    )
    for key, value in local_index.items():
        monkeypatch.setenv(key, value)
    assert cli("lock", path).code == 0
    make_wheel(links, "repro-drift-dep", "1.1")  # a new release of a transitive dependency appears
    r = run(project, "--repro", "drift_flow.py")
    r.assert_outcomes(passed=5)
    r = run(project, "--repro", "drift_flow.py", "--repro-drift")
    r.assert_outcomes(passed=4, failed=1)
    assert "resolution drift: start (linux-64): ~ repro-drift-dep 1.0 -> 1.1 (transitive)" in r.stdout.str()
    d = cli("drift", path)
    assert d.code == 1 and "resolution drift: start (linux-64): ~ repro-drift-dep 1.0 -> 1.1 (transitive)" in d.out


def test_baseline_passes_when_identical_and_fails_with_a_readable_diff(project):
    store = (project.path / "store").as_uri()
    assert cli("lock", flow(project)).code == 0
    run(project, "--repro", "demo_flow.py", "--repro-store", store, "--repro-update").assert_outcomes(passed=5)
    r = run(project, "--repro", "demo_flow.py", "--repro-store", store, "--repro-baseline", "latest")
    r.assert_outcomes(passed=6)
    # now a flow whose result changes from run to run
    flow(project, b_body="import random; self.value = random.random()")
    run(project, "--repro", "demo_flow.py", "--repro-store", store, "--repro-update")
    r = run(project, "--repro", "demo_flow.py", "--repro-store", store, "--repro-baseline", "latest")
    r.assert_outcomes(passed=3, failed=3)  # [baseline], b, and end (which carries b's artifact on)
    text = r.stdout.str()
    assert re.search(r"b/-\.value: value: 0\.\d+ != 0\.\d+ \(difference", text), text[-3000:]
    doc = json.loads((project.path / "reports" / "repro-report.json").read_text())
    assert doc["flows"][0]["baseline"]["same"] is False
    assert doc["flows"][0]["steps"][1]["artifacts"]["different"] == 1


def test_drift_against_a_recorded_run_names_what_changed(project):
    store = (project.path / "store").as_uri()
    path = flow(project)
    assert cli("lock", path).code == 0
    run(project, "--repro", "demo_flow.py", "--repro-store", store, "--repro-update").assert_outcomes(passed=5)
    assert cli("drift", path, "--against", "DemoFlow/latest", "--store", store).code == 0
    path.write_text(path.read_text().replace('"1.16.0"', '"1.17.0"'))
    assert cli("lock", path).code == 0
    d = cli("drift", path, "--against", "DemoFlow/latest", "--store", store)
    assert d.code == 1 and "against drift: start: ~ six 1.16.0 -> 1.17.0 (stated)" in d.out


def test_xdist_runs_each_flow_once(project):
    for path in (flow(project), flow(project, name="OtherFlow", file="other_flow.py")):
        assert cli("lock", path).code == 0
    r = run(project, "--repro", "demo_flow.py", "other_flow.py", "-n", "2")
    r.assert_outcomes(passed=10)
    for name in ("DemoFlow", "OtherFlow"):
        assert len(list((project.path / "mf" / ".metaflow" / name).glob("[0-9]*"))) == 1
    doc = json.loads((project.path / "reports" / "repro-report.json").read_text())
    assert sorted(f["flow"] for f in doc["flows"]) == ["DemoFlow", "OtherFlow"]


def test_last_failed_reruns_only_failures(project):
    assert cli("lock", flow(project, b_body='raise ValueError("boom")')).code == 0
    run_lf = lambda *a: project.runpytest_subprocess(*a, timeout=900)  # noqa: E731 - needs the cache plugin
    run_lf("--repro", "demo_flow.py").assert_outcomes(passed=3, failed=2)
    r = run_lf("--repro", "demo_flow.py", "--lf")
    r.assert_outcomes(failed=2)


def test_repro_run_fixture_gives_record_and_artifacts(project):
    assert cli("lock", flow(project)).code == 0
    project.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.repro("demo_flow.py")
        def test_six_version(repro_run):
            assert repro_run.ok
            assert repro_run.artifact("start", "six_version") == "1.16.0"
            assert repro_run.artifact("b", "value") == 42
            assert set(repro_run.record.steps) == {"start", "b", "end"}

        def test_needs_a_marker(repro_run):
            pass
    """
    )
    r = run(project, "test_user.py")
    r.assert_outcomes(passed=1, errors=1)  # a fixture that cannot be set up is an error, as pytest does it
    assert "mark the test with @pytest.mark.repro" in r.stdout.str()


def test_an_artifact_the_test_interpreter_cannot_load_names_its_env_and_loads_there(project):
    """Issue 12, item 9: munch is in the step's environment, not in the test's interpreter."""
    path = project.path / "munch_flow.py"
    path.write_text(
        FLOW.format(name="MunchFlow", six="1.16.0", b_body="pass")
        .replace('packages={"six": "1.16.0"}', 'packages={"munch": "4.0.0"}')
        .replace(
            "import six\n        self.six_version = six.__version__",
            "import munch\n        self.box = munch.Munch(a=1, b=[2, 3])",
        )
    )
    assert cli("lock", path).code == 0
    project.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.repro("munch_flow.py")
        def test_box(repro_run):
            assert repro_run.ok
            with pytest.raises(ImportError) as info:
                repro_run.artifact("start", "box")
            message = str(info.value)
            assert "munch" in message and "env " in message and "artifact_in_env('start', 'box')" in message
            assert repro_run.artifact_in_env("start", "box") == {"a": 1, "b": [2, 3]}
    """
    )
    r = run(project, "test_user.py")
    r.assert_outcomes(passed=1)


def test_html_report_renders_in_a_browser_with_the_summary_in_view(project, tmp_path):
    """Issue 12, item 8: at 1400 px wide the summary (verdict, counts, one row per flow) shows without scrolling."""
    require_chromium()  # before the runs: skipped (failed under CI) without it
    assert cli("lock", flow(project)).code == 0
    assert cli("lock", flow(project, name="OtherFlow", file="other_flow.py")).code == 0
    run(project, "--repro", "demo_flow.py", "other_flow.py").assert_outcomes(passed=10)
    image = screenshot(project.path / "reports" / "repro-report.html", tmp_path / "report.png", tmp_path / "profile")
    assert image.size == (1400, 900)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 20  # text, table borders, green outcome cells
    greens = sum(n for n, (r, g, b) in colors if g > 230 and r < 230 and b < 235)
    assert greens > 500  # the "passed" cells are drawn
    # the verdict's dark green box, drawn near the top of the first screen
    verdict = [(x, y) for y in range(0, 900, 2) for x in range(0, 1400, 4) if image.getpixel((x, y)) == (26, 127, 55)]
    assert len(verdict) > 100, "no verdict box in the first screen"
    assert max(y for _, y in verdict) < 250
    html = (project.path / "reports" / "repro-report.html").read_text()
    summary = html[html.index('id="summary"') : html.index("</section>")]
    assert "all 2 flow(s) ended as expected" in summary and "DemoFlow" in summary and "OtherFlow" in summary


def test_repro_report_renders_a_stored_run(project):
    store = (project.path / "store").as_uri()
    assert cli("lock", flow(project)).code == 0
    run(project, "--repro", "demo_flow.py", "--repro-store", store, "--repro-update").assert_outcomes(passed=5)
    for fmt in ("md", "json", "html"):
        r = cli("report", "DemoFlow/latest", "--store", store, "--format", fmt)
        assert r.code == 0, r.text
        if fmt == "json":
            import jsonschema

            doc = json.loads(r.out)
            jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))
            steps = {s["step"]: s for s in doc["flows"][0]["steps"]}
            # python and package counts come from the record's environments (issue 12, item 2)
            assert steps["start"]["python"].startswith("3.") and steps["start"]["packages"] >= 6
            assert steps["end"]["python"].startswith("3.") and steps["end"]["packages"] >= 5
        else:
            assert "DemoFlow" in r.out
            python = re.search(r"3\.\d+\.\d+", r.out)
            assert python, f"no python version in the {fmt} report"
            row = next(line for line in r.out.splitlines() if re.search(r"\bstart\b", line) and python.group() in line)
            assert not re.search(r"\|\s*0\s*\|", row) and not re.search(r">0<", row)  # packages are counted


def test_expected_failures_are_not_red_and_steps_that_never_ran_say_not_run(project):
    """Issue 12, item 5: a strict xfail shows as "expected failure"; a step after a failed one as "not run";
    no _yaml DeprecationWarning reaches the user."""
    path = flow(project, b_body='raise ValueError("boom in b")')
    assert cli("lock", path).code == 0
    project.makeconftest("""
        import pytest

        def pytest_collection_modifyitems(config, items):
            for item in items:
                if item.name == "b":
                    item.add_marker(pytest.mark.xfail(strict=True, reason="b fails on purpose"))
    """)
    r = run(project, "--repro", "demo_flow.py")
    r.assert_outcomes(passed=3, xfailed=1, failed=1)  # end never ran: it fails, as "not run"
    text = r.stdout.str()
    assert "DeprecationWarning" not in text and "_yaml" not in text
    doc = json.loads((project.path / "reports" / "repro-report.json").read_text())
    steps = {s["step"]: s["outcome"] for s in doc["flows"][0]["steps"]}
    assert steps == {"start": "passed", "b": "expected failure", "end": "not run"}
    assert doc["flows"][0]["status"] == "failed"  # "end" is not expected to fail
    md = (project.path / "reports" / "repro-report.md").read_text()
    assert "expected failure" in md and "not run" in md

    project.makeconftest("""
        import pytest

        def pytest_collection_modifyitems(config, items):
            for item in items:
                if item.name in ("b", "end"):
                    item.add_marker(pytest.mark.xfail(strict=True, reason="fails on purpose"))
    """)
    r = run(project, "--repro", "demo_flow.py")
    r.assert_outcomes(passed=3, xfailed=2)
    doc = json.loads((project.path / "reports" / "repro-report.json").read_text())
    assert doc["flows"][0]["status"] == "expected failure"
    assert "DemoFlow (demo_flow.py) run" in r.stdout.str() and ": expected failure" in r.stdout.str()


def test_the_main_job_has_no_unknown_ini_option_without_the_test_extra():
    """`pytest --repro scenarios/` is run without pytest-timeout (README command 1)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [
            os.sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:timeout",
            "-p",
            "no:cacheprovider",
            "--repro",
            "scenarios/linear.py",
            "--collect-only",
            "-q",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Unknown config option" not in proc.stdout + proc.stderr


def test_progress_of_each_flow_shows_on_the_terminal_but_not_under_q(project):
    """Issue 12, item 10."""
    assert cli("lock", flow(project)).code == 0
    text = run(project, "--repro", "demo_flow.py").stdout.str()
    assert "repro: DemoFlow: building environments and running the flow with Metaflow" in text
    assert re.search(r"repro: DemoFlow: run \S+ ended in [0-9.]+ s \(exit code 0\)", text)
    assert "repro: DemoFlow: checking that every artifact unpickles" in text
    quiet = run(project, "--repro", "demo_flow.py", "-q").stdout.str()
    assert "repro: DemoFlow" not in quiet


def test_lock_advice_for_a_missing_platform_is_a_command_that_fixes_it(project):
    """Issue 12, item 1: after --repro-platform X, `repro lock flow.py` alone would answer "up to date"."""
    path = flow(project)
    assert cli("lock", path).code == 0
    r = run(project, "--repro", "demo_flow.py", "--repro-platform", "osx-arm64")
    r.assert_outcomes(passed=4, failed=1)
    assert "Update it with `repro lock demo_flow.py --platform osx-arm64` and commit it." in r.stdout.str()
    fixed = cli("lock", "demo_flow.py", "--platform", "osx-arm64", cwd=project.path)
    assert fixed.code == 0, fixed.text
    run(project, "--repro", "demo_flow.py", "--repro-platform", "osx-arm64").assert_outcomes(passed=5)


def test_a_session_reads_each_flow_and_the_settings_once(project, monkeypatch, tmp_path):
    """One pass per flow: collecting a flow imports it, its run reuses what collection read, the report
    reuses the lock the run left; the settings are read once for the session (every flow shares the
    rootdir's pyproject.toml); each record is saved once."""
    from metaflow_repro import settings as settings_module
    from metaflow_repro.env import flowfile
    from metaflow_repro.store import snapshot
    from tests.counting import count_calls

    paths = [flow(project), flow(project, name="OtherFlow", file="other_flow.py")]
    for path in paths:
        assert cli("lock", path).code == 0
    imports = count_calls(monkeypatch, flowfile, "import_flow_module")
    settings = count_calls(monkeypatch, settings_module, "load_settings")
    saves = count_calls(monkeypatch, snapshot, "save_local")
    store = (tmp_path / "store").as_uri()
    r = project.inline_run("-p", "no:cacheprovider", "--repro", "--repro-update", "--repro-store", store, *paths)
    r.assertoutcome(passed=10)
    assert [imports[str(p)] for p in paths] == [1, 1] and imports["*"] == 2
    assert settings["*"] == 1 and saves["*"] == 2
    doc = json.loads((project.path / "reports" / "repro-report.json").read_text())
    assert [len(f["steps"]) for f in doc["flows"]] == [3, 3]
