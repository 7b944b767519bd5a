"""Three kinds of drift, each named in what it reports:

* spec drift: the flow's declarations changed but the lock did not;
* resolution drift: resolving the same declarations now gives a different package set;
* runtime drift: an environment on disk no longer matches its lock.

Plus drift against a recorded run (``--against REF``): the lock now names other environments
than the run used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from repro.env import fingerprint
from repro.model import platforms as plats
from repro.env.engine import Flow, environments, spec_drift
from repro.model.lock import diff_packages
from repro.model.record import RunRecord
from repro.env import pypi


@dataclass
class Drift:
    spec: list[str] = field(default_factory=list)
    resolution: list[str] = field(default_factory=list)
    runtime: list[str] = field(default_factory=list)
    against: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.spec or self.resolution or self.runtime or self.against)

    def lines(self) -> list[str]:
        out = []
        for kind in ("spec", "resolution", "runtime", "against"):
            out += [f"{kind} drift: {line}" for line in getattr(self, kind)]
        return out

    def as_dict(self) -> dict:
        return {"spec": self.spec, "resolution": self.resolution, "runtime": self.runtime, "against": self.against}


def check_spec(flow: Flow) -> list[str]:
    return [(f"{d.step}: {line}" if d.step != "*" else line)
            for d in spec_drift(flow, [plats.local_platform_name()]) for line in d.lines]


def check_resolution(flow: Flow) -> list[str]:
    """Re-resolve every locked step now and report what would change (old -> new)."""
    if flow.lock is None:
        return []
    out, seen = [], {}
    for step, spec in flow.specs.items():
        sl = flow.lock.steps.get(step)
        if spec.disabled or sl is None or sl.spec_id != spec.spec_id:
            continue  # spec drift is reported on its own
        stated = {n for n, _ in spec.libraries}
        for pname, old in sl.platforms.items():
            key = (spec.spec_id, pname, old.python)
            if key not in seen:
                seen[key] = pypi.resolve(spec, pname, old.python, flow.settings)
            new = seen[key]
            if new.env_id != old.env_id:
                out += [f"{step} ({pname}): {line}" for line in diff_packages(old, new, stated)]
    return out


def check_runtime(flow: Flow) -> list[str]:
    """Built environments whose files no longer match what was built (and so the lock)."""
    if flow.lock is None:
        return []
    local = plats.local_platform_name()
    envs = environments(flow.settings)
    out, found = [], {}  # env id -> problems, each env fingerprinted once
    for step, sl in flow.lock.steps.items():
        pl = sl.platforms.get(local)
        if pl is None:
            continue
        if pl.env_id not in found:
            built = envs.get(pl.env_id)
            found[pl.env_id] = fingerprint.runtime_problems(built, pl) if built else []
        # every step that uses a drifted environment is named, not only the first
        out += [f"{step} (env {pl.env_id[:12]}): {p}" for p in found[pl.env_id]]
    return out


def check_against(flow: Flow, record: RunRecord) -> list[str]:
    """Steps whose locked environment is not the one the recorded run used."""
    if flow.lock is None:
        return ["no lock file"]
    out = []
    for step, s in record.steps.items():
        sl = flow.lock.steps.get(step)
        if sl is None:
            out.append(f"{step}: no longer in the flow")
            continue
        if s.disabled or sl.disabled:
            if s.disabled != sl.disabled:
                out.append(f"{step}: disabled {s.disabled} -> {sl.disabled}")
            continue
        then = record.envs.get(s.env_id)
        platform = then.platform if then else plats.local_platform_name()
        now = sl.platforms.get(platform)
        if now is None or now.env_id == s.env_id:
            continue
        lines = diff_packages(then, now, {n for n, _ in sl.libraries})
        out += [f"{step}: {line}" for line in lines] or [f"{step}: env {s.env_id[:12]} -> {now.env_id[:12]}"]
    return out


def check(flow: Flow, resolution: bool = True, against: RunRecord | None = None) -> Drift:
    drift = Drift(spec=check_spec(flow), runtime=check_runtime(flow))
    if resolution:
        drift.resolution = check_resolution(flow)
    if against is not None:
        drift.against = check_against(flow, against)
    return drift
