"""`repro replay REF --from-step S` (issue 25 item 4): replay a recorded run from step S on, reusing the
recorded tasks before S through Metaflow's `resume`.

The replay is laid out as any local replay (``replay.prepare``). The recorded run's tasks are then
copied from the recorded datastore (a local one, still there) into the replay's own datastore: the
run's folder and the artifact blobs of every task. Nothing of the replay is written where
the original ran. Metaflow resumes that run from S, cloning the tasks before it; the replay is then
judged as any replay, and the cloned tasks' artifacts are compared with the record like the others,
so a recorded datastore changed since is caught, not trusted. When the recorded datastore cannot
serve (not local, gone, a blob missing, a symbolic link in it), the run replays whole and says why."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

from metaflow_repro import executors
from metaflow_repro.adapter.metaflow import split_top_level
from metaflow_repro.errors import BadInput
from metaflow_repro.model.record import RunRecord
from metaflow_repro.model.replay import RunResult
from metaflow_repro.operations.replay import (
    ReplayResult,
    _NotRunnable,
    execute,
    judge,
    leave_workdirs,
    load_request,
    prepare,
)
from metaflow_repro.operations.run import Log
from metaflow_repro.paths import inside
from metaflow_repro.settings import Settings
from metaflow_repro.store import open_store


def replay_from_step(
    ref_text: str, store_uri: str | None, settings: Settings, step: str, log: Log = print, keep: bool = False
) -> ReplayResult:
    """Replay ``ref_text`` here, re-running ``step`` and every step after it."""
    place = executors.for_place("local")
    store = open_store(store_uri or settings.store)
    request = load_request(ref_text, store, settings, place, place.executor())
    original = request.original
    order = list(original.step_order or original.steps)
    if step not in order:
        raise BadInput(
            f"--from-step {step}: {original.ref} has no step {step} (its steps: {', '.join(order)})",
            flow=original.flow,
        )
    workdirs: list[Path] = []
    result = None
    try:
        try:
            plan = prepare(request, log, workdirs)
        except _NotRunnable as exc:
            result = judge(request, RunResult(request.executor, workdir=str(exc.workdir), failure=exc.failure), log)
            return result
        why = "it is the first step" if step == order[0] else seed(original, plan.workdir)
        if why:
            log(f"replaying {original.ref} whole, not from {step}: {why}")
            run = execute(plan, log)
        else:
            log(
                f"replaying {original.ref} from {step}: the tasks of {', '.join(order[: order.index(step)])} are reused"
            )
            top, _ = split_top_level(list(plan.args.recorded))  # `resume` takes the origin's parameters
            plan = replace(plan, args=replace(plan.args, recorded=tuple(top)))
            run = execute(plan, log, resume=(original.run_id, step))
        result = judge(request, run, log)
        return result
    finally:
        leave_workdirs(workdirs, result, keep, log)


def seed(original: RunRecord, workdir: Path) -> str:
    """Copy the recorded run (its folder, and every task's artifact blobs) from the recorded local
    datastore into the replay's (``workdir/.metaflow``); why it cannot ("" when it did)."""
    kind, root = original.datastore.get("type"), original.datastore.get("root")
    if kind != "local" or not root:
        return f"its datastore is {kind or 'unknown'}, not a local folder this replay can read"
    try:
        source = inside(Path(root), f"{original.flow}/{original.run_id}", f"{original.ref}: its run folder")
        blobs = [
            inside(Path(root), f"{original.flow}/data/{a.sha1[:2]}/{a.sha1}", f"{original.ref}: artifact {name}")
            for step in original.steps.values()  # Metaflow's resume reads some of every origin task's
            for task in step.tasks.values()
            for name, a in task.artifacts.items()
        ]
    except BadInput as exc:  # a record whose names lead out of the datastore (paths.OutsideRoot)
        return str(exc)
    if not source.is_dir():
        return f"the recorded datastore no longer holds it ({source} is gone)"
    missing = [b for b in blobs if not b.is_file()]
    if missing:
        return f"the recorded datastore lacks {len(missing)} of its artifact blobs (e.g. {missing[0]})"
    links = [
        os.path.join(d, n)
        for d, dirs, files in os.walk(source)
        for n in dirs + files
        if os.path.islink(os.path.join(d, n))
    ]
    if links:
        return f"its run folder holds a symbolic link ({links[0]}), which this replay does not follow"
    target = workdir / ".metaflow" / original.flow
    shutil.copytree(source, target / original.run_id)
    _rehome(target / original.run_id, workdir / ".metaflow")
    for blob in blobs:
        dest = target / "data" / blob.parent.name / blob.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob, dest)
    return ""


def _rehome(run: Path, root: Path) -> None:
    """Point the copied tasks' ``ds-root`` metadata at the replay's datastore: a task `resume` clones
    inherits its origin's metadata, and the run is read back from where that says."""
    for path in run.glob("*/*/_meta/sysmeta_ds-root_*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # left as it is: the read-back of the replay then fails and says so
        if isinstance(doc, dict) and doc.get("field_name") == "ds-root":
            path.write_text(json.dumps({**doc, "value": str(root)}))
