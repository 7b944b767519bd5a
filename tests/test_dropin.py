"""A Metaflow user changes nothing in a working flow (issue 10, items 1, 2, 3, 5, 7)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import tomllib

from metaflow_repro.adapter.flowfolder import MAX_PACKAGED_FILES, check_flow_folder
from metaflow_repro.errors import BadInput
from tests.helpers import cli, require_python, write_flow

# -- item 7: REPRO_HOME (or a large folder) where Metaflow packages the flow's code -----------------

TINY_FLOW = """
    from metaflow import FlowSpec, step

    class TinyFlow(FlowSpec):
        @step
        def start(self):
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        TinyFlow()
"""


def test_repro_home_inside_the_flow_folder_is_refused_before_anything_runs(flow_dir, repro_home):
    path = write_flow(flow_dir, TINY_FLOW)
    home = flow_dir / "repro-home"
    r = cli("run", path, env={"REPRO_HOME": str(home)})
    assert r.code == 2, r.text
    assert f"REPRO_HOME ({home})" in r.err and "inside the flow's folder" in r.err and "Move it out" in r.err
    assert not (flow_dir / "flow.repro.lock").exists()  # stopped before locking, building or running
    # Metaflow itself, with repro's extension: the same message, before it packages anything
    proc = subprocess.run(
        [sys.executable, str(path), "--environment=conda", "run"],
        capture_output=True,
        text=True,
        cwd=flow_dir,
        env={**os.environ, "REPRO_HOME": str(home)},
        timeout=300,
    )
    assert proc.returncode != 0 and "inside the flow's folder" in proc.stderr, proc.stderr[-2000:]
    # a hidden folder is one Metaflow never packages: fine there
    check_flow_folder(path, flow_dir / ".repro")


def test_a_large_folder_beside_the_flow_is_refused_a_small_or_hidden_one_is_not(tmp_path):
    flow = tmp_path / "flow.py"
    flow.write_text("")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(50):
        (data / f"m{i}.py").write_text("x = 1\n")
    (data / "big.bin").write_bytes(b"\0" * (60 * 2**20))  # not a package suffix: Metaflow skips it
    check_flow_folder(flow, tmp_path.parent / "home")
    for i in range(MAX_PACKAGED_FILES):
        (data / f"n{i}.py").write_text("")
    with pytest.raises(BadInput, match=r"the folder .*/data beside the flow holds more than 2000 files") as err:
        check_flow_folder(flow, tmp_path.parent / "home")
    assert "Move data out of" in str(err.value)
    data.rename(tmp_path / ".data")  # hidden: Metaflow's walk skips it
    check_flow_folder(flow, tmp_path.parent / "home")


# -- item 3: python= as a PEP 440 specifier; item 5: an exact Python not installed -------------------

SPEC_FLOW = """
    from metaflow import FlowSpec, step, pypi, pypi_base

    @pypi_base(packages={"six": "1.16.0"}, python="%s")
    class SpecFlow(FlowSpec):
        @step
        def start(self):
            self.next(self.end)

        @pypi(python=">=3.10,<3.11")
        @step
        def end(self):
            pass

    if __name__ == "__main__":
        SpecFlow()
"""


def test_python_specifiers_pick_the_newest_installed_match_and_the_lock_keeps_both(flow_dir, repro_home):
    py310 = require_python("3.10")
    exact310 = py310.parent.parent.name  # pyenv's folder: "3.10.13"
    path = write_flow(flow_dir, SPEC_FLOW % "3.10.*")
    r = cli("lock", path)
    assert r.code == 0, r.text
    steps = tomllib.loads((flow_dir / "flow.repro.lock").read_text())["steps"]
    assert steps["start"]["python"] == "==3.10.*" and steps["end"]["python"] == "<3.11,>=3.10"
    assert steps["start"]["platforms"]["linux-64"]["python"] == exact310
    assert steps["end"]["platforms"]["linux-64"]["python"] == exact310
    assert cli("lock", path, "--check").code == 0
    # requirements-style spelling of the same thing: the same spec, so the lock still holds
    write_flow(flow_dir, SPEC_FLOW % "==3.10.*")
    assert cli("lock", path, "--check").code == 0


def test_an_exact_python_not_installed_locks_with_a_warning_and_does_not_build(flow_dir, repro_home):
    path = write_flow(flow_dir, (SPEC_FLOW % "3.11.3").replace('@pypi(python=">=3.10,<3.11")', ""))
    r = cli("lock", path)
    assert r.code == 0, r.text  # the lock may be meant for another machine
    assert "warning:" in r.err and "Python 3.11.3 is not installed here" in r.err and "repro doctor" in r.err
    assert '"3.11.3"' in (flow_dir / "flow.repro.lock").read_text()
    check = cli("lock", path, "--check")
    assert check.code == 0 and "Python 3.11.3 is not installed here" in check.err
    build = cli("env", "build", path)
    assert build.code == 2 and "Python 3.11.3 is not installed here" in build.err, build.text


# -- Metaflow runs (slow) ------------------------------------------------------------------------------

CONFIG_FLOW = """
    from metaflow import FlowSpec, Config, config_expr, pypi_base, requirements_txt_parser, step

    @pypi_base(**config_expr("req"))
    class ConfigReqFlow(FlowSpec):
        req = Config("req", default="requirements.txt", parser=requirements_txt_parser)

        @step
        def start(self):
            import sys

            import six

            self.six = six.__version__
            self.python = "%d.%d" % sys.version_info[:2]
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        ConfigReqFlow()
"""


def _metaflow(path, *args, env=None):
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        cwd=path.parent,
        env={**os.environ, "METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DEFAULT_METADATA": "local", **(env or {})},
        timeout=900,
    )


@pytest.mark.slow
def test_declarations_from_a_config_agree_in_lock_check_run_and_pytest(tmp_path, repro_home):
    require_python("3.10")
    flow_dir = tmp_path / "proj"
    path = write_flow(flow_dir, CONFIG_FLOW)
    (flow_dir / "requirements.txt").write_text("python==3.10.*\nsix==1.16.0\n")
    r = cli("lock", path.name, cwd=flow_dir)
    assert r.code == 0, r.text
    start = tomllib.loads((flow_dir / "flow.repro.lock").read_text())["steps"]["start"]
    assert start["libraries"] == {"six": "1.16.0"} and start["python"] == "==3.10.*"
    assert cli("lock", path.name, "--check", cwd=flow_dir).code == 0
    # Metaflow's own --config-value gives other declarations: the lock no longer holds for them
    other = cli("lock", path.name, "--check", "--config-value", "req", "six==1.17.0", cwd=flow_dir)
    assert other.code == 1 and "~ six 1.16.0 -> 1.17.0" in other.out, other.text
    # the run (frozen: a lock that flips would stop it) sees what the lock saw
    run = _metaflow(path, "--environment=pypi", "run", env={"REPRO_FROZEN": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "lock updated" not in run.stderr
    from metaflow import Flow, namespace

    os.chdir(flow_dir)  # Metaflow's client finds the local datastore from here
    namespace(None)
    task = Flow("ConfigReqFlow").latest_run["start"].task
    assert (task["six"].data, task["python"].data) == ("1.16.0", "3.10")
    # ... and pytest --repro, frozen as in CI: every item passes, nothing is re-locked
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--repro", path.name, "-q"],
        capture_output=True,
        text=True,
        cwd=flow_dir,
        env={**os.environ, "REPRO_FROZEN": "1"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
    assert start == tomllib.loads((flow_dir / "flow.repro.lock").read_text())["steps"]["start"]


PARALLEL_FLOW = """
    from metaflow import FlowSpec, current, parallel, pypi_base, step, unbounded_test_foreach_internal
    from metaflow.plugins.test_unbounded_foreach_decorator import InternalTestUnboundedForeachInput

    @pypi_base(packages={"six": "1.16.0"})
    class ParallelFlow(FlowSpec):
        @step
        def start(self):
            self.next(self.train, num_parallel=2)

        @parallel
        @step
        def train(self):
            import sys

            self.node = current.parallel.node_index
            self.python = sys.executable
            self.next(self.join)

        @step
        def join(self, inputs):
            self.nodes = sorted(i.node for i in inputs)
            self.pythons = sorted(set(i.python for i in inputs))
            self.next(self.fan)

        @step
        def fan(self):
            self.items = InternalTestUnboundedForeachInput([1, 2, 3])
            self.next(self.each, foreach="items")

        @unbounded_test_foreach_internal
        @step
        def each(self):
            self.double = self.input * 2
            self.next(self.join_each)

        @step
        def join_each(self, inputs):
            self.doubles = sorted(i.double for i in inputs)
            self.merge_artifacts(inputs, include=["nodes", "pythons"])
            self.next(self.end)

        @step
        def end(self):
            print("nodes %s doubles %s pythons %s" % (self.nodes, self.doubles, self.pythons))

    if __name__ == "__main__":
        ParallelFlow()
"""


@pytest.mark.slow
def test_local_parallel_and_unbounded_foreach_workers_run_in_the_step_environment(flow_dir, repro_home):
    path = write_flow(flow_dir, PARALLEL_FLOW)
    run = _metaflow(path, "--environment=conda", "run")
    assert run.returncode == 0, run.stderr[-3000:]
    envs = str(repro_home / "envs")
    line = next(x for x in (run.stdout + run.stderr).splitlines() if "nodes " in x)
    assert "nodes [0, 1] doubles [2, 4, 6]" in line
    pythons = json.loads(line.split(" pythons ")[1].replace("'", '"'))
    assert len(pythons) == 1 and pythons[0].startswith(envs)  # both @parallel nodes, in the step's env


@pytest.mark.slow
def test_python_specifier_errors_keep_their_asterisk_under_metaflow(flow_dir, repro_home):
    path = write_flow(flow_dir, textwrap.dedent(SPEC_FLOW) % "3.6.*")
    run = _metaflow(path, "--environment=pypi", "run")
    assert run.returncode != 0
    assert "python='3.6.\u2217' is not supported" in run.stderr, run.stderr[-2000:]


PARSER_FLOW = """
    from metaflow import FlowSpec, Config, config_expr, step, {deco}, {parser}

    @{deco}(**config_expr("deps"))
    class ParsedFlow(FlowSpec):
        deps = Config("deps", default="{file}", parser={parser})

        @step
        def start(self):
            self.next(self.end)

        @step
        def end(self):
            pass
"""

PARSED_FILES = {
    "requirements_txt_parser": ("requirements.txt", "python==3.10.*\\nsix==1.16.0\\n", "==3.10.*"),
    "pyproject_toml_parser": (
        "pyproject.toml",
        '[project]\\nname = "x"\\nversion = "0.1"\\nrequires-python = ">=3.10,<3.12"\\n'
        'dependencies = ["six==1.16.0"]\\n[tool.repro]\\nconda-source = "pypi"\\n',
        "<3.12,>=3.10",
    ),
    "conda_environment_yml_parser": ("environment.yml", "dependencies:\\n  - python=3.10\\n  - six=1.16.0\\n", "3.10"),
}


@pytest.mark.parametrize("parser", sorted(PARSED_FILES))
def test_every_metaflow_config_parser_form_gives_the_declaration_metaflow_sees(parser, flow_dir, monkeypatch):
    from metaflow_repro.env.engine import open_flow

    name, text, python = PARSED_FILES[parser]
    deco = "conda_base" if "conda" in parser else "pypi_base"
    path = write_flow(flow_dir, PARSER_FLOW.format(deco=deco, parser=parser, file=name))
    (flow_dir / name).write_text(text.replace("\\n", "\n"))
    monkeypatch.chdir(flow_dir)  # Metaflow reads a relative config file from the current folder
    monkeypatch.setenv("REPRO_CONDA_SOURCE", "pypi")
    spec = open_flow(path).specs["start"]
    assert (spec.python, dict(spec.libraries)) == (python, {"six": "1.16.0"})
    if parser == "requirements_txt_parser":  # Metaflow's option, among run options, parsed by the parser
        other = open_flow(path, metaflow_args=["--max-workers", "2", "--config-value", "deps", "six==1.17.0"])
        assert dict(other.specs["start"].libraries) == {"six": "1.17.0"}
