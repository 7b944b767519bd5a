"""The plugin manager (metaflow_repro.hooks): built-in answers are registered by the layer that owns them, once,
after every plugin, so a plugin's comparator is tried before the built-ins."""

from __future__ import annotations

from metaflow_repro import hooks
from metaflow_repro.checks.compare import comparator_paths
from metaflow_repro.comparators import BUILTIN


class _Plugin:
    @hooks.hookimpl
    def repro_artifact_comparators(self) -> list[str]:
        return ["/plugins/mine.py"]


def test_a_plugin_comparator_comes_before_the_builtins_which_are_registered_once():
    plugin = _Plugin()
    hooks.manager().register(plugin, name="test-comparator")
    try:
        first = comparator_paths()
        again = comparator_paths()
    finally:
        hooks.manager().unregister(plugin)
    assert first == again == ["/plugins/mine.py", *BUILTIN]
    assert comparator_paths() == list(BUILTIN)


def test_the_base_manager_registers_no_builtin():
    """hooks sits below comparators and executors: it names none of them (the layers contract)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(hooks))
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert not {m for m in imported if m and m.startswith("repro.")}, imported
