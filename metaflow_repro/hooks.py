"""Extension points (pluggy). Plugins register through the ``repro`` setuptools entry point group."""

from __future__ import annotations

import functools
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("repro")
hookimpl = pluggy.HookimplMarker("repro")


class ReproSpecs:
    @hookspec
    def repro_artifact_comparators(self) -> list[str]:  # type: ignore[empty-body]  # a spec: pluggy reads its signature, never runs it
        """Paths of comparator modules, tried in order until one answers.

        A comparator module runs inside the step's own environment (Python 3.7+), is loaded by
        path, and defines ``compare(a, b, options)`` returning None (not mine) or
        ``("equivalent" | "different", description)``. Plugins are asked before the built-ins.
        """

    @hookspec
    def repro_executors(self) -> list[Any]:  # type: ignore[empty-body]  # a spec: pluggy reads its signature, never runs it
        """Places a replay can run (``metaflow_repro.executors.base.Place`` objects), each named by its ``kind``
        (a ``model.interpreter.ExecutorKind``). The first place of a kind wins, and plugins are asked
        before the built-ins (local, docker, batch; registered by ``metaflow_repro.executors``), so a plugin can
        add a place or replace one. Typed ``Any`` here: this layer knows no executor.
        """


@functools.lru_cache(maxsize=1)
def manager() -> pluggy.PluginManager:
    """The plugin manager: the specs above and the plugins of the ``repro`` entry point group. The
    built-in answers are registered by the layer that owns them (``with_builtins``), never here: this
    module sits below every comparator and executor."""
    pm = pluggy.PluginManager("repro")
    pm.add_hookspecs(ReproSpecs)
    pm.load_setuptools_entrypoints("repro")
    return pm


def with_builtins(name: str, plugin: object) -> pluggy.PluginManager:
    """The manager with ``plugin`` (built-in answers, marked ``trylast`` so plugins come first)
    registered once under ``name``."""
    pm = manager()
    if not pm.has_plugin(name):
        pm.register(plugin, name=name)
    return pm
