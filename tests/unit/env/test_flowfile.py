"""``env.flowfile.graph_ends``: a flow's start and end steps as its graph names them (issue 26 item 2)."""

from __future__ import annotations

from types import SimpleNamespace

from metaflow_repro.env.flowfile import graph_ends


class _Graph(list):
    """Metaflow's FlowGraph as graph_ends reads it: its nodes, iterated, and what it names."""


def _graph(edges: dict, **named) -> _Graph:
    graph = _Graph(SimpleNamespace(name=name, out_funcs=list(out)) for name, out in edges.items())
    for key, value in named.items():
        setattr(graph, key, value)
    return graph


def test_the_graph_names_its_start_and_end():
    graph = _graph({"begin": ["finish"], "finish": []}, start_step="begin", end_step="finish")
    assert graph_ends(graph) == ("begin", "finish")
    assert graph_ends(_graph({"a": []}, start_step=None, end_step=None)) == (None, None)  # as Metaflow says


def test_a_graph_that_names_none_gives_its_shape():
    """A Metaflow whose graph has no start_step: the step nothing goes to, and the one going nowhere."""
    graph = _graph({"first": ["left", "right"], "left": ["join"], "right": ["join"], "join": ["last"], "last": []})
    assert graph_ends(graph) == ("first", "last")
    assert graph_ends(_graph({"a": ["b"], "b": [], "c": ["b"]})) == (None, "b")  # two entries: no start
