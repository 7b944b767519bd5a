"""``python -m repro.runs.inspect_run Flow/run_id [param ...]``: a finished run as JSON, via Metaflow's client.

Runs in its own process so that Metaflow's client picks up the datastore location of *that*
run from the environment (replays use a datastore of their own).
"""

from __future__ import annotations

import json
import sys

from repro.model.record import NO_FOREACH
from metaflow_extensions.repro.plugins import protocol


def _plain(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def inspect(pathspec: str, params: list[str]) -> dict:
    from metaflow import Run, namespace
    from metaflow.datastore import FlowDataStore
    from metaflow.plugins import DATASTORES

    namespace(None)
    run = Run(pathspec)
    flow = pathspec.split("/")[0]
    stores = {}
    out = {"successful": run.successful, "finished": run.finished,
           "created_at": run.created_at.isoformat() if run.created_at else "",
           "finished_at": run.finished_at.isoformat() if run.finished_at else "", "steps": {}, "parameters": {}}
    for step in run:
        tasks = []
        for task in step:
            md = task.metadata_dict
            ds_type, ds_root = md.get("ds-type", "local"), md.get("ds-root")
            key = (ds_type, ds_root)
            if key not in stores:
                impl = [d for d in DATASTORES if d.TYPE == ds_type][0]
                stores[key] = FlowDataStore(flow, storage_impl=impl, ds_root=ds_root)
            artifacts = {}
            if task.finished:
                tds = stores[key].get_task_datastore(run.id, step.id, task.id, allow_not_done=True)
                for name, sha in tds._objects.items():
                    info = tds._info.get(name, {})
                    artifacts[name] = {"sha1": sha, "size": int(info.get("size", 0)), "type": str(info.get("type", ""))}
            tasks.append({
                "task_id": task.id, "successful": bool(task.successful), "finished": bool(task.finished),
                "metadata": {k: v for k, v in md.items() if k.startswith(protocol.METADATA_PREFIX)},
                "ds_type": ds_type, "ds_root": ds_root, "foreach": _foreach_path(task),
                "artifacts": artifacts,
                "stderr": "" if task.successful else _tail(task),
            })
        out["steps"][step.id] = tasks
    start = run["start"].task
    for name in params:
        if start and name in start:
            out["parameters"][name] = _plain(start[name].data)
    return out


def _tail(task, limit: int = 4000) -> str:
    try:
        text = (task.stderr or "") or (task.stdout or "")
    except Exception:  # noqa: BLE001 - logs not available
        return ""
    return text[-limit:]


def _foreach_path(task) -> str:
    try:
        frames = task["_foreach_stack"].data
    except Exception:  # noqa: BLE001 - not a foreach task, or artifact missing
        return NO_FOREACH
    return ".".join(str(f.index) for f in frames) if frames else NO_FOREACH


if __name__ == "__main__":
    print(json.dumps(inspect(sys.argv[1], sys.argv[2:])))
