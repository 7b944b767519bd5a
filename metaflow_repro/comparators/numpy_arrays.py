"""numpy arrays: same shape and dtype, values equal within tolerance. Python 3.7+."""


def compare(a, b, options):
    if type(a).__module__ != "numpy" or type(a).__name__ != "ndarray":
        return None
    import numpy as np

    if not isinstance(b, np.ndarray):
        return ("different", "ndarray vs %s" % type(b).__name__)
    if a.shape != b.shape:
        return ("different", "shape %s != %s" % (a.shape, b.shape))
    if a.dtype != b.dtype:
        return ("different", "dtype %s != %s" % (a.dtype, b.dtype))
    if np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
        return ("equivalent", "equal values (%s %s), different bytes" % (a.shape, a.dtype))
    if a.dtype.kind in "fc" and np.allclose(
        a, b, rtol=options.get("rel_tol", 1e-9), atol=options.get("abs_tol", 0.0), equal_nan=True
    ):
        return ("equivalent", "close within tolerance; max |diff| %.3g" % float(np.nanmax(np.abs(a - b))))
    diff = np.argwhere(~((a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind in "fc" else (a == b)))
    first = tuple(int(i) for i in diff[0]) if len(diff) else ()
    return (
        "different",
        "shape %s %s: %d of %d values differ; first at %s: %r != %r"
        % (
            a.shape,
            a.dtype,
            len(diff),
            a.size,
            first,
            a[first].item() if first else a,
            b[first].item() if first else b,
        ),
    )
