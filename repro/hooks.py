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
        """Places a replay can run (``repro.executors.base.Place`` objects), each named by its ``kind``
        (a ``model.interpreter.ExecutorKind``). The first place of a kind wins, and plugins are asked
        before the built-ins (local, docker, batch; registered by ``repro.executors``), so a plugin can
        add a place or replace one. Typed ``Any`` here: this layer knows no executor.
        """


class _Builtins:
    @hookimpl(trylast=True)
    def repro_artifact_comparators(self) -> list[str]:
        from repro.comparators import BUILTIN

        return list(BUILTIN)


@functools.lru_cache(maxsize=1)
def manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("repro")
    pm.add_hookspecs(ReproSpecs)
    pm.register(_Builtins(), name="repro-builtins")
    pm.load_setuptools_entrypoints("repro")
    return pm


def comparators() -> list[str]:
    return [path for paths in manager().hook.repro_artifact_comparators() for path in paths]
