"""Input lineage on the host: the runs of other flows that a run's steps read through Metaflow's client.

Tasks report what they read (``metaflow_extensions/repro/plugins/lineage.py``, task metadata
``protocol.META_INPUTS``); here those reports become the record's ``inputs`` (``collect``), their
artifacts' bytes are copied out of the upstream datastore (``copy_artifacts``, in the inspecting
process), a replay's own local Metaflow root is seeded with exactly those runs and artifacts
(``seed``), and the upstream flows' latest runs are looked up for input drift (``latest_runs``).

What ``seed`` writes under ``ROOT = <METAFLOW_DATASTORE_SYSROOT_LOCAL>/.metaflow`` is Metaflow's own
local layout (its local metadata provider and local datastore read it; Metaflow 2.19):

    ROOT/<Flow>/_meta/_self.json                               {"flow_id", "ts_epoch"}
    ROOT/<Flow>/<run>/_meta/_self.json                         {"run_number", "flow_id", "user_name",
                                                                "tags", "system_tags", "ts_epoch"}
    ROOT/<Flow>/<run>/<step>/_meta/_self.json                  the same + "step_name"
    ROOT/<Flow>/<run>/<step>/<task>/_meta/_self.json           the same + "task_id"
    ROOT/<Flow>/<run>/<step>/<task>/_meta/sysmeta_attempt_<ts>.json, sysmeta_attempt-done_<ts>.json
                                                               {"field_name", "type", "value": "<attempt>", ...}:
                                                               the client reads artifacts of the last done attempt
    ROOT/<Flow>/<run>/<step>/<task>/_meta/<attempt>_artifact_<name>.json
                                                               {"name", "sha", "content_type", "ds_type": "local",
                                                                "location": ":root:ROOT", "attempt_id", ...}
    ROOT/<Flow>/<run>/<step>/<task>/<attempt>.data.json        {"objects": {name: sha1}, "info": {...}}
    ROOT/<Flow>/<run>/<step>/<task>/<attempt>.DONE.lock
    ROOT/<Flow>/data/<sha1[:2]>/<sha1>                         the pickle, gzipped (Metaflow's blob format v1)
    ROOT/<Flow>/data/<sha1[:2]>/<sha1>_meta                    {"cas_raw": false, "cas_version": 1}

Only what the recorded steps read is seeded: a run, the tasks they read, the bytes of the artifacts they
read (the ``_success`` that ``latest_successful_run`` checks among them), with the recorded run ids, task
ids, tags and registration times, so ``Flow(...).latest_successful_run`` finds the recorded run again.
The tasks' other artifacts are listed (metadata only, no bytes): the client lists a task's artifacts as it
did (``Task.data``, ``"x" in task``), and reading one of them fails, as nothing recorded it was read.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.errors import InfraError, IntegrityError
from metaflow_repro.model import validate as v
from metaflow_repro.model.record import RunRecord, UpstreamRun, upstream_runs
from metaflow_repro.paths import inside

# -- from the tasks' reports to the record --------------------------------------------------------


def collect(
    tasks_by_step: dict[str, list[dict[str, Any]]], sizes: dict[str, int], where: str
) -> dict[str, UpstreamRun]:
    """The record's ``inputs`` from every task's report (``raw["steps"]`` of ``inspect_run``); ``sizes``:
    sha1 -> size of each artifact copied. A report is checked like a stored record (``where`` names it)."""
    merged: dict[str, dict[str, Any]] = {}
    for step, tasks in tasks_by_step.items():
        for task in tasks:
            for ref, entry in _task_report(task, step, where).items():
                if isinstance(entry, dict):  # anything else is left out here
                    _merge_run(merged, ref, step, entry, sizes)
    for entry in merged.values():
        for t in entry[protocol.IN_TASKS].values():  # read by one step and only listed by another: read
            t[protocol.IN_OTHERS] = {
                n: a for n, a in t[protocol.IN_OTHERS].items() if n not in t[protocol.IN_ARTIFACTS]
            }
    return upstream_runs(merged, v.At(where, "inputs"))


def _task_report(task: dict[str, Any], step: str, where: str) -> dict[str, Any]:
    """What one task reported reading: "Flow/run_id" -> entry (``{}`` when it read no other run)."""
    text = task.get("metadata", {}).get(protocol.META_INPUTS)
    if not text:
        return {}
    try:
        report = json.loads(text)
    except ValueError:
        raise InfraError(f"{where}: step {step} reported unreadable input lineage") from None
    return v.of_type(report, dict, v.At(where, f"{step}.{protocol.META_INPUTS}"))


def _chosen_more_strongly(have: Any, new: Any) -> bool:
    """Whether a step's way of choosing a run replaces the way recorded so far: ``latest_successful_run``
    always does, ``latest_run`` replaces a pathspec (a replay finds the run the way its strongest
    reader did)."""
    return new == protocol.VIA_LATEST_SUCCESSFUL or (new == protocol.VIA_LATEST and have == protocol.VIA_PATHSPEC)


def _merge_run(merged: dict[str, dict[str, Any]], ref: str, step: str, entry: dict, sizes: dict[str, int]) -> None:
    """Add one step's report of one run to ``merged``; its first report gives the run's fields."""
    entry = {k: val for k, val in entry.items() if k != protocol.IN_DATASTORE}
    into = merged.setdefault(ref, {**entry, "read_by": [], protocol.IN_TASKS: {}})
    if step not in into["read_by"]:
        into["read_by"].append(step)
    if _chosen_more_strongly(into.get(protocol.IN_VIA), entry.get(protocol.IN_VIA)):
        into[protocol.IN_VIA] = entry[protocol.IN_VIA]
    for key, t in (entry.get(protocol.IN_TASKS) or {}).items():
        have = into[protocol.IN_TASKS].setdefault(key, {**t, protocol.IN_ARTIFACTS: {}, protocol.IN_OTHERS: {}})
        for name, art in (t.get(protocol.IN_ARTIFACTS) or {}).items():
            sha1 = art.get(protocol.IN_SHA1) if isinstance(art, dict) else None
            have[protocol.IN_ARTIFACTS][name] = {**art, protocol.IN_SIZE: sizes.get(str(sha1), 0)}
        have[protocol.IN_OTHERS].update(t.get(protocol.IN_OTHERS) or {})


def copy_artifacts(tasks: list[dict[str, Any]], dest: Path) -> dict[str, int]:
    """Copy the bytes of every artifact the tasks report having read into ``dest/<sha1>`` (each verified
    against its sha1); return sha1 -> size. Runs where Metaflow's client sees the upstream runs."""
    from metaflow.datastore import FlowDataStore
    from metaflow.plugins import DATASTORES

    sizes: dict[str, int] = {}
    wanted: dict[tuple[str, str, str], set[str]] = {}
    for task in tasks:
        text = task.get("metadata", {}).get(protocol.META_INPUTS)
        for entry in (json.loads(text) if text else {}).values():
            ds = entry.get(protocol.IN_DATASTORE) or {}
            key = (entry[protocol.IN_FLOW], ds.get(protocol.IN_DS_TYPE, "local"), ds.get(protocol.IN_DS_ROOT, ""))
            for t in entry.get(protocol.IN_TASKS, {}).values():
                wanted.setdefault(key, set()).update(a[protocol.IN_SHA1] for a in t[protocol.IN_ARTIFACTS].values())
    for (flow, ds_type, ds_root), shas in sorted(wanted.items()):
        impls = [d for d in DATASTORES if ds_type == d.TYPE]
        if not impls:
            raise InfraError(f"input lineage: unknown Metaflow datastore type {ds_type!r} of {flow}")
        missing = set()
        for sha1 in shas:
            target = dest / sha1
            if target.is_file() and hashlib.sha1(target.read_bytes()).hexdigest() == sha1:
                sizes[sha1] = target.stat().st_size
            else:
                missing.add(sha1)
        if not missing:
            continue
        fds = FlowDataStore(flow, storage_impl=impls[0], ds_root=ds_root or None)
        for sha1, blob in fds.ca_store.load_blobs(sorted(missing)):
            got = hashlib.sha1(blob).hexdigest()
            if got != sha1:
                raise IntegrityError(f"input lineage: {flow} artifact {sha1} in {ds_root} has sha1 {got}")
            _write(dest / sha1, blob)
            sizes[sha1] = len(blob)
    return sizes


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- a replay's own Metaflow root, seeded with the recorded inputs -----------------------------------


def seed(record: RunRecord, blobs: dict[str, Path], sysroot: Path, user: str = "") -> list[str]:
    """Write the runs and artifacts ``record.inputs`` names under ``sysroot/.metaflow`` (the layout in
    this module's docstring); ``blobs``: sha1 -> a file of its verified pickled bytes. Returns the refs.

    ``user``: who replays. The recorded steps saw these runs in their namespace (``user:<them>``); a
    replay by someone else gets ``user:<user>`` added to each run's system tags, so its steps see them too."""
    root = Path(sysroot) / ".metaflow"
    location = f":root:{root}"
    for ref, run in sorted(record.inputs.items()):
        where = f"{record.ref}: inputs.{ref}"
        flow_dir = inside(root, run.flow, f"{where}: flow")
        run_dir = inside(flow_dir, run.run_id, f"{where}: run_id")
        base = {
            "flow_id": run.flow,
            "user_name": run.user,
            "tags": list(run.tags),
            "system_tags": sorted({*run.system_tags, *([f"user:{user}"] if user else [])}),
        }
        _json(flow_dir / "_meta" / "_self.json", {"flow_id": run.flow, "ts_epoch": run.ts_epoch}, keep=True)
        _json(run_dir / "_meta" / "_self.json", {**base, "run_number": run.run_id, "ts_epoch": run.ts_epoch})
        for key, task in sorted(run.tasks.items()):
            step, task_id = key.split("/", 1)
            step_dir = inside(run_dir, step, f"{where}: tasks.{key}")
            task_dir = inside(step_dir, task_id, f"{where}: tasks.{key}")
            names = {"run_number": run.run_id, "step_name": step}
            _json(step_dir / "_meta" / "_self.json", {**base, **names, "ts_epoch": task.ts_epoch}, keep=True)
            _json(task_dir / "_meta" / "_self.json", {**base, **names, "task_id": task_id, "ts_epoch": task.ts_epoch})
            ids = {**names, "task_id": task_id, "flow_id": run.flow, "user_name": run.user}
            for field_name in ("attempt", "attempt-done"):
                _json(
                    task_dir / "_meta" / f"sysmeta_{field_name}_{task.ts_epoch}.json",
                    {
                        **ids,
                        "field_name": field_name,
                        "type": field_name,
                        "value": str(task.attempt),
                        "tags": [f"attempt_id:{task.attempt}"],
                        "ts_epoch": task.ts_epoch,
                    },
                )
            objects, info = {}, {}
            listed = {**task.others, **task.artifacts}
            for name, art in sorted(listed.items()):
                if name in task.artifacts:  # read by the step: its bytes; the others are only listed
                    _blob(flow_dir / "data", art.sha1, blobs[art.sha1])
                objects[name] = art.sha1
                info[name] = {"size": art.size, "type": "", "encoding": art.encoding}
                _json(
                    task_dir / "_meta" / f"{task.attempt}_artifact_{name}.json",
                    {
                        **base,
                        **ids,
                        "attempt_id": task.attempt,
                        "name": name,
                        "content_type": art.encoding,
                        "type": "metaflow.artifact",
                        "sha": art.sha1,
                        "ds_type": "local",
                        "location": location,
                        "ts_epoch": task.ts_epoch,
                    },
                )
            _json(
                task_dir / f"{task.attempt}.data.json",
                {"datastore": "local", "version": "1.0", "attempt": task.attempt, "objects": objects, "info": info},
            )
            (task_dir / f"{task.attempt}.DONE.lock").touch()
        _seed_end_step(run_dir, run, base, where)
    return sorted(record.inputs)


#: the artifact Metaflow's client reads of a run's end task to tell whether the run succeeded
SUCCESS_ARTIFACT = "_success"
#: the step whose task's metadata names a run's start and end steps (Metaflow's runtime registers them)
PARAMETERS_STEP = "_parameters"


def end_step_read(run: UpstreamRun) -> str | None:
    """The end step of an upstream run, as its reader's client found it: the one step whose task's
    ``_success`` was read (``latest_successful_run``, ``run.successful``); None when no step's was, or
    several steps' were."""
    steps = {key.split("/", 1)[0] for key, task in run.tasks.items() if SUCCESS_ARTIFACT in task.artifacts}
    return steps.pop() if len(steps) == 1 else None


def _seed_end_step(run_dir: Path, run: UpstreamRun, base: dict, where: str) -> None:
    """Name the run's end step where Metaflow's client looks for it (``Run._graph_endpoints``: the
    ``end_step`` metadata of the run's ``_parameters`` task), so a run whose end step has another name
    (``@step(end=True)``) is found successful again; without it the client takes the step named end."""
    end = end_step_read(run)
    if end is None:
        return
    inside(run_dir, end, f"{where}: end step")
    task_dir = run_dir / PARAMETERS_STEP / "1"
    names = {"run_number": run.run_id, "step_name": PARAMETERS_STEP}
    _json(task_dir.parent / "_meta" / "_self.json", {**base, **names, "ts_epoch": run.ts_epoch}, keep=True)
    _json(task_dir / "_meta" / "_self.json", {**base, **names, "task_id": "1", "ts_epoch": run.ts_epoch})
    field = {**names, "task_id": "1", "flow_id": run.flow, "user_name": run.user, "tags": []}
    _json(
        task_dir / "_meta" / f"sysmeta_end_step_{run.ts_epoch}.json",
        {**field, "field_name": "end_step", "value": end, "type": "graph_structure", "ts_epoch": run.ts_epoch},
    )


def _json(path: Path, doc: dict, keep: bool = False) -> None:
    if keep and path.is_file():
        return
    _write(path, json.dumps(doc, sort_keys=True).encode())


def _blob(data_dir: Path, sha1: str, source: Path) -> None:
    target = data_dir / sha1[:2] / sha1
    if target.is_file():
        return
    raw = source.read_bytes()
    if hashlib.sha1(raw).hexdigest() != sha1:  # fetched verified; checked again right before use
        raise IntegrityError(f"input artifact {source} does not match its sha1 {sha1}; it was not used")
    _write(target, gzip.compress(raw, compresslevel=3))
    _write(target.with_name(f"{sha1}_meta"), json.dumps({"cas_raw": False, "cas_version": 1}).encode())


# -- what is latest now (input drift) ----------------------------------------------------------------


def latest_runs(record: RunRecord) -> dict[str, str | None]:
    """For each run of ``record.inputs`` found as "latest": the run id the same lookup gives now, in the
    user's Metaflow (its default metadata and namespace, as a step would see it); None: no such run now.
    Keyed by the recorded ref."""
    from metaflow_repro.model.record import InputVia

    wanted = {ref: r for ref, r in record.inputs.items() if r.via is not InputVia.PATHSPEC}
    if not wanted:
        return {}
    from metaflow import Flow
    from metaflow.exception import MetaflowNotFound

    out: dict[str, str | None] = {}
    for ref, run in sorted(wanted.items()):
        try:
            flow = Flow(run.flow)
            now = flow.latest_successful_run if run.via is InputVia.LATEST_SUCCESSFUL else flow.latest_run
        except MetaflowNotFound:
            now = None
        except Exception as exc:
            raise InfraError(f"input drift: cannot ask Metaflow for the latest run of {run.flow}: {exc}") from None
        out[ref] = now.id if now is not None else None
    return out
