"""What a new user sees from the command line: summaries, hints and refusals (issue 12, items 6 and 7)."""

import pytest

from tests.helpers import cli, write_flow

FLOW = """
    from metaflow import FlowSpec, step, pypi

    class SummaryFlow(FlowSpec):
        @pypi(packages={"six": "1.16.0"})
        @step
        def start(self):
            self.numbers = list(range(200))
            self.next(self.end)

        @step
        def end(self):
            self.total = sum(self.numbers)

    if __name__ == "__main__":
        SummaryFlow()
"""


@pytest.mark.slow
def test_run_prints_a_short_summary_and_the_next_command_and_store_push_takes_latest(flow_dir, tmp_path):
    path = write_flow(flow_dir, FLOW)
    store = (tmp_path / "store").as_uri()
    env = {
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_STORE": store,
    }
    assert cli("lock", path).code == 0
    r = cli("run", path, env=env, cwd=flow_dir)
    assert r.code == 0, r.text[-3000:]
    out = r.out.strip().splitlines()
    lines = out[next(i for i, line in enumerate(out) if line.startswith("run SummaryFlow/")) :]  # after Metaflow's
    assert lines[0].startswith("run SummaryFlow/") and "2 steps, 2 tasks" in lines[0]
    assert lines[1].startswith("pickle checks: ") and " ok" in lines[1] and "fails" not in lines[1]
    assert f"pushed to {store}" in r.out
    run_id = lines[0].split()[1].rstrip(":")
    assert f"next: repro replay {run_id}" in r.out
    assert len(lines) <= 6 and "reader env" not in r.out  # no table when every check is ok
    # every check with -v
    verbose = cli("run", path, "-v", env=env, cwd=flow_dir)
    assert verbose.code == 0 and "reader env" in verbose.out
    # `store push Flow/latest` pushes the newest run recorded here
    other = (tmp_path / "other-store").as_uri()
    pushed = cli("store", "push", "SummaryFlow/latest", "--store", other, env=env, cwd=flow_dir)
    assert pushed.code == 0, pushed.text
    assert f"to {other}" in pushed.out
    assert "SummaryFlow" in cli("store", "ls", "--store", other, env=env).out
    missing = cli("store", "push", "NoSuchFlow/latest", env=env, cwd=flow_dir)
    assert missing.code == 2 and "no run of NoSuchFlow is recorded here" in missing.err


def test_metaflow_options_before_the_double_dash_get_a_hint(flow_dir):
    path = write_flow(flow_dir, FLOW)
    r = cli("run", path, "--scale", "2")
    assert r.code == 2
    assert "Options for Metaflow's `run` go after --" in r.err and f"repro run {path} -- --scale 2" in r.err


def test_run_refuses_a_file_without_a_flow_without_running_it(flow_dir, tmp_path):
    marker = tmp_path / "ran"
    util = flow_dir / "util.py"
    flow_dir.mkdir(parents=True, exist_ok=True)
    util.write_text(f"open({str(marker)!r}, 'w').write('ran')\n\ndef helper():\n    return 1\n")
    r = cli("run", util)
    assert r.code == 2 and "no Metaflow flow found" in r.err
    assert not marker.exists()


def test_env_show_takes_step_and_diff_help_describes_its_arguments(flow_dir):
    path = write_flow(flow_dir, FLOW)
    r = cli("env", "show", path, "--step", "end", "--no-fingerprint")
    assert r.code == 0, r.text
    rows = [line.split()[0] for line in r.out.splitlines()[3:] if line.strip()]
    assert rows == ["end"]
    bad = cli("env", "show", path, "--step", "nope")
    assert bad.code == 2 and "no step named nope" in bad.err and "start, end" in bad.err
    help_ = cli("diff", "--help")
    assert help_.code == 0
    assert "REF_A" in help_.out and "FlowName/run_id" in help_.out and "the second run" in help_.out
