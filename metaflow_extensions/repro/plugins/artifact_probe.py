"""Load or compare pickled artifacts inside a step's own environment.

Standard library only; Python 3.7 to 3.13. Reads a JSON request on stdin, writes JSON on stdout:

  {"mode": "load", "sys_path": [...], "items": [{"id": .., "path": ..}]}
      -> {id: {"status": "ok" | "warning" | "fails", "detail": "..."}}
  {"mode": "compare", "sys_path": [...], "comparators": [file, ...], "options": {...},
   "items": [{"id": .., "a": path, "b": path}]}
      -> {id: {"verdict": "equivalent" | "different", "detail": "..."}}

Blobs are verified by the caller (sha1) before they are handed to this script.
"""

import importlib.util
import json
import pickle
import sys
import traceback
import warnings


def _first_sentence(text, limit=200):
    text = text.strip().splitlines()[0] if text.strip() else ""
    cut = text.find(". ")
    if 0 < cut < limit:
        text = text[:cut + 1]
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
            _, notes = _load(item["path"])
            out[item["id"]] = {"status": "warning" if notes else "ok", "detail": "; ".join(notes)}
        except BaseException as exc:  # noqa: B902 - anything unpickling raises is the answer
            out[item["id"]] = {"status": "fails", "detail": _error(exc)}
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
            a, _ = _load(item["a"])
            b, _ = _load(item["b"])
        except BaseException as exc:  # noqa: B902
            out[item["id"]] = {"verdict": "different", "detail": "cannot load to compare: " + _error(exc)}
            continue
        verdict = None
        for path, module in comparators:
            try:
                verdict = module.compare(a, b, options)
            except Exception:  # noqa: BLE001 - a broken comparator must not hide the others
                verdict = ("different", "comparator %s failed: %s" % (path, traceback.format_exc(limit=1).strip()))
            if verdict is not None:
                break
        if verdict is None:
            verdict = ("different", "no comparator could compare %s" % type(a).__name__)
        out[item["id"]] = {"verdict": verdict[0], "detail": verdict[1]}
    return out


def main():
    request = json.load(sys.stdin)
    for entry in reversed(request.get("sys_path", [])):
        sys.path.insert(0, entry)
    if request["mode"] == "load":
        result = do_load(request["items"])
    else:
        result = do_compare(request["items"], request.get("comparators", []), request.get("options", {}))
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
