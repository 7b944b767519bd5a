"""pandas DataFrames and Series: equal, or equal within tolerance. Python 3.7+."""


def compare(a, b, options):
    module = type(a).__module__ or ""
    if not module.startswith("pandas") or type(a).__name__ not in ("DataFrame", "Series"):
        return None
    import pandas as pd

    if type(a) is not type(b):
        return ("different", "%s vs %s" % (type(a).__name__, type(b).__name__))
    if a.shape != b.shape:
        return ("different", "shape %s != %s" % (a.shape, b.shape))
    if a.equals(b):
        return ("equivalent", "equal %s %s, different bytes" % (type(a).__name__, a.shape))
    check = pd.testing.assert_frame_equal if isinstance(a, pd.DataFrame) else pd.testing.assert_series_equal
    try:
        check(a, b, check_exact=False, rtol=options.get("rel_tol", 1e-9), atol=options.get("abs_tol", 0.0))
        return ("equivalent", "equal within tolerance %s" % (a.shape,))
    except AssertionError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return ("different", "%s %s: %s" % (type(a).__name__, a.shape, " ".join(lines[:4])))
