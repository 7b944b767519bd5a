"""What repro's Metaflow extension asks of repro, on the host, before any task starts."""

from __future__ import annotations

import atexit
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol
from metaflow_repro.adapter.flowfolder import check_flow_folder
from metaflow_repro.env.cache import ready_home
from metaflow_repro.env.engine import Log, build_flow, flow_from_class
from metaflow_repro.settings import load_settings


def prepare(
    flow_cls, flow_file: str, s3_datastore: bool, log: Log, batch_steps: tuple[str, ...] = ()
) -> tuple[dict, dict]:
    """Lock (or reuse the committed lock) and build every step's environment.

    Returns ({step: {protocol.STEP_PYTHON, STEP_ENV_ID, STEP_SPEC_ID} or None
    if disabled}, {protocol.PATH_HOME: REPRO_HOME, where code packages are kept and extracted}).
    ``REPRO_FROZEN=1`` turns a stale lock into an error instead of a re-lock (for CI);
    ``REPRO_OFFLINE=1`` (replays) builds from the package cache only.
    ``batch_steps`` (steps that run as AWS Batch jobs): their environments are staged in the run's
    S3 store first (metaflow_repro.executors.batch), and their dicts name the bootstrap manifest too.
    """
    path = Path(flow_file)
    settings = load_settings(path)
    ready_home(settings)  # a file or read-only REPRO_HOME: one clear message, not uv's or a traceback
    check_flow_folder(path, settings.home.root)  # Metaflow packages the flow's folder right after this
    flow = flow_from_class(flow_cls, path, settings, s3_datastore=s3_datastore)
    built = build_flow(flow, frozen=settings.frozen or settings.offline, offline=settings.offline, log=log)
    out: dict[str, dict[str, str] | None] = {}
    for step, env in built.items():
        if env is None:
            out[step] = None
            continue
        out[step] = {
            protocol.STEP_PYTHON: str(env.python),
            protocol.STEP_ENV_ID: env.env_id,
            protocol.STEP_SPEC_ID: flow.specs[step].spec_id,
        }
    if batch_steps:
        from metaflow_repro.executors.batch import stage

        assert flow.lock is not None, "build_flow built from the flow's lock"
        lock = flow.lock
        envs = {s: e for s, e in built.items() if s in batch_steps}
        locks = {e.env_id: lock.steps[s].platforms[e.platform] for s, e in envs.items() if e is not None}
        staged, lease = stage(flow.name, envs, locks, settings, log)
        # held while this process (Metaflow's runtime) runs the jobs, which fetch what it names; released
        # when it exits, the run over (succeeded or failed); a runtime that is killed lets it expire
        atexit.register(lease.release)
        for step, env in envs.items():
            entry = out[step]
            if env is not None and entry is not None:
                entry[protocol.STEP_BOOTSTRAP_STORE] = staged[env.env_id].store
                entry[protocol.STEP_BOOTSTRAP_MANIFEST] = staged[env.env_id].manifest_sha256
                entry[protocol.STEP_BATCH_CACHE] = "" if settings.batch_cache == "off" else settings.batch_cache
    return out, {protocol.PATH_HOME: str(settings.home.root)}
