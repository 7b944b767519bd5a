"""Inside a task: fingerprint the environment, compare it with the one that was built, record it.

Standard library only (plus nothing): runs in the step's own interpreter, Python 3.7 to 3.13.
"""

import json
import os
import sys

from . import probe, protocol


class EnvironmentMismatch(Exception):
    """The task is not running in the environment its lock describes."""


def expected_marker():
    path = os.path.join(sys.prefix, protocol.ENV_MARKER)
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def check(step_name):
    """Return (env id, fingerprint) of this task, raising EnvironmentMismatch if it drifted."""
    env_id = os.environ.get(protocol.ENV_ID_VAR)  # the env the runtime meant this task to run in
    actual = probe.fingerprint()
    if not env_id or env_id == protocol.DISABLED:
        return env_id or "", actual
    marker = expected_marker()
    if marker is None or marker.get(protocol.MARKER_ENV_ID) != env_id:
        raise EnvironmentMismatch(
            "step '%s' should run in repro env %s, but its interpreter %s belongs to %s"
            % (
                step_name,
                env_id[:12],
                sys.executable,
                "env %s" % marker.get(protocol.MARKER_ENV_ID, "?")[:12] if marker else "no repro environment",
            )
        )
    problems = probe.compare(marker[protocol.MARKER_FINGERPRINT], actual)
    if problems:
        raise EnvironmentMismatch(
            "step '%s': the environment %s no longer matches its lock:\n  %s\n"
            "Rebuild it: `repro env build <flow> --step %s` after removing %s"
            % (step_name, env_id[:12], "\n  ".join(problems), step_name, sys.prefix)
        )
    return env_id, actual


def summary(fp):
    """The part of a fingerprint worth keeping in task metadata."""
    keep = ("digest", "python", "implementation", "build", "machine", "libc", "fingerprint_version")
    out = dict((k, fp.get(k)) for k in keep)
    out["distributions"] = dict((d["name"], d["version"]) for d in fp.get("distributions", []))
    return out
