"""Drop-in: Metaflow's graph shapes × decorators give the same results under `--environment=local`
and under repro's `--environment=conda` (issue 10, "Done when").

Each shape (linear, branch, foreach, nested foreach, switch, parallel, unbounded foreach) appears
once and each decorator (retry, catch, timeout, resume, project, tags, parameters, cards) at least
once, pairwise rather than the full cross product. Every case runs for real under both
environments; the test compares what Metaflow's client reads back: the steps and their task
counts, every task's artifact values, each run's user and project tags and each task's cards
(the local datastore is each flow's own folder, where the card writer puts them too)."""

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from metaflow.graph import DAGNode
from metaflow.version import metaflow_version

from tests.helpers import write_flow

pytestmark = pytest.mark.slow

HEADER = """
import os
from metaflow import (FlowSpec, Parameter, card, catch, current, parallel, project, retry, step,
                      timeout, unbounded_test_foreach_internal)
from metaflow.plugins import InternalTestUnboundedForeachInput
"""


@dataclass(frozen=True)
class Case:
    id: str
    shape: str
    decorators: tuple[str, ...]
    body: str  # the flow class (named Flow), indented at top level
    options: tuple[str, ...] = ()  # `run` options
    resume: bool = False  # run with BREAK=1 (a step fails), then `resume` without it
    xfail: str = ""


CASES = [
    Case(
        "linear-parameters-tags-resume",
        "linear",
        ("parameters", "tags", "resume"),
        """
        class Flow(FlowSpec):
            alpha = Parameter("alpha", default=0.5, type=float)
            label = Parameter("label", default="x")

            @step
            def start(self):
                self.scaled = self.alpha * 4
                self.next(self.middle)

            @step
            def middle(self):
                if os.environ.get("BREAK") == "1":
                    raise RuntimeError("broken on purpose, for resume")
                self.text = "%s-%s" % (self.label, self.scaled)
                self.next(self.end)

            @step
            def end(self):
                self.done = [self.text, self.alpha]
        """,
        options=("--alpha", "0.25", "--label", "run", "--tag", "graph-suite", "--tag", "linear"),
        resume=True,
    ),
    Case(
        "branch-retry",
        "branch",
        ("retry",),
        """
        class Flow(FlowSpec):
            @step
            def start(self):
                self.next(self.a, self.b)

            @retry(times=2, minutes_between_retries=0)
            @step
            def a(self):
                if current.retry_count < 1:
                    raise RuntimeError("first attempt fails")
                self.attempt = current.retry_count
                self.next(self.join)

            @step
            def b(self):
                self.attempt = -1
                self.next(self.join)

            @step
            def join(self, inputs):
                self.attempts = sorted(i.attempt for i in inputs)
                self.next(self.end)

            @step
            def end(self):
                pass
        """,
    ),
    Case(
        "foreach-catch-cards",
        "foreach",
        ("catch", "cards"),
        """
        class Flow(FlowSpec):
            @card
            @step
            def start(self):
                self.items = [1, 2]
                self.next(self.each, foreach="items")

            @card(type="blank")
            @catch(var="failure", print_exception=False)
            @step
            def each(self):
                if self.input == 2:
                    raise ValueError("two is refused")
                self.square = self.input * self.input
                self.next(self.join)

            @step
            def join(self, inputs):
                self.squares = sorted(getattr(i, "square", -1) for i in inputs)
                self.failures = sorted("%s: %s" % (i.failure.type, i.failure.exception) for i in inputs if i.failure)
                self.next(self.end)

            @step
            def end(self):
                pass
        """,
    ),
    Case(
        "nested-foreach-timeout",
        "nested foreach",
        ("timeout",),
        """
        class Flow(FlowSpec):
            @step
            def start(self):
                self.outer = ["a", "b"]
                self.next(self.level1, foreach="outer")

            @step
            def level1(self):
                self.letter = self.input
                self.inner = [1]
                self.next(self.level2, foreach="inner")

            @timeout(seconds=120)
            @step
            def level2(self):
                self.pair = "%s%d" % (self.letter, self.input)
                self.next(self.join2)

            @step
            def join2(self, inputs):
                self.pairs = sorted(i.pair for i in inputs)
                self.next(self.join1)

            @step
            def join1(self, inputs):
                self.all_pairs = sorted(p for i in inputs for p in i.pairs)
                self.next(self.end)

            @step
            def end(self):
                pass
        """,
    ),
    Case(
        "switch-project",
        "switch",
        ("project",),
        """
        @project(name="repro_graph_suite")
        class Flow(FlowSpec):
            @step
            def start(self):
                self.route = "high"
                self.next({"high": self.high, "low": self.low}, condition="route")

            @step
            def high(self):
                self.picked = "high"
                self.next(self.end)

            @step
            def low(self):
                self.picked = "low"
                self.next(self.end)

            @step
            def end(self):
                self.project = current.project_name
        """,
    ),
    Case(
        "parallel-retry",
        "parallel",
        ("retry",),
        """
        class Flow(FlowSpec):
            @step
            def start(self):
                self.next(self.train, num_parallel=2)

            @retry(times=1)
            @parallel
            @step
            def train(self):
                self.rank = current.parallel.node_index
                self.next(self.join)

            @step
            def join(self, inputs):
                self.ranks = sorted(i.rank for i in inputs)
                self.next(self.end)

            @step
            def end(self):
                pass
        """,
    ),
    Case(
        "unbounded-foreach-tags",
        "unbounded foreach",
        ("tags",),
        """
        class Flow(FlowSpec):
            @step
            def start(self):
                self.items = InternalTestUnboundedForeachInput([3, 4])
                self.next(self.each, foreach="items")

            @unbounded_test_foreach_internal
            @step
            def each(self):
                self.double = self.input * 2
                self.next(self.join)

            @step
            def join(self, inputs):
                self.doubles = sorted(i.double for i in inputs)
                self.next(self.end)

            @step
            def end(self):
                pass
        """,
        options=("--tag", "unbounded"),
    ),
]

SHAPES = {"linear", "branch", "foreach", "nested foreach", "switch", "parallel", "unbounded foreach"}
DECORATORS = {"retry", "catch", "timeout", "resume", "project", "tags", "parameters", "cards"}

INSPECT = """
import json, sys
from metaflow import Run, namespace
from metaflow.cards import get_cards
from metaflow.plugins.cards.exception import CardNotPresentException

def cards(task):
    try:
        return sorted(c.type for c in get_cards(task))
    except CardNotPresentException:
        return []

def plain(value):
    if type(value).__name__ == "MetaflowExceptionWrapper":  # @catch: its traceback names the code's path
        return "%s: %s" % (value.type, value.exception)
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)

namespace(None)
run = Run(sys.argv[1])
steps = {}
for step in run:
    tasks = []
    for task in step:
        if task.metadata_dict.get("internal_task_type") == "ubf_control":
            continue  # the control task of an unbounded foreach: not a worker
        artifacts = {a.id: plain(a.data) for a in task.artifacts if not a.id.startswith("_") and a.id != "name"}
        tasks.append({"artifacts": artifacts, "cards": cards(task)})
    steps[step.id] = sorted(tasks, key=lambda t: json.dumps(t, sort_keys=True))
tags = sorted(t for t in run.tags if t in run.user_tags or t.startswith("project"))
print(json.dumps({"successful": run.successful, "steps": steps, "tags": tags}, sort_keys=True))
"""


def test_the_cases_cover_every_shape_once_and_every_decorator():
    assert sorted(c.shape for c in CASES) == sorted(SHAPES)
    assert {d for c in CASES for d in c.decorators} == DECORATORS


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return tmp_path_factory.mktemp("graph-suite")


def _run(path: Path, environment: str, command: list[str], datastore: Path, env: dict) -> tuple[int, str, str]:
    run_id = datastore / f"run-id-{environment}-{command[0]}-{len(list(datastore.iterdir()))}"
    full = {
        **os.environ,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(datastore),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        # as in an activated virtualenv: Metaflow starts @parallel / unbounded-foreach workers with `python`
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **env,
    }
    cmd = [sys.executable, str(path), f"--environment={environment}", *command, "--run-id-file", str(run_id)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=path.parent, timeout=600)
    rid = run_id.read_text().strip() if run_id.exists() else ""
    return proc.returncode, rid, proc.stdout + proc.stderr


def _results(case: Case, environment: str, folder: Path) -> dict:
    """Run ``case`` under ``environment`` (with a resume when the case asks) and read it back."""
    path = write_flow(
        folder / environment, HEADER + textwrap.dedent(case.body) + "\nif __name__ == '__main__':\n    Flow()\n"
    )
    datastore = path.parent  # the flow's folder: Metaflow writes cards under the cwd's .metaflow, reads them here
    if case.resume:
        code, _, text = _run(path, environment, ["run", *case.options], datastore, {"BREAK": "1"})
        assert code != 0 and "broken on purpose, for resume" in text, text[-3000:]
        code, rid, text = _run(path, environment, ["resume", "--tag", "graph-suite", "--tag", "linear"], datastore, {})
    else:
        code, rid, text = _run(path, environment, ["run", *case.options], datastore, {})
    assert code == 0 and rid, f"{case.id} under --environment={environment} failed:\n{text[-4000:]}"
    env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(datastore), "METAFLOW_DEFAULT_METADATA": "local"}
    env["METAFLOW_DEFAULT_DATASTORE"] = "local"
    out = subprocess.run(
        [sys.executable, "-c", INSPECT, f"Flow/{rid}"], capture_output=True, text=True, env=env, cwd=path.parent
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
        for c in CASES
    ],
)
def test_local_and_repro_environments_give_the_same_results(case, suite):
    if case.shape == "switch" and not hasattr(DAGNode, "_parse_switch_dict"):
        pytest.skip(
            f"Metaflow {metaflow_version} has no switch steps (self.next({{...}}, condition=...)): a 2.17 release added them"
        )
    folder = suite / case.id
    with ThreadPoolExecutor(2) as pool:  # both at once: most of a run is waiting for task processes
        local_run, repro_run = (pool.submit(_results, case, env, folder) for env in ("local", "conda"))
        local, repro = local_run.result(), repro_run.result()
    assert local["successful"], local
    # the decorators did something (a comparison of two empty results would prove nothing)
    tasks = [t for ts in local["steps"].values() for t in ts]
    if "cards" in case.decorators:
        assert {"default", "blank"} <= {c for t in tasks for c in t["cards"]}, local
    if "tags" in case.decorators:
        assert local["tags"], local
    if "project" in case.decorators:
        assert any(t.startswith("project:repro_graph_suite") for t in local["tags"]), local
    if "retry" in case.decorators and case.shape == "branch":
        assert local["steps"]["join"][0]["artifacts"]["attempts"] == [-1, 1]
    if "catch" in case.decorators:
        assert local["steps"]["join"][0]["artifacts"]["failures"] == ["builtins.ValueError: two is refused"]
    assert repro == local
