"""Numbers (and containers of them) equal within a tolerance. Python 3.7+, stdlib only."""

import math

_NUMBER = (int, float, complex)


def _mismatch(a, b, path):
    return "%s: %r != %r" % (path or "value", a, b)


def _first_difference(found):
    """The first description in ``found`` (a lazy sequence), so later elements are never walked."""
    return next((f for f in found if f), None)


def _both_nan(a, b):
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def _close(a, b, options):
    """Within the tolerances; ``math.isclose`` refuses complex numbers, so they get its formula."""
    rel_tol, abs_tol = options.get("rel_tol", 1e-9), options.get("abs_tol", 0.0)
    if isinstance(a, complex) or isinstance(b, complex):
        return abs(a - b) <= max(rel_tol * max(abs(a), abs(b)), abs_tol)
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def _walk_equal(a, b, options, path):
    return None if a == b else _mismatch(a, b, path)


def _walk_numbers(a, b, options, path):
    if a == b or _both_nan(a, b) or _close(a, b, options):
        return None
    return "%s: %r != %r (difference %.3g)" % (path or "value", a, b, abs(a - b))


def _walk_sequences(a, b, options, path):
    if len(a) != len(b):
        return "%s: length %d != %d" % (path or "value", len(a), len(b))
    return _first_difference(_walk(x, y, options, "%s[%d]" % (path, i)) for i, (x, y) in enumerate(zip(a, b)))


def _walk_dicts(a, b, options, path):
    if set(a) != set(b):
        return "%s: keys differ (%s)" % (path or "value", sorted(map(repr, set(a) ^ set(b)))[:5])
    return _first_difference(_walk(a[k], b[k], options, "%s[%r]" % (path, k)) for k in a)


def _walker(a, b):
    """How two values are compared: booleans by equality (although they are ints), numbers within
    the tolerances, lists and tuples (of one type) and dicts item by item, anything else by equality."""
    if isinstance(a, bool) or isinstance(b, bool):
        return _walk_equal
    if isinstance(a, _NUMBER) and isinstance(b, _NUMBER):
        return _walk_numbers
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
        return _walk_sequences
    if isinstance(a, dict) and isinstance(b, dict):
        return _walk_dicts
    return _walk_equal


def _walk(a, b, options, path):
    """The first difference between ``a`` and ``b`` (named by its ``path``), or None."""
    return _walker(a, b)(a, b, options, path)


def _numeric(value, depth=0):
    if isinstance(value, _NUMBER) and not isinstance(value, bool):
        return True
    if depth < 4 and isinstance(value, (list, tuple)):
        return any(_numeric(v, depth + 1) for v in value)
    if depth < 4 and isinstance(value, dict):
        return any(_numeric(v, depth + 1) for v in value.values())
    return False


def compare(a, b, options):
    if not (_numeric(a) and _numeric(b)):
        return None
    found = _walk(a, b, options, "")
    if found is None:
        return (
            "equivalent",
            "equal within rel_tol=%g, abs_tol=%g" % (options.get("rel_tol", 1e-9), options.get("abs_tol", 0.0)),
        )
    return ("different", found)
