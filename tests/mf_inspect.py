"""Print a Metaflow run as JSON: steps -> tasks -> artifacts and metadata (run in a subprocess,
so the datastore location comes from this process's environment)."""

import json
import sys

from metaflow import Run, namespace


def plain(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def load(artifact):
    try:
        return plain(artifact.data)
    except Exception as exc:  # e.g. a DataFrame, and this interpreter has no pandas
        return "<cannot load here: %s>" % type(exc).__name__


def main(pathspec):
    namespace(None)
    run = Run(pathspec)
    out = {"successful": run.successful, "steps": {}}
    for step in run:
        tasks = []
        for task in step:
            tasks.append(
                {
                    "id": task.id,
                    "successful": task.successful,
                    "artifacts": {a.id: load(a) for a in task.artifacts if not a.id.startswith("_")}
                    if task.successful
                    else {},
                    "metadata": {k: v for k, v in task.metadata_dict.items() if k.startswith("repro-")},
                    "stderr": task.stderr if not task.successful else "",
                }
            )
        out["steps"][step.id] = tasks
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
