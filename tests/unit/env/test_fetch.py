"""metaflow_repro.env.fetch: transport into the package cache (URLs with retries, file:// copies, sdist rebuilds
through a hook), the cache alone deciding what enters."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from metaflow_repro.env import fetch
from metaflow_repro.env.cache import PackageCache
from metaflow_repro.errors import InfraError, IntegrityError, LockFileError, OfflineMissing
from metaflow_repro.model.lock import Built, Package

BODY = b"the wheel's bytes\n" * 100


def package(url: str, data: bytes = BODY, file: str = "pkg-1.0-py3-none-any.whl") -> Package:
    return Package("pkg", "1.0", "pypi", file, url, hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture
def index():
    """A local HTTP server answering each GET of a path with the next of ``answers[path]`` (a status, or
    bytes for a 200; the last answer repeats). ``hits[path]``: how often it was asked."""
    answers: dict[str, list] = {}
    hits: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] = hits.get(self.path, 0) + 1
            queue = answers.get(self.path, [404])
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(answer, tuple):  # ("cut", body): the full length announced, half of it sent
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer[1])))
                self.end_headers()
                self.wfile.write(answer[1][: len(answer[1]) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif isinstance(answer, bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            else:
                self.send_error(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    server.answers, server.hits = answers, hits  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF_SECONDS", 0.0)


def test_a_download_is_admitted_verified(tmp_path, index):
    index.answers["/pkg.whl"] = [BODY]
    cache = PackageCache(tmp_path / "cache")
    pkg = package(f"{index.url}/pkg.whl")
    path = fetch.Fetcher(cache).fetch(pkg, "here")
    assert path == cache.path(pkg) and path.read_bytes() == BODY and cache.verify(pkg)


def test_a_failure_that_may_pass_is_tried_again_and_the_retry_starts_afresh(tmp_path, index):
    index.answers["/pkg.whl"] = [("cut", BODY), 503, BODY]  # half a body first: the retry must not append
    cache = PackageCache(tmp_path / "cache")
    pkg = package(f"{index.url}/pkg.whl")
    assert fetch.Fetcher(cache).fetch(pkg, "here").read_bytes() == BODY
    assert index.hits["/pkg.whl"] == 3


def test_a_failure_that_persists_is_an_infrastructure_error_after_every_attempt(tmp_path, index):
    index.answers["/pkg.whl"] = [503]
    cache = PackageCache(tmp_path / "cache")
    pkg = package(f"{index.url}/pkg.whl")
    with pytest.raises(InfraError, match=r"here: cannot download pkg-1.0-py3-none-any.whl .*tried 3 times.*503"):
        fetch.Fetcher(cache).fetch(pkg, "here")
    assert index.hits["/pkg.whl"] == fetch.ATTEMPTS
    assert not cache.has(pkg) and not list((tmp_path / "cache").rglob(".partial-*"))


def test_a_missing_file_is_not_asked_for_again(tmp_path, index):
    cache = PackageCache(tmp_path / "cache")
    with pytest.raises(InfraError, match="404"):
        fetch.Fetcher(cache).fetch(package(f"{index.url}/gone.whl"), "here")
    assert index.hits["/gone.whl"] == 1


def test_bytes_that_are_not_the_locked_ones_never_enter_the_cache(tmp_path, index):
    index.answers["/pkg.whl"] = [b"tampered"]
    cache = PackageCache(tmp_path / "cache")
    pkg = package(f"{index.url}/pkg.whl")
    with pytest.raises(IntegrityError, match="does not match the lock"):
        fetch.Fetcher(cache).fetch(pkg, "here")
    assert not cache.has(pkg)


def test_a_lock_that_names_no_url_is_a_lock_error(tmp_path):
    with pytest.raises(LockFileError, match="which is not a URL") as caught:
        fetch.Fetcher(PackageCache(tmp_path / "cache")).fetch(package("nowhere"), "here")
    assert caught.value.library == "pkg"


def test_a_file_url_is_copied_in_and_checked(tmp_path):
    src = tmp_path / "src.whl"
    src.write_bytes(BODY)
    cache = PackageCache(tmp_path / "cache")
    pkg = package(src.as_uri())
    assert fetch.Fetcher(cache).fetch(pkg, "here").read_bytes() == BODY
    gone = package((tmp_path / "gone.whl").as_uri(), file="gone-1.0-py3-none-any.whl")
    with pytest.raises(InfraError, match="cannot read gone-1.0-py3-none-any.whl"):
        fetch.Fetcher(cache).fetch(gone, "here")


def test_a_wheel_built_from_its_sdist_is_made_by_the_hook_or_named(tmp_path):
    cache = PackageCache(tmp_path / "cache")
    sdist = package("https://example.invalid/pkg-1.0.tar.gz", file="pkg-1.0.tar.gz")
    built = Package(
        "pkg", "1.0", "pypi", "pkg-1.0-py3-none-any.whl", sdist.url, "a" * 64, 10, built=Built("3.11", sdist, ())
    )
    with pytest.raises(InfraError, match="built from its sdist"):
        fetch.Fetcher(cache).fetch(built, "here")
    asked: list[tuple[Package, str]] = []

    def rebuild(pkg: Package, where: str) -> Path:
        asked.append((pkg, where))
        return cache.path(pkg)

    assert fetch.Fetcher(cache, rebuild).fetch(built, "here") == cache.path(built)
    assert asked == [(built, "here")]


def test_ensure_offline_names_what_is_missing_and_fetches_nothing(tmp_path, index):
    index.answers["/pkg.whl"] = [BODY]
    cache = PackageCache(tmp_path / "cache")
    pkg = package(f"{index.url}/pkg.whl")
    with pytest.raises(OfflineMissing, match="pkg-1.0-py3-none-any.whl"):
        fetch.Fetcher(cache).ensure([pkg], offline=True, where="here")
    assert "/pkg.whl" not in index.hits
    assert fetch.Fetcher(cache).ensure([pkg, pkg], where="here") == {pkg.sha256: cache.path(pkg)}
    assert index.hits["/pkg.whl"] == 1


def test_only_failures_that_may_pass_are_tried_again():
    import ssl
    import urllib.error

    def http(code: int) -> urllib.error.HTTPError:
        return urllib.error.HTTPError("https://x", code, "", {}, None)  # type: ignore[arg-type]

    assert all(fetch._passing(http(code)) for code in (500, 502, 503, 408, 429))
    assert not any(fetch._passing(http(code)) for code in (400, 401, 403, 404))
    assert fetch._passing(urllib.error.URLError(ConnectionResetError()))
    assert fetch._passing(TimeoutError())
    assert not fetch._passing(urllib.error.URLError(ssl.SSLCertVerificationError("self-signed certificate")))
    assert not fetch._passing(PermissionError())
