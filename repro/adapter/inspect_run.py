"""``python -m repro.adapter.inspect_run Flow/run_id KINDS_JSON INPUTS_DIR [LINEAGE_DIR]``: a finished run as JSON,
via Metaflow's client.

KINDS_JSON maps each parameter name to its kind (parameter, include, config); the bytes of each
``IncludeFile`` are written to ``INPUTS_DIR/<sha256>`` (content-addressed), exactly as the user's file was,
and those of every artifact of another flow's run that a step read to ``LINEAGE_DIR/<sha1>``.

Runs in its own process so that Metaflow's client picks up the datastore location of *that*
run from the environment (replays use a datastore of their own).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from metaflow_extensions.repro.plugins import protocol
from repro.model.record import NO_FOREACH


def _plain(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def inspect(pathspec: str, kinds: dict, inputs_dir: str = "", lineage_dir: str = "") -> dict[str, Any]:
    from metaflow import Run, namespace
    from metaflow.datastore import FlowDataStore
    from metaflow.plugins import DATASTORES

    namespace(None)
    run = Run(pathspec)
    flow = pathspec.split("/")[0]
    stores = {}
    versions = sorted(t.split(":", 1)[1] for t in run.system_tags if t.startswith("metaflow_version:"))
    tags = dict(t.split(":", 1) for t in run.system_tags if ":" in t)
    out: dict[str, Any] = {  # JSON: values of several types
        "metaflow_version": versions[0] if versions else "",  # the Metaflow whose runtime ran it
        "project": tags.get("project", ""),
        "project_branch": tags.get("project_branch", ""),
        "successful": run.successful,
        "finished": run.finished,
        "created_at": run.created_at.isoformat() if run.created_at else "",
        "finished_at": run.finished_at.isoformat() if run.finished_at else "",
        "steps": {},
        "parameters": {},
    }
    for step in run:
        tasks = []
        for task in step:
            md = task.metadata_dict
            ds_type, ds_root = md.get("ds-type", "local"), md.get("ds-root")
            key = (ds_type, ds_root)
            if key not in stores:
                impl = next(d for d in DATASTORES if ds_type == d.TYPE)
                stores[key] = FlowDataStore(flow, storage_impl=impl, ds_root=ds_root)
            artifacts = {}
            if task.finished:
                tds = stores[key].get_task_datastore(run.id, step.id, task.id, allow_not_done=True)
                for name, sha in tds._objects.items():
                    info = tds._info.get(name, {})
                    artifacts[name] = {"sha1": sha, "size": int(info.get("size", 0)), "type": str(info.get("type", ""))}
            tasks.append(
                {
                    "task_id": task.id,
                    "successful": bool(task.successful),
                    "finished": bool(task.finished),
                    "metadata": {k: v for k, v in md.items() if k.startswith(protocol.METADATA_PREFIX)},
                    "ds_type": ds_type,
                    "ds_root": ds_root,
                    "foreach": _foreach_path(task),
                    "artifacts": artifacts,
                    "stderr": "" if task.successful else _tail(task),
                }
            )
        out["steps"][step.id] = tasks
    if lineage_dir:
        from pathlib import Path

        from repro.checks.lineage import copy_artifacts

        every = [t for tasks in out["steps"].values() for t in tasks]
        out["input_sizes"] = copy_artifacts(every, Path(lineage_dir))
    start = run["start"].task
    out["include_files"], out["configs"] = {}, {}
    start_ds = None
    if start is not None and start.finished:  # a task that never ran (its Batch job failed first) has no datastore
        md = start.metadata_dict
        key = (md.get("ds-type", "local"), md.get("ds-root"))
        start_ds = (
            stores[key].get_task_datastore(run.id, "start", start.id, allow_not_done=True) if key in stores else None
        )
    for name, kind in kinds.items():
        if not start or name not in start:
            continue
        if kind == "include" and start_ds is not None:
            out["include_files"][name] = _included(start_ds[name], inputs_dir)
        elif kind == "config":
            value = start_ds[name] if start_ds is not None else start[name].data
            out["configs"][name] = json.dumps(_as_json(value))
        else:
            out["parameters"][name] = _plain(start[name].data)
    return out


def _as_json(value):
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value


def _included(obj, inputs_dir: str) -> dict:
    """The bytes of an IncludeFile, as the user's file had them (Metaflow keeps them gzipped)."""
    import gzip
    import hashlib
    import os

    from metaflow.includefile import UploaderV1

    descriptor = getattr(obj, "descriptor", None)
    if not isinstance(descriptor, dict) or "url" not in descriptor:
        raise SystemExit(f"IncludeFile value is not an included file: {type(obj).__name__}")
    url = descriptor["url"]
    with UploaderV1._get_handler(url)() as client:
        got = client.get(url, return_missing=True)
        if not got.exists:
            raise SystemExit(f"IncludeFile contents at {url} are missing")
        with open(got.path, "rb") as fh:
            data = fh.read()
    if descriptor.get("type") == "uploader-v1" or descriptor.get("sub-type") == "uploaded":
        data = gzip.decompress(data)
    sha = hashlib.sha256(data).hexdigest()
    os.makedirs(inputs_dir, exist_ok=True)
    target = os.path.join(inputs_dir, sha)
    if not os.path.exists(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    return {
        "sha256": sha,
        "size": len(data),
        "is_text": bool(descriptor.get("is_text", True)),
        "encoding": descriptor.get("encoding") or "utf-8",
    }


def _tail(task, limit: int = 4000) -> str:
    try:
        text = (task.stderr or "") or (task.stdout or "")
    except Exception:
        return ""
    return text[-limit:]


def _foreach_path(task) -> str:
    try:
        frames = task["_foreach_stack"].data
    except Exception:
        return NO_FOREACH
    return ".".join(str(f.index) for f in frames) if frames else NO_FOREACH


if __name__ == "__main__":
    print(json.dumps(inspect(sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:5])))
