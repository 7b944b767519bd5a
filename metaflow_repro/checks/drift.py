"""Five kinds of drift, each a ``Finding`` kind:

* spec drift: the flow's declarations changed but the lock did not;
* resolution drift: resolving the same declarations now gives a different package set;
* runtime drift: an environment on disk no longer matches its lock;
* against drift: the lock now names other environments than a recorded run used (``--against REF``);
* input drift: a run of another flow that a recorded run's step read as "latest" is no longer the
  latest one (input lineage: ``RunRecord.inputs``), or an object a step read with ``metaflow.S3`` has
  another ETag or version now (``RunRecord.s3_inputs``).
"""

from __future__ import annotations

from metaflow_repro.adapter import lineage, s3_inputs
from metaflow_repro.env import fingerprint
from metaflow_repro.env.engine import Flow, environments, resolve, spec_drift
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.findings import Finding, Kind
from metaflow_repro.model.lock import Change, PlatformLock, diff_packages
from metaflow_repro.model.record import RunRecord


def _changes(kind: Kind, step: str, changes: list[Change], platform: str = "", env_id: str = "") -> list[Finding]:
    return [
        Finding(kind, str(c), step=step, subject=c.subject, old=c.old, new=c.new, platform=platform, env_id=env_id)
        for c in changes
    ]


def check_spec(flow: Flow, platforms: list[str] | None = None) -> list[Finding]:
    """Spec drift against the local platform plus ``platforms`` (each must be locked)."""
    wanted = list(dict.fromkeys([plats.local_platform_name(), *(platforms or [])]))
    return spec_drift(flow, wanted)


def check_resolution(flow: Flow) -> list[Finding]:
    """Re-resolve every locked step now and report what would change (old -> new)."""
    if flow.lock is None:
        return []
    out: list[Finding] = []
    seen: dict[tuple, PlatformLock] = {}
    for step, spec in flow.specs.items():
        sl = flow.lock.steps.get(step)
        if spec.disabled or sl is None or sl.spec_id != spec.spec_id:
            continue  # spec drift is reported on its own
        stated = {n for n, _ in spec.libraries}
        for pname, old in sl.platforms.items():
            key = (spec.spec_id, pname, old.python)
            if key not in seen:
                seen[key] = resolve(flow, spec, pname, old.python, previous=old)
            new = seen[key]
            if new.env_id != old.env_id:
                out += _changes(
                    Kind.RESOLUTION_DRIFT, step, diff_packages(old, new, stated), platform=pname, env_id=old.env_id
                )
    return out


def check_runtime(flow: Flow) -> list[Finding]:
    """Built environments whose files no longer match what was built (and so the lock)."""
    if flow.lock is None:
        return []
    local = plats.local_platform_name()
    envs = environments(flow.settings)
    out: list[Finding] = []
    found: dict[str, list[str]] = {}  # env id -> problems, each env fingerprinted once
    for step, sl in flow.lock.steps.items():
        pl = sl.platforms.get(local)
        if pl is None:
            continue
        if pl.env_id not in found:
            built = envs.get(pl.env_id)
            found[pl.env_id] = fingerprint.runtime_problems(built, pl) if built else []
        # every step that uses a drifted environment is named, not only the first
        out += [
            Finding(Kind.RUNTIME_DRIFT, p, step=step, env_id=pl.env_id, subject="environment") for p in found[pl.env_id]
        ]
    return out


def check_against(flow: Flow, record: RunRecord) -> list[Finding]:
    """Steps whose locked environment is not the one the recorded run used."""
    if flow.lock is None:
        return [Finding(Kind.AGAINST_DRIFT, "no lock file", subject="lock")]
    out: list[Finding] = []
    for step, s in record.steps.items():
        sl = flow.lock.steps.get(step)
        if sl is None:
            out.append(Finding(Kind.AGAINST_DRIFT, "no longer in the flow", step=step, subject="step", old=step))
            continue
        if s.disabled or sl.disabled:
            if s.disabled != sl.disabled:
                out.append(
                    Finding(
                        Kind.AGAINST_DRIFT,
                        f"disabled {s.disabled} -> {sl.disabled}",
                        step=step,
                        subject="disabled",
                        old=str(s.disabled),
                        new=str(sl.disabled),
                    )
                )
            continue
        then = record.envs.get(s.env_id)
        platform = then.platform if then else plats.local_platform_name()
        now = sl.platforms.get(platform)
        if now is None or now.env_id == s.env_id:
            continue
        changes = _changes(Kind.AGAINST_DRIFT, step, diff_packages(then, now, {n for n, _ in sl.libraries}))
        out += changes or [
            Finding(
                Kind.AGAINST_DRIFT,
                f"env {s.env_id[:12]} -> {now.env_id[:12]}",
                step=step,
                subject="environment",
                old=s.env_id,
                new=now.env_id,
            )
        ]
    return out


def check_inputs(record: RunRecord, now: dict[str, str | None]) -> list[Finding]:
    """Runs of other flows that ``record``'s steps found as "latest" and that are no longer the latest;
    ``now``: recorded ref -> the run id the same lookup gives now (None: none). One finding per reading step."""
    out: list[Finding] = []
    for ref, run in sorted(record.inputs.items()):
        if ref not in now or now[ref] == run.run_id:
            continue
        new = now[ref]
        for step in run.read_by:
            out.append(
                Finding(
                    Kind.INPUT_DRIFT,
                    f"reads {ref} -> now " + (f"/{new}" if new else f"no {run.via} of {run.flow}"),
                    step=step,
                    subject=run.flow,
                    old=run.run_id,
                    new=new or "",
                )
            )
    return out


def compare_s3_inputs(record: RunRecord, now: dict[str, tuple[str, str] | str | None]) -> list[Finding]:
    """Objects ``record``'s steps read with ``metaflow.S3`` whose ETag or version id differs now; ``now``:
    url -> (ETag, version id) as S3 has it (None: gone; a text: why it could not be asked, which the gate
    cannot vouch for either; a URL absent: not asked). One finding per reading step."""
    out: list[Finding] = []
    order = [s for s in record.step_order if s in record.s3_inputs] + sorted(
        set(record.s3_inputs) - set(record.step_order)
    )
    for step in order:
        for o in record.s3_inputs[step].objects:
            if o.url not in now:
                continue
            found = now[o.url]
            if found is None:
                message, old, new = "is gone", o.etag, ""
            elif isinstance(found, str):
                message, old, new = f"could not be checked ({found})", o.etag, ""
            else:
                change = o.changed(*found)
                if not change:
                    continue
                message = f"changed ({change})"
                old, new = (o.version, found[1]) if change.startswith("version") else (o.etag, found[0])
            out.append(Finding(Kind.INPUT_DRIFT, f"{o.url} {message}", step=step, subject=o.url, old=old, new=new))
    return out


def check_s3_inputs(record: RunRecord) -> list[Finding]:
    """Input drift of the objects ``record``'s steps read with ``metaflow.S3`` (each URL asked once, now)."""
    return compare_s3_inputs(record, s3_inputs.current(record)) if record.s3_inputs else []


def check(
    flow: Flow,
    resolution: bool = True,
    against: RunRecord | None = None,
    platforms: list[str] | None = None,
    inputs_of: RunRecord | None = None,
) -> list[Finding]:
    """Every drift of ``flow``, in the order spec, resolution, runtime, against, input (the runs of other
    flows that ``inputs_of``, a recorded run of ``flow``, read)."""
    out = check_spec(flow, platforms)
    if resolution:
        out += check_resolution(flow)
    out += check_runtime(flow)
    if against is not None:
        out += check_against(flow, against)
    if inputs_of is not None:
        out += check_inputs(inputs_of, lineage.latest_runs(inputs_of))
        out += check_s3_inputs(inputs_of)
    return out
