"""Inside a task: note every run of another flow that the step reads through Metaflow's client.

``watch()`` (from the step decorator's ``task_pre_step``) wraps three places of ``metaflow.client``:
objects made from a pathspec (``Run("F/1742")``, ``Task(...)``), ``DataArtifact.data`` (every
``.data.x``, ``task["x"].data``, and the ``_success`` that ``latest_successful_run`` reads), and
``Flow.latest_successful_run`` / ``Flow.latest_run`` (a run found as "latest" can drift). ``report()``
(from ``task_post_step``) describes what was read as ``protocol.META_INPUTS``.

Standard library only (plus Metaflow's client, which every task has), Python 3.7 syntax.
"""

import json

from . import protocol


class Watch(object):
    def __init__(self, flow_name, run_id):
        self.flow_name = flow_name
        self.run_id = str(run_id)
        self.runs = {}  # "Flow/run_id" -> the run's entry (protocol's shape)
        self.ds = {}  # "Flow/run_id" -> {type, root}
        self.active = True

    def _foreign(self, components):
        return len(components) >= 2 and not (components[0] == self.flow_name and str(components[1]) == self.run_id)

    def _run(self, flow, run_id):
        key = "%s/%s" % (flow, run_id)
        if key not in self.runs:
            self.runs[key] = {
                protocol.IN_FLOW: flow,
                protocol.IN_RUN_ID: str(run_id),
                protocol.IN_VIA: protocol.VIA_PATHSPEC,
                protocol.IN_TASKS: {},
            }
        return self.runs[key]

    def _task(self, components):
        run = self._run(components[0], components[1])
        key = "%s/%s" % (components[2], components[3])
        return run[protocol.IN_TASKS].setdefault(key, {protocol.IN_ATTEMPT: 0, protocol.IN_ARTIFACTS: {}})

    def saw_object(self, obj):
        components = list(getattr(obj, "path_components", None) or [])
        if not self.active or not self._foreign(components):
            return
        self._run(components[0], components[1])
        if len(components) >= 4:
            self._task(components)

    def saw_artifact(self, artifact):
        components = list(getattr(artifact, "path_components", None) or [])
        if not self.active or len(components) != 5 or not self._foreign(components):
            return
        obj = artifact._object
        task = self._task(components)
        task[protocol.IN_ATTEMPT] = int(obj.get("attempt_id") or 0)
        task[protocol.IN_ARTIFACTS][components[4]] = {
            protocol.IN_SHA1: obj["sha"],
            protocol.IN_SIZE: 0,
            protocol.IN_ENCODING: obj.get("content_type") or "pickle-v4",
        }
        location = obj.get("location") or ""
        self.ds["%s/%s" % (components[0], components[1])] = {
            protocol.IN_DS_TYPE: obj.get("ds_type") or "local",
            protocol.IN_DS_ROOT: location[6:] if location.startswith(":root:") else location,
        }

    def saw_latest(self, run, via):
        components = list(getattr(run, "path_components", None) or [])
        if not self.active or not self._foreign(components):
            return
        entry = self._run(components[0], components[1])
        if entry[protocol.IN_VIA] != protocol.VIA_LATEST_SUCCESSFUL:  # the strongest claim wins
            entry[protocol.IN_VIA] = via

    def report(self):
        """The runs read, as JSON (protocol.META_INPUTS); "" when the step read none."""
        if not self.runs:
            return ""
        from metaflow.client.core import Run, Task

        self.active = False  # what we look up now is not what the step read
        for key, entry in sorted(self.runs.items()):
            try:
                obj = Run(key, _namespace_check=False)._object
            except Exception:
                obj = {}
            entry[protocol.IN_TS_EPOCH] = int(obj.get("ts_epoch") or 0)
            entry[protocol.IN_USER] = str(obj.get("user_name") or "")
            entry[protocol.IN_TAGS] = sorted(obj.get("tags") or [])
            entry[protocol.IN_SYSTEM_TAGS] = sorted(obj.get("system_tags") or [])
            for task_key, task in entry[protocol.IN_TASKS].items():
                others = {}
                try:
                    found = Task("%s/%s" % (key, task_key), attempt=task[protocol.IN_ATTEMPT], _namespace_check=False)
                    tobj = found._object
                    for art in found:  # every artifact the client lists for the task (none is read)
                        if art.id not in task[protocol.IN_ARTIFACTS]:
                            others[art.id] = {
                                protocol.IN_SHA1: art._object["sha"],
                                protocol.IN_SIZE: 0,
                                protocol.IN_ENCODING: art._object.get("content_type") or "pickle-v4",
                            }
                except Exception:
                    tobj = {}
                task[protocol.IN_TS_EPOCH] = int(tobj.get("ts_epoch") or 0)
                task[protocol.IN_OTHERS] = others
            if key in self.ds:
                entry[protocol.IN_DATASTORE] = self.ds[key]
        return json.dumps(self.runs, sort_keys=True)


_watch = None


def watch(flow_name, run_id):
    """Start noting what this task reads of other runs (once per task process)."""
    global _watch
    if _watch is not None:
        return _watch
    _watch = Watch(flow_name, run_id)
    from metaflow.client import core

    current = _watch
    init = core.MetaflowObject.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if (args and args[0] is not None) or kwargs.get("pathspec") is not None:  # named by the user
            current.saw_object(self)

    core.MetaflowObject.__init__ = __init__

    data = core.DataArtifact.data

    def artifact_data(self):
        value = data.fget(self)
        current.saw_artifact(self)
        return value

    core.DataArtifact.data = property(artifact_data, doc=data.__doc__)

    for name, via in (
        ("latest_successful_run", protocol.VIA_LATEST_SUCCESSFUL),
        ("latest_run", protocol.VIA_LATEST),
    ):
        original = getattr(core.Flow, name)

        def latest(self, _original=original, _via=via):
            run = _original.fget(self)
            if run is not None:
                current.saw_latest(run, _via)
            return run

        setattr(core.Flow, name, property(latest, doc=original.__doc__))
    return _watch


def report():
    return _watch.report() if _watch is not None else ""
