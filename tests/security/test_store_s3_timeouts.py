"""Issue 22 item 7: a store command against an S3 endpoint that accepts connections and never answers
ends after ``attempts`` × the read timeout plus a short backoff (not 8 minutes: 120 s × 4), and each
failed attempt says on stderr that it is retried. The endpoint is a local TCP server on 127.0.0.1 that
accepts and never answers; the limits are turned down to 1 s."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from metaflow_repro.errors import BadInput
from metaflow_repro.store.s3 import ATTEMPTS_VAR, CONNECT_TIMEOUT_VAR, READ_TIMEOUT_VAR, Limits
from tests.helpers import cli


class SilentServer:
    """Accepts every connection on 127.0.0.1 and never sends a byte; counts the connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()
        self.thread.join(timeout=5)


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def _env(port: int, attempts: int = 3) -> dict:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        READ_TIMEOUT_VAR: "1",
        CONNECT_TIMEOUT_VAR: "1",
        ATTEMPTS_VAR: str(attempts),
    }


@pytest.mark.parametrize("command", [("store", "ls"), ("store", "verify")])
def test_a_silent_endpoint_costs_attempts_times_the_read_timeout_and_says_it_retries(silent, command):
    start = time.monotonic()
    r = cli(*command, "--store", "s3://bucket/team", env=_env(silent.port), timeout=120)
    elapsed = time.monotonic() - start
    assert r.code == 3 and "Traceback" not in r.text, r.text
    retries = [line for line in r.err.splitlines() if "retrying in" in line]
    assert len(retries) == 2, r.err  # attempts 1 and 2 are retried; the 3rd fails the command
    assert "attempt 1 of 3" in retries[0] and "attempt 2 of 3" in retries[1] and "Timeout" in retries[0], r.err
    assert len(silent.accepted) == 3  # one connection per attempt, no hidden retries below ours
    assert "tried 3 time(s)" in r.err.splitlines()[-1], r.err
    # 3 × 1 s read timeout + 0.5 s + 1 s backoff, plus the interpreter's start (boto3's import)
    assert 4.5 <= elapsed < 20, elapsed
    print(f"{' '.join(command)} against a silent endpoint: {elapsed:.1f} s, {len(silent.accepted)} connections")


def test_one_attempt_means_no_retry(silent):
    r = cli("store", "ls", "--store", "s3://bucket/team", env=_env(silent.port, attempts=1), timeout=120)
    assert r.code == 3 and "retrying" not in r.err and len(silent.accepted) == 1, r.text


def test_the_defaults_are_sized_for_a_command_line():
    limits = Limits.from_environ({})
    assert (limits.connect_timeout, limits.read_timeout, limits.attempts) == (10, 60, 3)


@pytest.mark.parametrize("var,value", [(READ_TIMEOUT_VAR, "soon"), (ATTEMPTS_VAR, "0"), (CONNECT_TIMEOUT_VAR, "-1")])
def test_a_bad_limit_is_bad_input(var, value):
    with pytest.raises(BadInput, match=var):
        Limits.from_environ({var: value})
    r = cli("store", "ls", "--store", "s3://bucket/team", env={var: value})
    assert r.code == 2 and var in r.err and "Traceback" not in r.text, r.text
