"""repro finds a flow class as Metaflow does (``extract_flow_class_from_file``): a module name bound to a
``FlowMutator`` (``@robust_flow`` on the class, bare or with arguments, stacked, or on a base class) stands
for the class it holds, and the start step is the one the graph names (issue 26 items 2 and 3). Each
file is imported for real by ``load_flow``, with Metaflow applying the mutators."""

from __future__ import annotations

import pytest

from metaflow_repro.env.flowfile import load_flow, parameter_names
from metaflow_repro.errors import FlowLoadError, NoFlowFound
from tests.helpers import write_flow

MUTATORS = """
    from metaflow import FlowMutator, FlowSpec, Parameter, step


    class robust_flow(FlowMutator):
        def init(self, *args, **kwargs):
            self.times = kwargs.get("times", 1)

        def mutate(self, mutable_flow):
            for name, s in mutable_flow.steps:
                s.add_decorator("pypi", deco_kwargs={"packages": {"six": "1.16.0"}})


    class with_greeting(FlowMutator):
        def pre_mutate(self, mutable_flow):
            mutable_flow.add_parameter("greeting", Parameter("greeting", default="hello"))
"""

STEPS = """
        @step(start=True)
        def begin(self):
            self.next(self.finish)

        @step(end=True)
        def finish(self):
            pass
"""


def _load(flow_dir, body: str, name: str = "flow.py"):
    return load_flow(write_flow(flow_dir, MUTATORS + body, name=name))


@pytest.mark.parametrize(
    "decorators",
    [
        ["@robust_flow"],
        ["@robust_flow(times=3)"],
        ["@with_greeting", "@robust_flow"],
    ],
    ids=["bare", "with-arguments", "stacked"],
)
def test_a_flow_under_a_mutator_is_found_and_mutated(flow_dir, decorators):
    body = "\n".join(f"    {d}" for d in decorators) + "\n    class MutatedFlow(FlowSpec):" + STEPS
    decl = _load(flow_dir, body)
    assert (decl.name, decl.steps) == ("MutatedFlow", ("begin", "finish"))
    assert decl.graph == {"begin": ("finish",), "finish": ()}
    for step in decl.steps:  # the mutator's @pypi, as Metaflow's runtime will have it
        assert [dict(d.libraries) for d in decl.per_step[step]] == [{"six": "1.16.0"}]
    assert ("greeting" in decl.parameters) == ("@with_greeting" in decorators)


def test_a_mutated_base_class_and_the_flow_deriving_from_it(flow_dir):
    body = (
        """
    @robust_flow
    class BaseFlow(FlowSpec):
        def helper(self):
            return 1


    class ChildFlow(BaseFlow):"""
        + STEPS
    )
    decl = _load(flow_dir, body)
    assert (decl.name, decl.steps) == ("ChildFlow", ("begin", "finish"))


def test_a_single_step_flow_is_its_own_start_and_end(flow_dir):
    body = """
    class OneStepFlow(FlowSpec):
        @step(start=True, end=True)
        def only(self):
            self.x = 1
"""
    decl = _load(flow_dir, body)
    assert (decl.name, decl.steps, decl.graph) == ("OneStepFlow", ("only",), {"only": ()})


def test_a_replay_knows_the_parameters_a_mutator_adds(flow_dir):
    path = write_flow(flow_dir, MUTATORS + "\n    @with_greeting\n    class GreetFlow(FlowSpec):" + STEPS)
    assert parameter_names(path) == ("greeting",)


def test_a_flowspec_subclass_without_a_start_step_is_refused_saying_why(flow_dir):
    body = """
    class HalfFlow(FlowSpec):
        @step
        def first(self):
            self.next(self.last)

        @step
        def last(self):
            pass
"""
    with pytest.raises(FlowLoadError, match="HalfFlow.*no start step") as err:
        _load(flow_dir, body)
    assert not isinstance(err.value, NoFlowFound)  # pytest makes it a collection error, never skips it


def test_a_file_that_only_uses_flowspec_defines_no_flow(flow_dir):
    with pytest.raises(NoFlowFound, match="no class deriving from FlowSpec"):
        _load(flow_dir, "\n    def is_flow(cls):\n        return issubclass(cls, FlowSpec)\n")
