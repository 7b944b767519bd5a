"""Count calls of a function however a module imported it (``from x import f`` binds its own name)."""

from __future__ import annotations

import collections
import functools
import sys
from collections.abc import Callable
from typing import Any


def count_calls(monkeypatch, owner: Any, name: str) -> collections.Counter:
    """Replace ``owner.name`` and every module's binding of the same function with a counting wrapper;
    the counter maps the first argument's text (a path) to its number of calls, ``"*"`` to the total."""
    original: Callable[..., Any] = getattr(owner, name)
    counts: collections.Counter = collections.Counter()

    @functools.wraps(original)
    def counting(*args, **kwargs):
        counts["*"] += 1
        if args:
            counts[str(args[0])] += 1
        return original(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "__dict__", None) is not None and module.__dict__.get(name) is original:
            monkeypatch.setattr(module, name, counting)
    return counts
