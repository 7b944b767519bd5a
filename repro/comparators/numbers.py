"""Numbers (and containers of them) equal within a tolerance. Python 3.7+, stdlib only."""

import math

_NUMBER = (int, float, complex)


def _walk(a, b, options, path):
    if isinstance(a, bool) or isinstance(b, bool):
        return None if a == b else "%s: %r != %r" % (path or "value", a, b)
    if isinstance(a, _NUMBER) and isinstance(b, _NUMBER):
        if a == b:
            return None
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return None
        if isinstance(a, complex) or isinstance(b, complex):
            close = abs(a - b) <= max(options.get("rel_tol", 1e-9) * max(abs(a), abs(b)), options.get("abs_tol", 0.0))
        else:
            close = math.isclose(a, b, rel_tol=options.get("rel_tol", 1e-9), abs_tol=options.get("abs_tol", 0.0))
        return None if close else "%s: %r != %r (difference %.3g)" % (path or "value", a, b, abs(a - b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
        if len(a) != len(b):
            return "%s: length %d != %d" % (path or "value", len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            found = _walk(x, y, options, "%s[%d]" % (path, i))
            if found:
                return found
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return "%s: keys differ (%s)" % (path or "value", sorted(map(repr, set(a) ^ set(b)))[:5])
        for k in a:
            found = _walk(a[k], b[k], options, "%s[%r]" % (path, k))
            if found:
                return found
        return None
    if a == b:
        return None
    return "%s: %r != %r" % (path or "value", a, b)


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
