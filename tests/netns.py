"""Run a command with no network (a new network namespace, `unshare -n`), optionally with one
bridge: 127.0.0.1:PORT inside the namespace reaches 127.0.0.1:PORT outside (the test's S3 server)
through a Unix socket, which the namespace cannot see as a network. Nothing else is reachable:
no package index, no internet, no other local port.

    python tests/netns.py SOCKET PORT -- CMD ...   (run inside the namespace by ``offline``)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def can_unshare() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "-n", "true"]).returncode == 0


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve(listener: socket.socket, connect) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = connect()
        except OSError:
            conn.close()
            continue
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def offline(cmd: list[str], env: dict, cwd: Path, port: int | None = None, timeout: float = 900):
    """Run ``cmd`` in a new network namespace; with ``port``, bridge 127.0.0.1:port into it."""
    with tempfile.TemporaryDirectory(prefix="repro-netns-") as tmp:
        sock_path = os.path.join(tmp, "bridge.sock")
        listener = None
        if port is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(sock_path)
            listener.listen(64)
            threading.Thread(
                target=_serve, args=(listener, lambda: socket.create_connection(("127.0.0.1", port))), daemon=True
            ).start()
        try:
            return subprocess.run(
                ["unshare", "-n", sys.executable, __file__, sock_path, str(port or 0), "--", *cmd],
                capture_output=True,
                text=True,
                env=env,
                cwd=cwd,
                timeout=timeout,
            )
        finally:
            if listener is not None:
                listener.close()


def _inside(sock_path: str, port: int, cmd: list[str]) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if port:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)

        def connect():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock_path)
            return s

        threading.Thread(target=_serve, args=(listener, connect), daemon=True).start()
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    cut = sys.argv.index("--")
    sys.exit(_inside(sys.argv[1], int(sys.argv[2]), sys.argv[cut + 1 :]))
