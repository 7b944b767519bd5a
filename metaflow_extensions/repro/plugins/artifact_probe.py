"""Load or compare pickled artifacts inside a step's own environment.

Standard library only; Python 3.7 to 3.13. Reads a JSON request on stdin, writes JSON on stdout;
the request and response shapes are in ``protocol.py`` (mode "load": unpickle each file, answer
ok / warning / fails; mode "compare": compare pairs with comparator modules, answer equivalent /
different).

Blobs are verified by the caller (sha1) before they are handed to this script.
"""

import importlib.util
import json
import os
import pickle
import sys
import traceback
import warnings

if __package__:
    from . import protocol
else:  # run as a script (``python -I artifact_probe.py``): the sibling module, by path
    _spec = importlib.util.spec_from_file_location(
        "repro_probe_protocol", os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol.py")
    )
    if _spec is None or _spec.loader is None:
        raise ImportError("cannot load protocol.py from " + os.path.dirname(os.path.abspath(__file__)))
    protocol = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(protocol)


def _first_sentence(text, limit=200):
    text = text.strip().splitlines()[0] if text.strip() else ""
    cut = text.find(". ")
    if 0 < cut < limit:
        text = text[: cut + 1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load(path):
    with open(path, "rb") as fh:
        data = fh.read()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = pickle.loads(data)
    notes = []
    for w in caught:
        text = "%s: %s" % (w.category.__name__, _first_sentence(str(w.message)))
        if text not in notes:
            notes.append(text)
    return value, notes


def _error(exc):
    return "%s: %s" % (type(exc).__name__, _first_sentence(str(exc)))


def do_load(items):
    out = {}
    for item in items:
        try:
            _, notes = _load(item[protocol.PATH])
            status = protocol.STATUS_WARNING if notes else protocol.STATUS_OK
            out[item[protocol.ID]] = protocol.load_answer(status, "; ".join(notes))
        except BaseException as exc:  # noqa: BLE001 - anything unpickling raises is the answer
            out[item[protocol.ID]] = protocol.load_answer(protocol.STATUS_FAILS, _error(exc))
    return out


def _comparator(path):
    spec = importlib.util.spec_from_file_location("repro_comparator_%d" % abs(hash(path)), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def do_compare(items, comparator_paths, options):
    comparators = [(p, _comparator(p)) for p in comparator_paths]
    out = {}
    for item in items:
        try:
            a, _ = _load(item[protocol.A])
            b, _ = _load(item[protocol.B])
        except BaseException as exc:  # noqa: BLE001
            out[item[protocol.ID]] = protocol.compare_answer(
                protocol.VERDICT_DIFFERENT, "cannot load to compare: " + _error(exc)
            )
            continue
        verdict = None
        for path, module in comparators:
            try:
                verdict = module.compare(a, b, options)
            except Exception:  # noqa: BLE001 - a broken comparator must not hide the others
                verdict = (
                    protocol.VERDICT_DIFFERENT,
                    "comparator %s failed: %s" % (path, traceback.format_exc(limit=1).strip()),
                )
            if verdict is not None:
                break
        if verdict is None:
            verdict = (protocol.VERDICT_DIFFERENT, "no comparator could compare %s" % type(a).__name__)
        out[item[protocol.ID]] = protocol.compare_answer(verdict[0], verdict[1])
    return out


def main():
    request = json.load(sys.stdin)
    for entry in reversed(request.get(protocol.SYS_PATH, [])):
        sys.path.insert(0, entry)
    mode = request[protocol.MODE]
    if mode == protocol.MODE_LOAD:
        result = do_load(request[protocol.ITEMS])
    elif mode == protocol.MODE_COMPARE:
        result = do_compare(
            request[protocol.ITEMS], request.get(protocol.COMPARATORS, []), request.get(protocol.OPTIONS, {})
        )
    else:
        sys.stderr.write("artifact probe: unknown mode %r (expected one of %s)\n" % (mode, ", ".join(protocol.MODES)))
        sys.exit(2)
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
