"""The replay inside the container: ``python3 -m repro.executors.docker_entry REF STORE IMAGE_ID [RUN ARGS]``.

An ordinary replay (restore the interpreter, rebuild offline, run, record in the store) that says it
ran in a container of ``IMAGE_ID``. Logs go to standard error; the last line of standard output is
the result for the host (``replay.RESULT_MARK`` + JSON)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ON_RESTORED = "--on-restored-python"


def _launcher(ref: str, store_uri: str, log) -> str:
    """The interpreter that ran the original's Metaflow runtime (and so decides a flow's default Python),
    restored from the store's snapshot: the path to re-run this replay with ("" if no snapshot names it).
    The record's package files are pulled meanwhile (the replay then finds them verified in REPRO_HOME)."""
    from repro.operations.replay import pull_and_restore
    from repro.settings import load_settings
    from repro.store import open_store
    from repro.store.snapshot import load_record, parse_ref

    settings = load_settings(Path.cwd())
    store = open_store(store_uri)
    record = load_record(store, parse_ref(ref))
    version = record.host.get("python", "")
    if version not in record.interpreters:
        return ""
    _, interpreters = pull_and_restore(record, store, settings, log, also=(version,))
    return interpreters[version].path


def main(argv: list[str]) -> int:
    from repro.errors import ReproError
    from repro.executors.docker import RESULT_MARK
    from repro.model.interpreter import Executor, ExecutorKind
    from repro.operations.replay import replay
    from repro.settings import load_settings

    on_restored = argv[:1] == [ON_RESTORED]
    ref, store, image_id, *extra = argv[1:] if on_restored else argv

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        if not on_restored:
            python = _launcher(ref, store, log)
            if python:  # run the replay on the recorded launcher, as the original ran
                os.execv(python, [python, "-m", "repro.executors.docker_entry", ON_RESTORED, *argv])
        result = replay(
            ref,
            store,
            load_settings(Path.cwd()),
            log=log,
            extra_args=tuple(extra),
            executor=Executor(ExecutorKind.DOCKER, image_id),
        )
    except ReproError as exc:
        print(RESULT_MARK + json.dumps({"error": str(exc), "exit_code": exc.exit_code}), flush=True)
        return exc.exit_code
    recorded = result.recorded.split("/runs/", 1)[1] if "/runs/" in result.recorded else ""
    doc = {
        "verdict": result.verdict.value,
        "exit_code": result.exit_code,
        "recorded": f"runs/{recorded}" if recorded else "",
        "error": result.failure.error if result.failure else "",
        "failure": result.failure.__dict__ if result.failure else None,
    }
    print(RESULT_MARK + json.dumps(doc), flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
