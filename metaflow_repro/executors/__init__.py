"""Executors: the places a run or a replay runs (``local``, ``docker``, ``batch``), one module each.
A place knows whether it is reachable, which run options and environment it adds, and how to run a
prepared replay; operations choose one by ``ExecutorKind`` and never test a place's name themselves.

Places are found through the ``repro_executors`` hook (``metaflow_repro.hooks``): the built-ins are registered
here (not in ``metaflow_repro.hooks``, which sits below every executor), a plugin adds a place (or replaces
one) by answering the hook, e.g. a ``kubernetes`` module whose place has ``kind = ExecutorKind.KUBERNETES``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metaflow_repro import hooks
from metaflow_repro.errors import BadInput
from metaflow_repro.model.interpreter import ExecutorKind

if TYPE_CHECKING:
    from metaflow_repro.executors.base import Place

_BUILTINS = "repro-executors"


class _Builtins:
    @hooks.hookimpl(trylast=True)
    def repro_executors(self) -> list[Place]:
        from metaflow_repro.executors.batch import BatchPlace
        from metaflow_repro.executors.docker import DockerPlace
        from metaflow_repro.executors.local import LocalPlace

        return [LocalPlace(), DockerPlace(), BatchPlace()]


def places() -> dict[ExecutorKind, Place]:
    """Every place a replay can run, by kind (in ``ExecutorKind``'s order): the first answer of a kind
    wins, and plugins answer before the built-ins."""
    pm = hooks.with_builtins(_BUILTINS, _Builtins())
    found: dict[ExecutorKind, Place] = {}
    for answer in pm.hook.repro_executors():
        for place in answer:
            found.setdefault(ExecutorKind(place.kind), place)
    return {kind: found[kind] for kind in ExecutorKind if kind in found}


def get(kind: ExecutorKind) -> Place:
    """The place of ``kind``; BadInput when no plugin provides it."""
    found = places()
    if kind not in found:
        raise BadInput(f"no executor runs {kind.value!r} here (places: {', '.join(k.value for k in found)})")
    return found[kind]


def for_place(name: str, option: str = "--on") -> Place:
    """The place named ``name`` (``--on NAME``), refused naming the places there are."""
    found = {kind.value: place for kind, place in places().items()}
    if name not in found:
        raise BadInput(f"{option} {name}: not a place to replay ({', '.join(found)})")
    return found[name]
