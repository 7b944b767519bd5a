"""The Batch job's bootstrap commands (CondaEnvironment.bootstrap_commands): the task's variables reach the
job intact, and the command stays far below AWS Batch's limit."""

from __future__ import annotations

import hashlib


def test_task_variables_reach_a_batch_job_intact_through_metaflows_quoting(monkeypatch):
    """bootstrap_commands export the task's repro variables into the job; REPRO_STEP_PYTHONS is JSON
    (quotes, spaces), which Metaflow's `bash -c "..."` wrapping (shlex) must not break."""
    import json
    import shlex
    import subprocess
    from types import SimpleNamespace

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins import protocol
    from metaflow_extensions.repro.plugins.environment import CondaEnvironment

    pythons = {"start": "/x/envs/a b/bin/python", "end": "/x/envs/c/bin/python", "q": 'it\'s "quoted" $HOME'}
    for name in protocol.TASK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(protocol.STEP_PYTHONS_VAR, json.dumps(pythons, sort_keys=True))
    monkeypatch.setenv(protocol.STEP_PYTHON_VAR, "/x/envs/c/bin/python")
    cmds = CondaEnvironment.bootstrap_commands(SimpleNamespace(), "start", "s3")
    script = " && ".join([*cmds, f"printenv {protocol.STEP_PYTHONS_VAR}"])
    argv = shlex.split('bash -c "%s"' % script)  # as Metaflow's batch.py builds the job's command
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == pythons


def _job_variables(monkeypatch, steps: int) -> None:
    """What the runtime exports to a Batch job's command for a flow of ``steps`` steps, each with an
    env of its own at a long (but ordinary) path, and the bootstrap's store and manifest."""
    import json

    from metaflow_extensions.repro.plugins import protocol

    for name in protocol.TASK_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    pythons = {
        f"train_model_{i:02d}": f"/home/someone/.local/share/repro/envs/{i:064x}/bin/python" for i in range(steps)
    }
    monkeypatch.setenv(protocol.STEP_PYTHONS_VAR, json.dumps(pythons, sort_keys=True))
    monkeypatch.setenv(protocol.STEP_PYTHON_VAR, next(iter(pythons.values())))
    monkeypatch.setenv(protocol.ENV_ID_VAR, "e" * 64)
    monkeypatch.setenv(protocol.SPEC_ID_VAR, "5" * 64)
    monkeypatch.setenv(protocol.CODE_SHA_VAR, "c" * 64)
    monkeypatch.setenv(protocol.PYTHONHASHSEED_VAR, "0")
    monkeypatch.setenv(protocol.PYTHONNOUSERSITE_VAR, "1")
    monkeypatch.setenv(protocol.PYTHONDONTWRITEBYTECODE_VAR, "1")
    monkeypatch.setenv(protocol.BOOTSTRAP_STORE_VAR, "s3://some-company-ml-artifacts-bucket/teams/research/repro-store")
    monkeypatch.setenv(protocol.BOOTSTRAP_MANIFEST_VAR, "a" * 64)


def test_a_batch_jobs_bootstrap_command_stays_far_below_aws_batchs_limit(monkeypatch):
    """AWS Batch refuses container overrides over 8192 characters (Metaflow issues #977, #1482; moto
    does not check), and Metaflow's own part of the command (code package download, the step's
    arguments) needs ~2-3 KB: ours stays under 3 KB for a flow of 30 steps, each with an env of its
    own (it was ~22 KB when batch_bootstrap.py was inline). Only the small fetcher is inline (zlib'd),
    batch_bootstrap.py is a store object named by its sha256."""
    import base64
    import re
    import zlib
    from types import SimpleNamespace

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins import batch_bootstrap, batch_fetch
    from metaflow_extensions.repro.plugins.environment import CondaEnvironment
    from metaflow_repro.store.layout import bootstrap_script as script_key

    _job_variables(monkeypatch, steps=30)
    cmds = CondaEnvironment.bootstrap_commands(SimpleNamespace(), "start", "s3")
    command = " && ".join(cmds)
    assert len(command) < 3072, len(command)
    # what it runs: batch_fetch.py, told the store, the key and sha256 of this very batch_bootstrap.py
    m = re.search(r"echo (\S+) \| base64 -d \| python3 -c '[^']+' (\S+) (\S+) (\S+) (\S+)$", cmds[-1])
    assert m, cmds[-1]
    with open(batch_fetch.__file__, "rb") as fh:
        assert zlib.decompress(base64.b64decode(m.group(1))) == fh.read()
    with open(batch_bootstrap.__file__, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    assert m.group(2, 3, 4, 5) == (
        "s3://some-company-ml-artifacts-bucket/teams/research/repro-store",
        script_key(sha),
        sha,
        "a" * 64,
    )


def test_preparing_environments_says_what_repro_did_not_metaflows_bootstrapping_line():
    """Issue 26 item 8: the runtime prints how many environments repro built and reused (nothing alarming
    when all are reused), never Metaflow's "Bootstrapping conda environment...(this could take a few minutes)"."""
    import inspect

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins import environment, protocol
    from metaflow_repro.env import engine

    envs = {
        "start": {protocol.STEP_ENV_ID: "a" * 64},
        "mid": {protocol.STEP_ENV_ID: "a" * 64},
        "b": {protocol.STEP_ENV_ID: "b" * 64},
        "off": None,
    }
    assert environment.ready_line(envs, 0, "flow.py") == (
        "repro: 4 step(s), 2 environment(s) reused as flow.repro.lock locks them"
    )
    assert environment.ready_line(envs, 1, "flow.py") == (
        "repro: 4 step(s), 1 environment(s) built and 1 reused as flow.repro.lock locks them"
    )
    said = []
    progress = environment._Progress(said.append)
    progress("resolving F.start for linux-64 (Python 3.11.7): six==1.16.0")
    progress(f"{environment.BUILDING}{'a' * 12} for F.start (Python 3.11.7, 1 packages)")
    assert progress.built == 1 and len(said) == 2  # every message passed on, the builds counted
    # the engine's line for a build is the one counted
    assert f'f"{environment.BUILDING}{{pl.env_id[:12]}}' in inspect.getsource(engine.build_flow)
    assert 'echo("Bootstrapping' not in inspect.getsource(environment.CondaEnvironment.init_environment)
