"""A flow and a `repro run` of it in a subprocess, read line by line, for the tests of issue 22 that
stop repro at a phase found in its output (test_lost_runs, test_leaks)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import cli, write_flow

FLOW = """
    import os, time
    from metaflow import FlowSpec, pypi, step


    class Slow:  # unpickling it sleeps LOST_UNPICKLE_SLEEP seconds (as the task had it): a slow pickle check

        def __reduce__(self):
            return (time.sleep, (float(os.environ.get("LOST_UNPICKLE_SLEEP", "0")),))


    class LostFlow(FlowSpec):
        @pypi(packages={"six": "1.16.0"})
        @step
        def start(self):
            self.answer = 41 + 1
            self.slow = Slow()
            print("STEP-RUNNING", flush=True)
            time.sleep(float(os.environ.get("LOST_SLEEP", "0")))
            self.next(self.end)

        @step
        def end(self):
            open(os.environ["LOST_SENTINEL"], "w").write("the end step ran")


    if __name__ == "__main__":
        LostFlow()
"""


class Run:
    """One `repro run` of LostFlow in a subprocess, read line by line."""

    def __init__(self, tmp_path: Path, sleep: float = 0.0, unpickle_sleep: float = 0.0):
        self.proj = tmp_path / "proj"
        self.flow = write_flow(self.proj, FLOW, name="lost.py")
        self.store = tmp_path / "store"
        self.sentinel = tmp_path / "sentinel"
        self.env = {
            **os.environ,
            "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path / "mf"),
            "METAFLOW_DEFAULT_DATASTORE": "local",
            "METAFLOW_DEFAULT_METADATA": "local",
            "LOST_SENTINEL": str(self.sentinel),
            "LOST_SLEEP": str(sleep),
            "LOST_UNPICKLE_SLEEP": str(unpickle_sleep),
        }
        self.output: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self, session: bool = False) -> Run:
        """``session``: in a process group of its own, which ``interrupt`` signals as a terminal's Ctrl-C would."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "metaflow_repro", "run", str(self.flow), "--store", self.store.as_uri()],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=self.proj,
            start_new_session=session,
        )
        return self

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to repro and every process of its group (its probes)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.finish()

    def until(self, pattern: str) -> re.Match:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no {pattern!r} in the output:\n" + self.text)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self) -> int:
        assert self.proc is not None
        out, _ = self.proc.communicate(timeout=900)
        self.output.append(out)
        return self.proc.returncode

    @property
    def text(self) -> str:
        return "".join(self.output)[-4000:]

    def recover(self):
        return cli("recover", env=self.env, cwd=self.proj)

    def records(self) -> list[Path]:
        return list(self.store.glob("runs/*/*/record.json"))
