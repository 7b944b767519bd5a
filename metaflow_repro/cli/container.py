"""The replay inside a container: ``python3 -m metaflow_repro.cli.container RESULT REF STORE EXECUTOR [RUN ARGS]``.

An edge, like the CLI: ``metaflow_repro.executors.docker`` starts it by module name in a fresh container, and
it calls the replay operation's own prepare-and-run stage there (restore the interpreter, rebuild
offline, run, record in the store), saying it ran in a container of ``EXECUTOR`` (the record's executor
as JSON: the image id, the store object of the image, the ``--image`` given; or an image id alone). Nothing is judged
here: the host compares. Logs go to standard error; the ``RunResult`` (verdict-less) is written to
the file ``RESULT`` in the container, which the host copies out once the container stopped, even when
the replay could not run (its error then)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ON_RESTORED = "--on-restored-python"
MODULE = "metaflow_repro.cli.container"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    from metaflow_repro import executors
    from metaflow_repro.errors import ReproError
    from metaflow_repro.fsutil import atomic_write
    from metaflow_repro.model import validate as v
    from metaflow_repro.model.interpreter import Executor, ExecutorKind
    from metaflow_repro.model.replay import RunResult
    from metaflow_repro.operations.replay import launcher_interpreter, load_request, run_here
    from metaflow_repro.settings import load_settings
    from metaflow_repro.store import open_store

    on_restored = argv[:1] == [ON_RESTORED]
    result_file, ref, store_uri, image, *extra = argv[1:] if on_restored else argv
    executor = Executor(ExecutorKind.DOCKER, image)
    try:
        if image.startswith("{"):
            executor = Executor.from_dict(json.loads(image), v.At("the container's executor argument"))
        settings = load_settings(Path.cwd())
        # the flow runs here, on this machine: the local place (the record says docker and the image)
        local = executors.get(ExecutorKind.LOCAL)
        request = load_request(ref, open_store(store_uri), settings, local, executor, tuple(extra))
        if not on_restored:
            python = launcher_interpreter(request, _log)
            if python:  # run the replay on the recorded launcher, as the original ran
                os.execv(python, [python, "-m", MODULE, ON_RESTORED, *argv])
        result = run_here(request, _log)
    except ReproError as exc:
        result = RunResult(executor, error=str(exc), error_code=exc.exit_code)
    Path(result_file).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(result_file), result.to_json(), mode=0o644)
    return result.error_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
