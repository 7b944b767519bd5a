"""``python -m metaflow_repro.adapter.inspect_run Flow/run_id KINDS_JSON INPUTS_DIR [LINEAGE_DIR]``: a finished run as JSON,
via Metaflow's client (a ``metaflow_repro.model.inspection.RunInspection``, which the host decodes and checks).

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
from metaflow_repro.model.inspection import IncludedFile, InspectedArtifact, InspectedTask, RunInspection
from metaflow_repro.model.outcomes import CATCH_ARTIFACT
from metaflow_repro.model.record import CAUGHT_MESSAGE_MAX, NO_FOREACH, Caught


def _plain(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


class _Stores:
    """One Metaflow datastore per (type, root) the run's tasks name, opened on first use."""

    def __init__(self, flow: str):
        self.flow = flow
        self.opened: dict[tuple[str, Any], Any] = {}

    def get(self, ds_type: str, ds_root):
        from metaflow.datastore import FlowDataStore
        from metaflow.plugins import DATASTORES

        key = (ds_type, ds_root)
        if key not in self.opened:
            impl = next(d for d in DATASTORES if ds_type == d.TYPE)
            self.opened[key] = FlowDataStore(self.flow, storage_impl=impl, ds_root=ds_root)
        return self.opened[key]


def inspect(pathspec: str, kinds: dict, inputs_dir: str = "", lineage_dir: str = "") -> RunInspection:
    from metaflow import Run, namespace

    namespace(None)
    run = Run(pathspec)
    stores = _Stores(pathspec.split("/")[0])
    versions = sorted(t.split(":", 1)[1] for t in run.system_tags if t.startswith("metaflow_version:"))
    tags = dict(t.split(":", 1) for t in run.system_tags if ":" in t)
    # read before the steps, as Metaflow's client had them when asked
    successful, finished = bool(run.successful), bool(run.finished)
    created_at = run.created_at.isoformat() if run.created_at else ""
    finished_at = run.finished_at.isoformat() if run.finished_at else ""
    steps = {step.id: tuple(_task(run, step, task, stores) for task in step) for step in run}
    input_sizes = _copy_lineage(steps, lineage_dir) if lineage_dir else {}
    parameters, include_files, configs = _start_values(run, kinds, stores, inputs_dir)
    return RunInspection(
        metaflow_version=versions[0] if versions else "",  # the Metaflow whose runtime ran it
        project=tags.get("project", ""),
        project_branch=tags.get("project_branch", ""),
        steps=steps,
        parameters=parameters,
        include_files=include_files,
        configs=configs,
        input_sizes=input_sizes,
        successful=successful,
        finished=finished,
        created_at=created_at,
        finished_at=finished_at,
    )


#: the run a resumed run's task was cloned from (Metaflow's "origin-run-id" of a task that has an "origin-task-id":
#: every task has the first, only a clone the second), read back under repro's prefix
CLONED_FROM = protocol.METADATA_PREFIX + "cloned-from"


def _task(run, step, task, stores: _Stores) -> InspectedTask:
    md = task.metadata_dict
    ds_type, ds_root = md.get("ds-type", "local"), md.get("ds-root")
    store = stores.get(ds_type, ds_root)
    artifacts = {}
    if task.finished:
        tds = store.get_task_datastore(run.id, step.id, task.id, allow_not_done=True)
        for name, sha in tds._objects.items():
            info = tds._info.get(name, {})
            artifacts[name] = InspectedArtifact(sha1=sha, size=int(info.get("size", 0)), type=str(info.get("type", "")))
    caught = _caught(task, artifacts)
    # a task whose exception @catch handled is a successful one to Metaflow (``_task_ok``; the run goes
    # on), though its ``_success`` is false: its outcome is "caught", not failed
    successful = bool(task.successful) or caught is not None
    return InspectedTask(
        task_id=task.id,
        successful=successful,
        finished=bool(task.finished),
        metadata={
            **{k: v for k, v in md.items() if k.startswith(protocol.METADATA_PREFIX)},
            # a task Metaflow's `resume` cloned from an earlier run: it ran that run's code package
            **({CLONED_FROM: str(md.get("origin-run-id"))} if md.get("origin-task-id") else {}),
        },
        ds_type=ds_type,
        ds_root=ds_root,
        foreach=_foreach_path(task),
        artifacts=artifacts,
        stderr="" if successful else _tail(task),
        caught=caught,
    )


def _caught(task, artifacts: dict[str, InspectedArtifact]) -> Caught | None:
    """The exception @catch handled in ``task`` (a finished task whose step raised), or None. Its
    ``var`` is the artifact holding the very same pickle as Metaflow's own ``_catch_exception``."""
    found = artifacts.get(CATCH_ARTIFACT)
    if found is None or not task.finished or task.successful:
        return None
    try:
        wrapper = task[CATCH_ARTIFACT].data  # a MetaflowExceptionWrapper: strings only
    except Exception:
        return None
    var = sorted(n for n, a in artifacts.items() if a.sha1 == found.sha1 and n != CATCH_ARTIFACT)
    return Caught(
        type=_type_name(str(getattr(wrapper, "type", ""))),
        message=str(getattr(wrapper, "exception", ""))[:CAUGHT_MESSAGE_MAX],
        var=var[0] if var else "",
    )


def _type_name(text: str) -> str:
    """An exception's class as dotted Python names (what the record accepts), whatever the wrapper held."""
    import re

    parts = [re.sub(r"\W", "_", p, flags=re.ASCII) for p in text.split(".") if p][:30]
    parts = [p if not p[0].isdigit() else "_" + p for p in parts]
    return ".".join(parts) or "builtins.Exception"


def _copy_lineage(steps: dict[str, tuple[InspectedTask, ...]], lineage_dir: str) -> dict[str, int]:
    """Copy the artifacts of other flows' runs the tasks read (their sha1 -> size)."""
    from pathlib import Path

    from metaflow_repro.adapter.lineage import copy_artifacts

    return copy_artifacts([t.to_dict() for tasks in steps.values() for t in tasks], Path(lineage_dir))


def _start_values(
    run, kinds: dict, stores: _Stores, inputs_dir: str
) -> tuple[dict[str, Any], dict[str, IncludedFile], dict[str, str]]:
    """(parameters, included files, configs), read from the start task."""
    step = _start_step(run)
    start = run[step].task
    parameters: dict[str, Any] = {}
    include_files: dict[str, IncludedFile] = {}
    configs: dict[str, str] = {}
    start_ds = _start_datastore(run, step, start, stores)
    for name, kind in kinds.items():
        if not start or name not in start:
            continue
        if kind == "include" and start_ds is not None:
            include_files[name] = _included(start_ds[name], inputs_dir)
        elif kind == "config":
            value = start_ds[name] if start_ds is not None else start[name].data
            configs[name] = json.dumps(_as_json(value))
        else:
            parameters[name] = _plain(start[name].data)
    return parameters, include_files, configs


def _start_datastore(run, step: str, start, stores: _Stores):
    """The start task's datastore; None when it never ran (its Batch job failed first) or its datastore
    is none the run's tasks named."""
    if start is None or not start.finished:
        return None
    md = start.metadata_dict
    key = (md.get("ds-type", "local"), md.get("ds-root"))
    if key not in stores.opened:
        return None
    return stores.opened[key].get_task_datastore(run.id, step, start.id, allow_not_done=True)


def _start_step(run) -> str:
    """The run's start step, as Metaflow's client names it (``@step(start=True)``, else by name): the
    ``start_step`` its runtime registered on the run's ``_parameters`` task. A Metaflow older than custom
    endpoints (before 2.19) has no ``_graph_endpoints``: its start step is the one Metaflow names by default."""
    endpoints = getattr(run, "_graph_endpoints", None)
    return str(endpoints[0]) if endpoints else _DEFAULT_START


#: the start step's name in a Metaflow that knows no ``@step(start=True)``
_DEFAULT_START = "start"


def _as_json(value):
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value


def _included(obj, inputs_dir: str) -> IncludedFile:
    """The bytes of an IncludeFile, as the user's file had them (Metaflow keeps them gzipped)."""
    import hashlib
    import os

    from metaflow.includefile import UploaderV1

    from metaflow_repro.adapter.codepackage import gunzip
    from metaflow_repro.errors import BadInput
    from metaflow_repro.settings import env_setting

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
        try:
            data = gunzip(data, env_setting("archive_max_bytes"), f"IncludeFile contents at {url}")
        except BadInput as exc:
            raise SystemExit(str(exc)) from None
    sha = hashlib.sha256(data).hexdigest()
    os.makedirs(inputs_dir, exist_ok=True)
    target = os.path.join(inputs_dir, sha)
    if not os.path.exists(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    return IncludedFile(
        sha256=sha,
        size=len(data),
        is_text=bool(descriptor.get("is_text", True)),
        encoding=descriptor.get("encoding") or "utf-8",
    )


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
    print(inspect(sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:5]).to_json())
