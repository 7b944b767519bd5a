"""The HTML page of a bisection (``repro bisect --html``): the verdict line, the culprits, every
package change between the two sets of environments with the steps whose environments it changes,
and every hybrid tried with its verdict, the steps it ran, how long it took and why (the artifacts it
changed, or uv's reason it could not be resolved). Self-contained: the report's CSS inline, no script,
nothing fetched; every text escaped by the template.

It renders the bisection's JSON document (``BisectResult.as_dict()``, what ``repro bisect --json``
prints) or anything with that ``as_dict``; it decides nothing and runs nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from metaflow_repro.report.render import _CSS, _environment

#: a hybrid's verdict -> the CSS class of its cell
VERDICT_CLASS = {"flips": "different", "same": "identical", "unresolvable": "warning"}


class _Bisection(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _change(c: Any, culprits: set[tuple[str, str, str]]) -> dict[str, Any]:
    c = c if isinstance(c, Mapping) else {}
    package, old, new = _text(c.get("package")), _text(c.get("old")), _text(c.get("new"))
    return {
        "package": package,
        "old": old or "(absent)",
        "new": new or "(absent)",
        "steps": [_text(s) for s in _list(c.get("steps"))],
        "culprit": (package, old, new) in culprits,
    }


def _hybrid(n: int, t: Any) -> dict[str, Any]:
    t = t if isinstance(t, Mapping) else {}
    verdict = _text(t.get("verdict"))
    seconds = t.get("seconds")
    return {
        "n": n,
        "changes": [_text(c) for c in _list(t.get("changes"))],
        "verdict": verdict,
        "cls": VERDICT_CLASS.get(verdict, ""),
        "steps": [_text(s) for s in _list(t.get("steps"))],
        "seconds": f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "-",
        "run": _text(t.get("run")),
        "detail": _text(t.get("detail")),
        "known": bool(t.get("known")),
    }


def _verdict_class(doc: Mapping[str, Any], culprits: list[Any], hybrids: list[dict[str, Any]]) -> str:
    if hybrids and hybrids[0]["verdict"] == "unresolvable":
        return "warning"  # nothing could be bisected: the new environments did not run
    if culprits:
        return "failed"
    return "passed" if not doc.get("reproduced") else "warning"


def view(result: _Bisection | Mapping[str, Any]) -> dict[str, Any]:
    """What the template shows, every value a plain string, list or number."""
    doc: Mapping[str, Any] = result if isinstance(result, Mapping) else result.as_dict()
    culprits = [c for c in _list(doc.get("culprits")) if isinstance(c, Mapping)]
    named = {(_text(c.get("package")), _text(c.get("old")), _text(c.get("new"))) for c in culprits}
    hybrids = [_hybrid(n, t) for n, t in enumerate(_list(doc.get("tried")), 1)]
    return {
        "run": _text(doc.get("run")),
        "against": _text(doc.get("against")),
        "summary": _text(doc.get("summary")),
        "verdict_class": _verdict_class(doc, culprits, hybrids),
        "targets": [_text(t) for t in _list(doc.get("targets"))],
        "culprits": [_change(c, named) for c in culprits],
        "changes": [_change(c, named) for c in _list(doc.get("changes"))],
        "hybrids": hybrids,
        "unresolvable": [h for h in hybrids if h["verdict"] == "unresolvable"],
        "reruns": _text(doc.get("reruns")),
        "seconds": _text(doc.get("seconds")),
    }


def to_html(result: _Bisection | Mapping[str, Any]) -> str:
    page: str = _environment(True).get_template("bisect.html").render(view=view(result), css=_CSS)
    return page
