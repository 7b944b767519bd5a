"""Helpers the tests import (fixtures live in conftest.py). Everything runs for real: the `repro`
command line in a subprocess, real interpreters, real Metaflow runs, real sockets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"

# -- prerequisites: skip with the reason here, fail under CI=true (see conftest.py) -------------

MISSING = "missing prerequisite: "


def require(ok, what: str):
    """Skip the test, naming ``what`` is missing, unless ``ok`` is truthy; returns ``ok``.

    Every test that needs something the machine may lack (a pyenv interpreter, `unshare`,
    Chromium) goes through here: conftest.py turns these skips into failures when CI=true."""
    if not ok:
        pytest.skip(MISSING + what)
    return ok


def require_python(minor: str) -> Path:
    """The newest pyenv interpreter for ``minor`` (e.g. "3.10"), or skip/fail naming it."""
    return require(installed_python(minor), f"Python {minor} (no {PYENV}/{minor}.*/bin/python3)")


def require_locked_pythons(lock_file: Path) -> None:
    """Every exact Python a committed lock names (e.g. "3.9.18") must be installed (pyenv or the
    running interpreter), or the test skips/fails naming it instead of failing half-way."""
    import re

    running = "%d.%d.%d" % sys.version_info[:3]
    for version in sorted(set(re.findall(r'^python = "(\d+\.\d+\.\d+)"$', lock_file.read_text(), re.M))):
        require(
            version == running or (PYENV / version / "bin" / "python3").exists(),
            f"Python {version} (named by {lock_file.name}; no {PYENV}/{version}/bin/python3)",
        )


def require_netns() -> None:
    ok = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    require(ok, "`unshare -n` (cannot create a network namespace here)")


def require_chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    return require(browser, "chromium (headless browser for the HTML report; CI installs it)")


def screenshot(page: Path, shot: Path, profile: Path):
    """``page`` (a file) as headless Chromium draws it in a 1400x900 window, written to ``shot`` and
    returned as an RGB image (PIL). Skipped (failed under CI) without Chromium."""
    from PIL import Image

    browser = require_chromium()
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1400,900",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    return Image.open(shot).convert("RGB")


def same_file(a, b) -> bool:
    """Interpreter paths compare as files, not strings: `.venv/bin/python` started relatively,
    through a symlink or as an absolute path is one interpreter."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
    proc = subprocess.run(
        [sys.executable, "-m", "metaflow_repro", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )
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

        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "mf_inspect.py"), f"{flow_name}/{self.run_id}"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def run_flow(
    path: Path,
    datastore: Path,
    environment: str = "conda",
    env: dict | None = None,
    args: tuple = (),
    timeout: float = 900,
) -> FlowRun:
    """`python FLOW.py --environment=<environment> run` for real, with a private local datastore."""
    datastore.mkdir(parents=True, exist_ok=True)
    run_id_file = datastore / f"run-id-{Path(path).stem}-{os.getpid()}-{len(list(datastore.iterdir()))}"
    full_env = {
        **os.environ,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(datastore),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
        **(env or {}),
    }
    cmd = [sys.executable, str(path)]
    if environment:
        cmd.append(f"--environment={environment}")
    cmd += ["run", "--run-id-file", str(run_id_file), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=datastore, timeout=timeout)
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    return FlowRun(proc.returncode, proc.stdout, proc.stderr, run_id, full_env)


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
        """Shut every connection down, then close it: a bare close() from this thread leaves a pump
        thread's recv() holding the socket open, so the client would only see the break at its read
        timeout (60 s) instead of at once, as on a real dropped connection."""
        import socket

        self.broken = True
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def close(self):
        self.break_all()
        self.sock.close()


def make_wheel(folder: Path, name: str, version: str, requires: tuple = (), body: str = "") -> Path:
    """A minimal, valid pure-Python wheel, for a package index the test controls. ``body`` is
    more source for the package's ``__init__.py`` (e.g. a picklable class)."""
    import base64
    import hashlib
    import zipfile

    dist = name.replace("-", "_")
    files = {
        f"{dist}/__init__.py": f"__version__ = {version!r}\n" + textwrap.dedent(body),
        f"{dist}-{version}.dist-info/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\n%s\n"
        % (name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
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


def env_paths(build_output: str) -> dict:
    """{step: env path} from `repro env build` output."""
    out = {}
    for line in build_output.splitlines():
        if " env " in line and " at " in line:
            step = line.split(":")[0].split(".")[-1]
            out[step] = Path(line.rsplit(" at ", 1)[1])
    return out


SHA = "a" * 64


def pkg(name, version, sha=SHA):
    from metaflow_repro.model.lock import Package

    return Package(
        name,
        version,
        "pypi",
        f"{name}-{version}-py3-none-any.whl",
        f"https://example.invalid/{name}-{version}-py3-none-any.whl",
        sha,
        123,
    )


def sample_lock(numpy="1.26.4"):
    from metaflow_repro.model.lock import Lock, PlatformLock, StepLock

    pl = PlatformLock("linux-64", "3.11.7", (pkg("requests", "2.32.3"), pkg("numpy", numpy, "b" * 64)))
    step = StepLock(
        "start", "conda", "pypi", "3.11", (("numpy", numpy),), (("requests", "2.32.3"),), (), False, {"linux-64": pl}
    )
    off = StepLock("c", "conda", "none", "3.11", (), (), (), True, {})
    return Lock("MyFlow", "flow.py", {"start": step, "c": off})


def make_record(run_id="1", tasks=None, env="e" * 64, flow="F", status="success", checks=(), envs=None, inputs=None):
    """A RunRecord built by hand. ``tasks``: {step: {task key: {artifact: (sha1, size, type)}}}."""
    from metaflow_repro.model.record import ArtifactRecord, RunRecord, StepRecord, TaskRecord

    tasks = {"start": {"-": {"x": ("1" * 40, 1, "int")}}, "end": {"-": {}}} if tasks is None else tasks
    steps = {}
    for step, by_key in tasks.items():
        steps[step] = StepRecord(
            spec_id="s",
            env_id=env,
            disabled=False,
            tasks={
                key: TaskRecord(
                    task_id=str(i + 1),
                    env_id=env,
                    fingerprint=f"fp-{step}-{key}",
                    interpreter="",
                    artifacts={n: ArtifactRecord(sha1=a[0], size=a[1], type=a[2]) for n, a in arts.items()},
                )
                for i, (key, arts) in enumerate(by_key.items())
            },
        )
    from metaflow_repro.model.lock import PlatformLock
    from metaflow_repro.model.record import RunStatus

    envs = {
        k: v if isinstance(v, PlatformLock) else PlatformLock.from_dict(v, "test record", env_id=k)
        for k, v in (envs or {}).items()
    }
    return RunRecord(
        flow=flow,
        run_id=run_id,
        flow_file="f.py",
        code_sha256="c" * 64,
        lock_sha256="l" * 64,
        parameters={},
        pythonhashseed="0",
        metaflow_version="2.19",
        repro_version="0",
        host={},
        datastore={},
        steps=steps,
        envs=envs,
        status=RunStatus(status),
        pickle_checks=tuple(checks),
        step_order=tuple(steps),
        inputs=dict(inputs or {}),
    )


def make_tls_ca(folder: Path) -> dict:
    """A throw-away certificate authority and a server certificate it signed for 127.0.0.1 /
    localhost, as PEM files: {"ca", "cert", "key"} (what a TLS-intercepting proxy presents)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "repro tests intercepting CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class TlsIndex:
    """A package index over HTTPS on 127.0.0.1 (PEP 691 JSON simple API, with sha256 and size)
    serving the wheels of ``folder``, with a certificate from ``make_tls_ca``: what uv and the
    downloader see behind a TLS-intercepting proxy. ``url`` is its ``/simple/`` root."""

    def __init__(self, folder: Path, tls: dict):
        import hashlib
        import http.server
        import json
        import re
        import ssl
        import threading

        files = {p.name: p for p in Path(folder).iterdir() if p.suffix == ".whl"}
        by_project: dict = {}
        for name in files:
            project = re.sub(r"[-_.]+", "-", name.split("-")[0]).lower()
            by_project.setdefault(project, []).append(name)
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.do_GET(body_too=False)

            def do_GET(self, body_too=True):
                outer.requests.append(self.path)
                parts = [p for p in self.path.split("/") if p]
                if len(parts) == 2 and parts[0] == "simple" and parts[1] in by_project:
                    body = json.dumps(
                        {
                            "meta": {"api-version": "1.1"},
                            "name": parts[1],
                            "files": [
                                {
                                    "filename": n,
                                    "url": f"/files/{n}",
                                    "hashes": {"sha256": hashlib.sha256(files[n].read_bytes()).hexdigest()},
                                    "size": files[n].stat().st_size,
                                }
                                for n in sorted(by_project[parts[1]])
                            ],
                            "versions": sorted({n.split("-")[1] for n in by_project[parts[1]]}),
                        }
                    ).encode()
                    kind = "application/vnd.pypi.simple.v1+json"
                elif len(parts) == 2 and parts[0] == "files" and parts[1] in files:
                    body, kind = files[parts[1]].read_bytes(), "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body_too:
                    self.wfile.write(body)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls["cert"]), str(tls["key"]))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/simple/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
