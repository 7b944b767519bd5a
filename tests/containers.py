"""A Docker daemon for the tests that run containers.

A daemon is started only if none answers at ``DOCKER_HOST`` (``.ci/run`` starts one and exports
it). Ours gets its own data root, exec root, pid file and socket under a temporary folder, and no
networking of its own (``--bridge=none --iptables=false --ip-masq=false``): containers use the
host network only (``network_mode="host"``), so every connection stays on 127.0.0.1. It is
stopped when the session ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: exactly these networking flags: no bridge, no iptables rules, loopback as the host gateway
DOCKERD_NETWORK_FLAGS = ("--bridge=none", "--iptables=false", "--ip-masq=false", "--host-gateway-ip=127.0.0.1")


def answers(host: str) -> bool:
    try:
        import docker

        c = docker.DockerClient(base_url=host, timeout=10)
        try:
            return bool(c.ping())
        finally:
            c.close()
    except Exception:
        return False


@dataclass
class Daemon:
    host: str  # unix:///.../docker.sock
    proc: subprocess.Popen | None  # None: a daemon that was already running (not ours to stop)
    folder: Path | None = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.folder is not None:
            for ns in (self.folder / "exec" / "netns").glob("*"):  # the daemon's namespace mount, if it left one
                subprocess.run(["umount", str(ns)], capture_output=True)
            shutil.rmtree(self.folder, ignore_errors=True)


def dockerd_problem() -> str:
    """Why no daemon can be started here ("" if one can)."""
    if not shutil.which("dockerd") and not Path("/usr/sbin/dockerd").exists():
        return "dockerd (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "root, to start dockerd"
    return ""


def start(timeout: float = 60.0) -> Daemon:
    """The daemon at DOCKER_HOST if it answers, else a new one of ours (see the module's doc)."""
    existing = os.environ.get("DOCKER_HOST")
    if existing and answers(existing):
        return Daemon(existing, None)
    problem = dockerd_problem()
    if problem:
        raise RuntimeError(problem)
    folder = Path(tempfile.mkdtemp(prefix="repro-dockerd-", dir="/tmp"))
    sock = folder / "docker.sock"
    with open(folder / "dockerd.log", "wb") as log:  # the daemon keeps its own copy of the descriptor
        proc = _spawn(folder, sock, log)
    host = f"unix://{sock}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited ({proc.returncode}): {(folder / 'dockerd.log').read_text()[-1500:]}")
        if sock.exists() and answers(host):
            return Daemon(host, proc, folder)
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s: {(folder / 'dockerd.log').read_text()[-1500:]}")


def _spawn(folder: Path, sock: Path, log) -> subprocess.Popen:
    return subprocess.Popen(
        [
            shutil.which("dockerd") or "/usr/sbin/dockerd",
            f"--data-root={folder / 'data'}",
            f"--exec-root={folder / 'exec'}",
            f"--pidfile={folder / 'dockerd.pid'}",
            f"-H=unix://{sock}",
            *DOCKERD_NETWORK_FLAGS,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
