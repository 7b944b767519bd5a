"""Shared fixtures. Everything runs for real: uv against the package index, real interpreters,
real subprocesses. One REPRO_HOME per test session keeps downloads and builds shared."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def pytest_collection_modifyitems(config, items):
    """A 900 s timeout per test where pytest-timeout is installed (the test extra). Not an ini key:
    the main job (`pytest --repro scenarios/`, no test extra) would warn about an unknown option."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session", autouse=True)
def repro_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("repro-home")
    from repro.settings import SETTINGS

    # every REPRO_* setting of the developer's shell is kept out of the tests
    names = [x.env for x in SETTINGS if x.env and x.env.startswith("REPRO_")] + ["METAFLOW_USER"]
    saved = {k: os.environ.get(k) for k in names}
    for k in saved:
        os.environ.pop(k, None)
    os.environ["REPRO_HOME"] = str(home)
    os.environ["METAFLOW_USER"] = "repro-tests"
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def cli(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = 900) -> Result:
    """Run the real `repro` command line in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "repro", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def write_flow(folder: Path, body: str, name: str = "flow.py", conda_source: str | None = "pypi") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if conda_source:
        (folder / "pyproject.toml").write_text(f'[tool.repro]\nconda-source = "{conda_source}"\n')
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def installed_python(minor: str) -> Path | None:
    found = sorted(PYENV.glob(f"{minor}.*/bin/python3"))
    return found[-1] if found else None


@pytest.fixture
def flow_dir(tmp_path) -> Path:
    return tmp_path / "proj"


@dataclass
class FlowRun:
    code: int
    out: str
    err: str
    run_id: str | None
    env: dict

    @property
    def text(self) -> str:
        return self.out + self.err

    def inspect(self, flow_name: str) -> dict:
        """The run's steps, tasks, artifacts and repro metadata, read with Metaflow's client."""
        import json

        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mf_inspect.py"), f"{flow_name}/{self.run_id}"],
                              capture_output=True, text=True, env=self.env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def run_flow(path: Path, datastore: Path, environment: str = "conda", env: dict | None = None,
             args: tuple = (), timeout: float = 900) -> FlowRun:
    """`python FLOW.py --environment=<environment> run` for real, with a private local datastore."""
    datastore.mkdir(parents=True, exist_ok=True)
    run_id_file = datastore / f"run-id-{Path(path).stem}-{os.getpid()}-{len(list(datastore.iterdir()))}"
    full_env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(datastore),
                "METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DEFAULT_METADATA": "local", **(env or {})}
    cmd = [sys.executable, str(path)]
    if environment:
        cmd.append(f"--environment={environment}")
    cmd += ["run", "--run-id-file", str(run_id_file), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=datastore, timeout=timeout)
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    return FlowRun(proc.returncode, proc.stdout, proc.stderr, run_id, full_env)


# -- S3: a real HTTP endpoint (moto's server) on a free loopback port -----------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    import socket
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server as a subprocess; AWS_* variables point boto3 (and every CLI call) at it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port)
        saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                                "AWS_ENDPOINT_URL_S3")}
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"})
        yield f"http://127.0.0.1:{port}"
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


class FlakyProxy:
    """A TCP proxy to 127.0.0.1:port that breaks for good after ``limit`` bytes went upstream:
    a real network failure in the middle of a transfer, on loopback only."""

    def __init__(self, port: int, limit: int):
        import socket
        import threading

        self.target, self.limit, self.sent, self.broken = port, limit, 0, False
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.broken:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, counts):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if counts:
                    with self.lock:
                        self.sent += len(data)
                        if self.sent > self.limit:
                            self.break_all()
                            return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def break_all(self):
        self.broken = True
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.break_all()
        self.sock.close()


def make_wheel(folder: Path, name: str, version: str, requires: tuple = ()) -> Path:
    """A minimal, valid pure-Python wheel, for a package index the test controls."""
    import base64
    import hashlib
    import zipfile

    dist = name.replace("-", "_")
    files = {
        f"{dist}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}-{version}.dist-info/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\n%s\n" % (
            name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
        f"{dist}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: repro-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}-{version}.dist-info/RECORD,,")
    files[f"{dist}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return target
