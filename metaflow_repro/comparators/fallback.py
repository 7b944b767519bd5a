"""Anything else: ``a == b``. Python 3.7+, stdlib only."""


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compare(a, b, options):
    try:
        equal = bool(a == b)
    except Exception as exc:  # noqa: BLE001 - e.g. ambiguous truth values
        return ("different", "cannot compare %s with ==: %s" % (type(a).__name__, exc))
    if equal:
        return ("equivalent", "equal (==), different bytes")
    return ("different", "%s != %s" % (_short(a), _short(b)))
