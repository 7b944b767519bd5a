"""adapter/procgroup: a command's whole process tree dies with repro, even when repro is killed with SIGKILL;
Ctrl-C reaches it; a command that ends is left alone. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from metaflow_repro.adapter import procgroup

#: a repro stand-in: runs a shell that starts two sleeping children and writes their pids to a file
RUNNER = textwrap.dedent(
    """
    import os, sys
    from metaflow_repro.adapter import procgroup
    pids = sys.argv[1]
    procgroup.run(["sh", "-c", f"sleep 60 & echo $! >> {pids}; sleep 60 & echo $! >> {pids}; wait"], env=dict(os.environ))
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_runner(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    pids = tmp_path / "pids"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(pids)], start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = pids.read_text().split() if pids.exists() else []
        if len(found) == 2:
            return runner, [int(p) for p in found]
        time.sleep(0.02)
    raise AssertionError("the command did not start")


def _gone(pids: list[int], within: float) -> bool:
    """Whether ``pids`` end within ``within`` seconds; those still alive then are killed (no leftovers)."""
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return not left


def test_the_command_tree_dies_when_repro_is_killed_with_sigkill(tmp_path):
    runner, children = _start_runner(tmp_path)
    assert all(_alive(p) for p in children)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=10)
    assert _gone(children, within=procgroup.GRACE), "the command's processes outlived repro"


def test_ctrl_c_reaches_the_command_in_its_own_group(tmp_path):
    runner, children = _start_runner(tmp_path)
    os.killpg(runner.pid, signal.SIGINT)  # the terminal's Ctrl-C: to repro's group, not the command's
    runner.wait(timeout=30)
    assert _gone(children, within=procgroup.GRACE)


def test_a_command_that_ends_gives_its_code_and_output_and_is_left_alone(tmp_path):
    done = procgroup.run(["sh", "-c", "echo out; echo err >&2; exit 3"], env=dict(os.environ), capture=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    # a process the command left running in its group is not stopped once the command has ended
    pid_file = tmp_path / "pid"
    procgroup.run(["sh", "-c", f"sleep 30 >/dev/null 2>&1 & echo $! > {pid_file}"], env=dict(os.environ))
    left = int(pid_file.read_text())
    time.sleep(0.5)
    assert _alive(left)
    os.kill(left, signal.SIGKILL)
